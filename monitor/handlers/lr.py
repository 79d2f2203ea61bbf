"""LearningRates: the learning rates the optimizer last stepped with, whatever order handlers run in."""
from __future__ import annotations

from typing import Any

import torch
from ignite.engine import Engine

from monitor.runtime.engines import StepRates, step_rates

__all__ = ["LearningRates", "learning_rates"]


class LearningRates:
    """The learning rate of each parameter group at the optimizer's last ``step()``.

    Read at validation time, ``optimizer.param_groups`` is one epoch off when a scheduler is stepped
    by a handler that runs before the validation (e.g. one on ``EPOCH_COMPLETED`` attached before
    monitoring): it already holds the next epoch's rate. An optimizer step pre-hook sees the rate
    each step really used. It costs a list of a few floats per step, no device sync. Given the
    ``trainer``, one :func:`~monitor.build_trainer` made to read them in its step
    (``monitor.runtime.engines.step_rates``), they are taken from there, with no hook.

    Examples:
        .. code-block:: python

            rates = LearningRates(optimizer)
            rates.values()      # {"lr": 0.01} ("lr_1", "lr_2"... for more groups)
            rates.remove()      # detach the hook
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, trainer: Engine | None = None) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Argument optimizer should be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        self.optimizer = optimizer
        self._stepped: list[Any] | None = None  # rates at the last step; None before the first one
        self._in_step: StepRates | None = None if trainer is None else step_rates(trainer, optimizer)
        self._handle = None
        if self._in_step is None:
            self._handle = optimizer.register_step_pre_hook(self._on_step)
        else:
            self._in_step.wanted += 1  # (a count: another monitor of the same trainer may read them too)
            if self._in_step.wanted == 1:
                self._in_step.rates = None  # (a trainer run again: not its last run's)

    def _on_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # A list display and subscripts, the interpreter's own paths: list(map(itemgetter("lr"), ...)),
        # whose C code is out of the caches after the step's own work, cost about 4 us more a step.
        groups = optimizer.param_groups
        self._stepped = [groups[0]["lr"]] if len(groups) == 1 else [group["lr"] for group in groups]

    def values(self) -> dict[str, float]:
        """``{"lr": ...}`` for the first group, ``lr_1``, ``lr_2`` ... for the others: the rates of the last
        step (before any step: the current ones)."""
        stepped = self._stepped if self._in_step is None else self._in_step.rates
        rates = stepped if stepped is not None else [g["lr"] for g in self.optimizer.param_groups]
        return {("lr" if i == 0 else f"lr_{i}"): float(rate) for i, rate in enumerate(rates)}

    def remove(self) -> None:
        """Detach the hook from the optimizer, or stop the trainer's reads (idempotent; the last rates kept)."""
        if self._in_step is not None:
            self._in_step.wanted -= 1
            self._stepped, self._in_step = self._in_step.rates, None
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def learning_rates(source: torch.optim.Optimizer | LearningRates | None) -> dict[str, float]:
    """The rates of ``source``: a :class:`LearningRates` (the last step's), an optimizer (its current
    ones) or ``None`` (none)."""
    if source is None:
        return {}
    if isinstance(source, LearningRates):
        return source.values()
    return {("lr" if i == 0 else f"lr_{i}"): float(g["lr"]) for i, g in enumerate(source.param_groups)}

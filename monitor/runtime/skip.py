"""SkipStep: a training step whose loss is non-finite or far above the last ones is not applied.

metaseq's answer to a loss spike (OPT-175B's logbook): leave the optimizer step out, as a
``GradScaler`` leaves out a step whose gradients overflowed, and go on with the next batch. Where
:class:`~monitor.Recovery` goes back to a good state after the harm is done, this keeps the harm
from being done, one step at a time.

The rule is Recovery's: a non-finite loss, or a loss above ``factor`` times the highest of the last
``window`` applied steps (a fine-tuned start's hard batches reach 100x the median step, and stay
within a few times the highest). It costs one host read of the loss per step (a GPU waits for the
forward pass there, as a GradScaler's own check does), and under ``idist`` one all-reduce per step
so that every rank skips the same steps (else the replicas drift apart). The skipped share of each
epoch's steps is the ``train_skipped`` column.

Examples:
    .. code-block:: python

        trainer = build_trainer(model, optimizer, loss_fn, skip_step=SkipStep(factor=10))

        # your own step: ask before the optimizer step, and report it in the output
        skip = SkipStep()
        def step(engine, batch):
            ...
            loss = loss_fn(model(x), y)
            loss.backward()
            skipped = skip.judge(loss)
            if not skipped:
                optimizer.step()
            return {"loss": loss.detach(), "skipped": float(skipped)}
"""
from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ignite.distributed as idist
import torch
from ignite.base.mixins import Serializable

from monitor.core._checks import number_in, positive_int

__all__ = ["SkipStep"]

MIN_WINDOW = 20  # steps seen before a spike can be judged (a non-finite loss is judged from the first)


def window_size(value: Any) -> int:
    """``value`` if it is a number of steps a spike can be judged over (>= ``MIN_WINDOW``), else raise."""
    positive_int("window", value)
    if value < MIN_WINDOW:
        raise ValueError(f"Argument window should be at least {MIN_WINDOW} steps, got {value!r}.")
    return int(value)


def highest(losses: Sequence[float]) -> float | None:
    """The highest of the recent steps' losses, what a spike is judged against: ``None`` while there
    are too few of them (or it is not above 0)."""
    top = max(losses) if len(losses) >= MIN_WINDOW else None
    return top if top is not None and top > 0 else None


def trouble(loss: float, ceiling: float | None, factor: float) -> str | None:
    """What is wrong with a step's ``loss``: ``"nonfinite_loss"``, ``"loss_spike"`` (above ``factor``
    times ``ceiling``, the :func:`highest` of the recent steps), or ``None``. SkipStep's rule and
    Recovery's."""
    if not math.isfinite(loss):
        return "nonfinite_loss"
    if ceiling is not None and loss > factor * ceiling:
        return "loss_spike"
    return None


class SkipStep(Serializable):
    """Decides, step by step, whether to leave the optimizer step out (see the module's docstring).

    Args:
        factor: a loss above this many times the highest of the last ``window`` applied steps is
            skipped; > 1. Default 10.
        window: the applied steps the highest is taken over (>= 20). Default 100.

    ``skipped`` counts the steps left out (this process, since it was made or loaded).
    """

    _state_dict_all_req_keys = ("losses", "skipped")

    def __init__(self, factor: float = 10.0, window: int = 100) -> None:
        self.factor, self.window = number_in("factor", factor, low=1.0), window_size(window)
        self.skipped = 0
        self.last = False  # the verdict on the current loss
        self.pending = False  # a loss since the last optimizer step was judged a spike (gradient accumulation)
        self._losses: deque[float] = deque(maxlen=window)

    def judge(self, loss: torch.Tensor | float) -> bool:
        """Whether to skip the step whose loss this is (one host read; under idist, agreed by all ranks).
        Call it once per optimizer step, after the loss is known and before ``optimizer.step()``."""
        value = float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
        spike = trouble(value, highest(self._losses), self.factor) is not None
        if idist.get_world_size() > 1:
            spike = bool(idist.all_reduce(float(spike), op="MAX"))
        if spike:
            self.skipped += 1
        else:
            self._losses.append(value)
        self.last = spike
        self.pending = self.pending or spike
        return spike

    def state_dict(self) -> OrderedDict[str, Any]:
        return OrderedDict(losses=list(self._losses), skipped=self.skipped)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._losses = deque((float(x) for x in state_dict["losses"]), maxlen=self.window)
        self.skipped = int(state_dict["skipped"])


class SkippingOptimizer:
    """``optimizer``, whose ``step()`` does nothing when a loss since the last step was judged a spike
    (with gradient accumulation, any of the accumulated ones); the rest is the optimizer's own
    (``param_groups``, ``zero_grad``, ``state_dict``...). What :func:`~monitor.build_trainer` hands
    Ignite's training step, so that its own update (AMP, gradient accumulation) runs unchanged."""

    def __init__(self, optimizer: torch.optim.Optimizer, skip: SkipStep) -> None:
        self.optimizer, self.skip = optimizer, skip

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        skipped, self.skip.pending = self.skip.pending, False
        if skipped:
            return None
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


def judged_loss(loss_fn: Callable[..., torch.Tensor], skip: SkipStep) -> Callable[..., torch.Tensor]:
    """``loss_fn``, whose every loss is judged by ``skip`` as it is computed."""
    def loss(*args: Any, **kwargs: Any) -> torch.Tensor:
        value = loss_fn(*args, **kwargs)
        skip.judge(value)
        return value
    return loss

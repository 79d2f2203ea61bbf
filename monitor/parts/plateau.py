"""LROnPlateau: reduce the learning rate when the Objective stops improving, by the same rule as early
stopping and the best checkpoints."""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from ignite.base.mixins import Serializable
from ignite.engine import Engine, Events

from monitor.core._checks import number_in, positive_int
from monitor.handlers.best import BestTracker
from monitor.parts.base import Part, PartContext

__all__ = ["LROnPlateau", "attach_lr_on_plateau"]

logger = logging.getLogger(__name__)


class LROnPlateau(Serializable, Part):
    """Multiply the learning rate by ``factor`` after ``patience`` validations without improvement.

    What counts as an improvement is :class:`~monitor.handlers.best.BestTracker`'s verdict, the
    Objective's rule (threshold, mode, baseline, NaN never a best), so the LR is cut exactly when
    early stopping counts a validation without improvement, and never when a best checkpoint is
    written. The schedule itself is torch's ``ReduceLROnPlateau`` (which Ignite's
    ``ReduceLROnPlateauScheduler`` wraps too), fed the count of improvements so far: it would judge
    a raw metric by its own threshold rule, which differs from the Objective's (a relative threshold
    on a negative score, a NaN). Validations in the Objective's warm-up are not counted.

    Args:
        patience: validations without improvement before a cut. Default 3.
        factor: the cut, in (0, 1). Default 0.1.
        cooldown: validations after a cut before counting again. Default 0.
        min_lr: the rate is never cut below this (a number, or one per parameter group). Default 0.

    Examples:
        .. code-block:: python

            run = attach_monitoring(..., parts=[LROnPlateau(patience=3, factor=0.5)])
            # or by hand, on the *evaluator*, after the BestTracker:
            plateau = attach_lr_on_plateau(evaluator, best, optimizer, LROnPlateau(patience=3))
    """

    _state_dict_all_req_keys = ("improvements", "scheduler")
    key = "lr_on_plateau"  # a part of attach_monitoring (see monitor.parts.base)

    def __init__(
        self, patience: int = 3, *, factor: float = 0.1, cooldown: int = 0, min_lr: float | list[float] = 0.0
    ) -> None:
        positive_int("patience", patience)
        number_in("factor", factor, low=0.0, high=1.0)
        if not (isinstance(cooldown, int) and not isinstance(cooldown, bool) and cooldown >= 0):
            raise ValueError(f"Argument cooldown should be an integer >= 0, got {cooldown!r}.")
        rates = min_lr if isinstance(min_lr, list) else [min_lr]
        if not all(isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in rates):
            raise ValueError(f"Argument min_lr should be a number >= 0 or a list of them, got {min_lr!r}.")
        self.patience, self.factor, self.cooldown, self.min_lr = patience, float(factor), cooldown, min_lr
        self.best: BestTracker | None = None
        self.scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.improvements = 0
        self._loaded_scheduler: dict[str, Any] | None = None  # loaded before bind()

    def bind(self, best: BestTracker, optimizer: torch.optim.Optimizer) -> LROnPlateau:
        """Drive ``optimizer``'s rates from ``best``'s verdicts."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"Argument optimizer should be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        self.best = best
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            # torch cuts after patience + 1 bad validations; Keras, fastai and our early stopping count
            # patience itself (the patience-th validation without improvement acts), hence the - 1.
            optimizer, mode="max", factor=self.factor, patience=self.patience - 1, threshold=0.0,
            threshold_mode="abs", cooldown=self.cooldown, min_lr=self.min_lr,
        )
        if self._loaded_scheduler is not None:
            self._load_scheduler(self._loaded_scheduler)
            self._loaded_scheduler = None
        return self

    def check(self, context: PartContext) -> None:
        """As a part, before the run folder is touched: there must be an optimizer to cut the rates of."""
        if context.optimizer is None:
            raise ValueError(
                "Argument lr_on_plateau (LROnPlateau in parts) needs an optimizer in to_save (its rates are the "
                f"ones cut); got to_save keys {sorted(context.to_save_keys)}."
            )

    def attach(self, context: PartContext) -> None:
        """As a part: cut the first optimizer's rates by ``context.best``'s verdicts, on the evaluator."""
        self.check(context)
        assert context.optimizer is not None
        attach_lr_on_plateau(context.evaluator, context.best, context.optimizer, self)

    def config(self) -> dict[str, Any]:
        return {"patience": self.patience, "factor": self.factor, "cooldown": self.cooldown, "min_lr": self.min_lr}

    def __call__(self, _: Engine) -> None:
        if self.best is None or self.scheduler is None:
            raise RuntimeError("LROnPlateau is not bound: use attach_lr_on_plateau or attach_monitoring.")
        if self.best.trainer.state.epoch <= self.best.objective.warmup:
            return
        self.improvements += int(self.best.is_best)
        before = [group["lr"] for group in self.scheduler.optimizer.param_groups]
        self.scheduler.step(self.improvements)  # "max" with threshold 0: better exactly on an improvement
        after = [group["lr"] for group in self.scheduler.optimizer.param_groups]
        if after != before:
            logger.info(
                "Reducing the learning rate %s -> %s: no improvement of %s in %d validations",
                _rates(before), _rates(after), self.best.objective.column, self.patience,
            )

    def state_dict(self) -> OrderedDict[str, Any]:
        scheduler = self.scheduler.state_dict() if self.scheduler is not None else dict(self._loaded_scheduler or {})
        return OrderedDict(improvements=self.improvements, scheduler=scheduler)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.improvements = int(state_dict["improvements"])
        if self.scheduler is None:
            self._loaded_scheduler = dict(state_dict["scheduler"])
        else:
            self._load_scheduler(state_dict["scheduler"])

    def _load_scheduler(self, saved: Mapping[str, Any]) -> None:
        assert self.scheduler is not None
        # The settings are this run's (a resume may change them, as with patience); the counters are saved.
        counters = {k: v for k, v in saved.items() if k not in ("factor", "patience", "cooldown", "min_lrs",
                                                               "default_min_lr")}
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **counters})


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{r:.4g}" for r in rates)


def attach_lr_on_plateau(
    evaluator: Engine, best: BestTracker, optimizer: torch.optim.Optimizer, plateau: LROnPlateau | None = None
) -> LROnPlateau:
    """Bind ``plateau`` (default ``LROnPlateau()``) to ``best`` and ``optimizer`` and attach it to
    ``evaluator``'s ``COMPLETED``, after ``best``; returns it (put it into the last checkpoint)."""
    plateau = (plateau or LROnPlateau()).bind(best, optimizer)
    evaluator.add_event_handler(Events.COMPLETED, plateau)
    return plateau

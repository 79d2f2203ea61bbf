"""Early stopping on Ignite's EarlyStopping, plus warm-up, baseline, target, divergence and NaN."""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping as IgniteEarlyStopping

from monitor.core._checks import optional_number, positive_int
from monitor.core.objective import Objective
from monitor.core.status import StopReason, parse_reason, reason_value
from monitor.store.faults import crash_point

__all__ = ["EarlyStoppingHandler", "attach_early_stopping"]

logger = logging.getLogger(__name__)


class EarlyStoppingHandler(IgniteEarlyStopping):
    """Ignite's ``EarlyStopping`` deciding "better" with an :class:`~monitor.Objective`.

    Kept from Ignite: ``patience``, ``counter``, ``best_score``, ``state_dict`` and stopping through
    ``trainer.terminate()``. ``__call__`` is re-written because Ignite 0.5.5's lacks: a NaN score is
    taken as the first best and then poisons every comparison; its relative threshold
    (``best * (1 - threshold)``) points the wrong way for negative scores; the best creeps by
    sub-threshold steps unless ``cumulative=True``; and there is no warm-up, baseline, target,
    divergence limit or recorded stop reason. It also logs through its own configured logger; this one
    logs through :mod:`logging` only.

    Args:
        objective: the metric, mode, threshold and warm-up (shared with best checkpoints).
        trainer: the engine to stop.
        patience: validation runs without improvement before stopping (>= 1), or ``None``: no stop
            for that (``target`` and ``divergence`` still stop).
        baseline: a value the metric must beat before anything counts as an improvement. Default None.
        target: stop as soon as the metric is at least this good. Default None.
        divergence: stop as soon as the metric is worse than this. Default None.

    Examples:
        .. code-block:: python

            es = EarlyStoppingHandler(Objective("loss", mode="min"), trainer, patience=10)
            evaluator.add_event_handler(Events.COMPLETED, es)   # attached to the *evaluator*
            es.stop_reason                                     # StopReason.PATIENCE_EXHAUSTED
    """

    _state_dict_all_req_keys = ("counter", "best_score", "stop_reason")

    def __init__(
        self,
        objective: Objective,
        trainer: Engine,
        patience: int | None,
        *,
        baseline: float | None = None,
        target: float | None = None,
        divergence: float | None = None,
    ) -> None:
        if not isinstance(objective, Objective):
            raise TypeError(f"Argument objective should be a monitor.Objective, got {objective!r}.")
        if patience is not None:
            positive_int("patience", patience)
        for name, value in (("baseline", baseline), ("target", target), ("divergence", divergence)):
            optional_number(name, value)
        if target is not None and divergence is not None and not objective.is_better_or_equal(target, divergence):
            raise ValueError(
                f"Argument target ({target!r}) should be better than divergence ({divergence!r}) "
                f"for mode {objective.mode!r}."
            )
        super().__init__(
            patience=patience or 1,  # (Ignite's needs one; None is set below)
            score_function=lambda engine: objective.value(engine.state.metrics),
            trainer=trainer,
            threshold=objective.threshold,
            cumulative=True,
            threshold_mode=objective.threshold_mode,
            mode=objective.mode,
        )
        self.patience: int | None = patience  # type: ignore[assignment]
        self.logger = logger
        self.objective = objective
        self.baseline = baseline
        self.target = target
        self.divergence = divergence
        self.stop_reason: StopReason | None = None

    def __call__(self, engine: Engine) -> None:
        value = self.objective.value(engine.state.metrics)
        epoch = self.trainer.state.epoch
        column = self.objective.column
        if not math.isfinite(value) and self.objective.on_nonfinite == "stop":
            return self._stop(StopReason.NONFINITE_METRIC, f"{column} is {value} at epoch {epoch}")
        if self.target is not None and self.objective.is_better_or_equal(value, self.target):
            return self._stop(StopReason.TARGET_REACHED, f"{column}={value:.6g} reached target {self.target:g}")
        if self.divergence is not None and math.isfinite(value) and not self.objective.is_better_or_equal(
            value, self.divergence
        ):
            return self._stop(
                StopReason.DIVERGED, f"{column}={value:.6g} is worse than divergence limit {self.divergence:g}"
            )
        if epoch <= self.objective.warmup:
            logger.debug("%s=%.6g at epoch %d: warm-up, patience not counted", column, value, epoch)
            return
        reference = self.best_score if self.best_score is not None else self.baseline
        if self.objective.is_improvement(value, reference, epoch=epoch):
            if reference is None:
                logger.debug("%s=%.6g: first best", column, value)
            else:
                logger.debug("%s improved %.6g -> %.6g", column, reference, value)
            self.best_score, self.counter = value, 0
            return
        self.counter += 1
        logger.debug(
            "%s=%.6g: no improvement on %.6g (%d/%d)", column, value, reference, self.counter, self.patience
        )
        if self.patience is not None and self.counter >= self.patience:
            self._stop(StopReason.PATIENCE_EXHAUSTED, f"no improvement in {self.patience} validations")

    def _stop(self, reason: StopReason, message: str) -> None:
        self.stop_reason = reason
        logger.info("Early stopping (%s): %s", reason.value, message)
        self.trainer.terminate()
        crash_point("after_stop_decision")

    def reset(self) -> None:
        super().reset()
        self.stop_reason = None

    def state_dict(self) -> OrderedDict[str, Any]:
        return OrderedDict(
            counter=self.counter,
            best_score=self.best_score,
            stop_reason=reason_value(self.stop_reason),
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super(IgniteEarlyStopping, self).load_state_dict(state_dict)  # key check from Serializable
        self.counter = int(state_dict["counter"])
        self.best_score = state_dict["best_score"]
        self.stop_reason = parse_reason(state_dict["stop_reason"])

    def attach(self, engine: Engine, event: Any = Events.COMPLETED, *args: Any, **kwargs: Any) -> None:
        """Run on ``engine`` (the *evaluator*) ``event``; nothing resets the counter.

        Ignite 0.5.5's ``attach`` also registers ``reset`` on the same engine's ``STARTED`` (or on
        ``reset_engine``): on an evaluator that clears the counter before every validation run, so
        training never stops; on the trainer, ``STARTED`` fires again on resume and wipes the
        restored state. To reuse a handler for a new run, call ``reset()`` yourself.
        """
        if args or kwargs:
            raise TypeError(
                f"EarlyStoppingHandler.attach takes only an engine and an event; got also {args!r} {kwargs!r} "
                "(there is no reset_engine: nothing resets the counter, see the docstring)."
            )
        engine.add_event_handler(event, self)


def attach_early_stopping(
    evaluator: Engine,
    trainer: Engine,
    objective: Objective,
    patience: int,
    *,
    baseline: float | None = None,
    target: float | None = None,
    divergence: float | None = None,
) -> EarlyStoppingHandler:
    """Attach :class:`EarlyStoppingHandler` to ``evaluator`` on ``COMPLETED``; it stops ``trainer``.

    Unlike Ignite's ``EarlyStopping.attach(evaluator)``, nothing resets the counter at the start of
    each validation run (which makes Ignite's never stop) nor at the trainer's ``STARTED`` (which
    fires again on resume and would wipe the restored state).
    """
    handler = EarlyStoppingHandler(
        objective, trainer, patience, baseline=baseline, target=target, divergence=divergence
    )
    handler.attach(evaluator)
    return handler

"""Run status and stop reasons, as written to ``run.json`` and read by the review."""
from __future__ import annotations

from enum import Enum

__all__ = ["RunStatus", "StopReason", "reason_value", "parse_reason"]


class RunStatus(str, Enum):
    """Where a run stands; ``run.json["status"]``."""

    RUNNING = "running"
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        """A finished run trains no more epochs when resumed."""
        return self in (RunStatus.COMPLETED, RunStatus.EARLY_STOPPED, RunStatus.DIVERGED)


class StopReason(str, Enum):
    """Why training stopped; ``run.json["stop_reason"]``."""

    PATIENCE_EXHAUSTED = "patience_exhausted"
    TARGET_REACHED = "target_reached"
    DIVERGED = "diverged"
    NONFINITE_METRIC = "nonfinite_metric"
    NONFINITE_LOSS = "nonfinite_loss"
    MAX_EPOCHS = "max_epochs"
    INTERRUPTED = "interrupted"
    TIME_LIMIT = "time_limit"  # max_time reached: a checkpoint is written and resume continues
    FAILED = "failed"
    TERMINATED = "terminated"  # trainer.terminate() called by a handler monitor does not own
    PRUNED = "pruned"  # an Optuna pruner ended the trial (OptunaPruning): early stopping across trials
    RECOVERY_FAILED = "recovery_failed"  # Recovery's rollbacks did not bring the objective back

    @property
    def status(self) -> RunStatus:
        """The run status this reason leads to."""
        return _STATUS[self]


_STATUS = {
    StopReason.PATIENCE_EXHAUSTED: RunStatus.EARLY_STOPPED,
    StopReason.TARGET_REACHED: RunStatus.EARLY_STOPPED,
    StopReason.TERMINATED: RunStatus.EARLY_STOPPED,
    StopReason.PRUNED: RunStatus.EARLY_STOPPED,
    StopReason.DIVERGED: RunStatus.DIVERGED,
    StopReason.NONFINITE_METRIC: RunStatus.DIVERGED,
    StopReason.NONFINITE_LOSS: RunStatus.DIVERGED,
    StopReason.RECOVERY_FAILED: RunStatus.DIVERGED,
    StopReason.MAX_EPOCHS: RunStatus.COMPLETED,
    StopReason.INTERRUPTED: RunStatus.INTERRUPTED,
    StopReason.TIME_LIMIT: RunStatus.INTERRUPTED,
    StopReason.FAILED: RunStatus.FAILED,
}


def reason_value(reason: StopReason | None) -> str | None:
    """``reason`` as stored in ``run.json`` and in state dicts (``None`` stays ``None``)."""
    return None if reason is None else reason.value


def parse_reason(value: str | None) -> StopReason | None:
    """The :class:`StopReason` stored as ``value`` by :func:`reason_value`.

    Raises:
        ValueError: ``value`` names no stop reason (lists the known ones).
    """
    if value is None:
        return None
    try:
        return StopReason(value)
    except ValueError:
        known = [r.value for r in StopReason]
        raise ValueError(f"Stop reason should be one of {known} or None, got {value!r}.") from None

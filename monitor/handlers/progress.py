"""Progress: Ignite's ProgressBar with the running loss, and one log line per epoch."""
from __future__ import annotations

import logging
import math
import time
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from monitor._format import format_value
from monitor.handlers.best import BestTracker
from monitor.handlers.history import HistoryRecorder
from monitor.handlers.loss import loss_from_output

__all__ = ["attach_progress_bar", "attach_epoch_log"]

logger = logging.getLogger(__name__)


def attach_progress_bar(trainer: Engine, *, refresh_s: float = 0.5, **tqdm_kwargs: Any) -> ProgressBar:
    """Ignite's ``ProgressBar`` on ``trainer``, showing the loss, redrawn at most every ``refresh_s``
    seconds (by time, not per iteration: a redraw costs about 0.3 ms, and the loss leaves the device
    only then). ``tqdm_kwargs`` go to tqdm (``file=``, ``disable=``...).

    Examples:
        .. code-block:: python

            bar = attach_progress_bar(trainer, refresh_s=1.0, file=sys.stderr)
    """
    if not (isinstance(refresh_s, (int, float)) and refresh_s >= 0):
        raise ValueError(f"Argument refresh_s should be a number of seconds >= 0, got {refresh_s!r}.")
    bar = ProgressBar(persist=False, **tqdm_kwargs)
    bar.attach(
        trainer,
        output_transform=lambda out: {"loss": loss_from_output(out)},
        event_name=Events.ITERATION_COMPLETED(event_filter=_every_seconds(refresh_s)),
    )
    return bar


def _every_seconds(seconds: float) -> Any:
    last = -math.inf

    def due(_: Engine, __: int) -> bool:
        nonlocal last
        now = time.monotonic()
        if now - last < seconds:
            return False
        last = now
        return True

    return due


def _show(value: Any) -> str:
    return format_value(value, digits=4, nonfinite="nan")


def format_epoch_line(row: dict[str, Any], best: BestTracker, max_epochs: int | None) -> str:
    """``epoch 5/1000  train_loss 0.41  val_loss 0.38*  val_accuracy 0.91  lr 0.01  best val_loss 0.38 @5``."""
    column = best.objective.column
    parts = [f"epoch {row['epoch']}" + (f"/{max_epochs}" if max_epochs else "")]
    for key, value in row.items():
        if key in ("epoch", "iteration", "elapsed_s", "is_best") or value is None:
            continue
        mark = "*" if key == column and row.get("is_best") else ""
        parts.append(f"{key} {_show(value)}{mark}")
    if best.best_value is not None:
        parts.append(f"best {column} {_show(best.best_value)} @{best.best_epoch}")
    return "  ".join(parts)


def attach_epoch_log(evaluator: Engine, trainer: Engine, recorder: HistoryRecorder) -> None:
    """Log the history row of each validation run at INFO (``*`` marks a new best); on ``evaluator``."""

    def log_line(_: Engine) -> None:
        logger.info(format_epoch_line(recorder.last_row, recorder.best, trainer.state.max_epochs))

    evaluator.add_event_handler(Events.COMPLETED, log_line)

"""What the console shows: Ignite's ProgressBar (on a terminal or in a notebook), and one aligned log
line per validation."""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar

from monitor.core._format import format_value
from monitor.handlers.best import BestTracker
from monitor.handlers.history import HistoryRecorder
from monitor.handlers.loss import loss_from_output
from monitor.store.history import is_evidence_column

__all__ = ["attach_progress_bar", "attach_epoch_log", "EpochTable", "console_is_terminal"]

logger = logging.getLogger(__name__)


def attach_progress_bar(trainer: Engine, *, refresh_s: float = 0.5, **tqdm_kwargs: Any) -> ProgressBar:
    """Ignite's ``ProgressBar`` on ``trainer``, showing the loss, redrawn at most every ``refresh_s``
    seconds (by time, not per iteration: a redraw costs about 0.3 ms, and the loss leaves the device
    only then). ``tqdm_kwargs`` go to tqdm (``file=``, ``disable=``...).

    The bar is drawn only where a person watches it: on a terminal, or in a notebook (Ignite's
    ``tqdm.autonotebook`` then draws a notebook bar). Written to a file, a pipe or CI it is off
    (tqdm's ``disable=None``), so a log holds lines, not ``\\r`` fragments; ``disable=False`` forces it.

    Examples:
        .. code-block:: python

            bar = attach_progress_bar(trainer, refresh_s=1.0, file=sys.stderr)
    """
    if not (isinstance(refresh_s, (int, float)) and refresh_s >= 0):
        raise ValueError(f"Argument refresh_s should be a number of seconds >= 0, got {refresh_s!r}.")
    if "disable" not in tqdm_kwargs:
        notebook = _in_notebook()
        # In a notebook: the widget bar; elsewhere None, tqdm's "off unless the file is a terminal"
        # (and a notebook without ipywidgets gets none: its stdout is no terminal either).
        tqdm_kwargs["disable"] = False if notebook else None
    bar = ProgressBar(persist=False, **tqdm_kwargs)
    if tqdm_kwargs["disable"] is None and not _is_terminal(tqdm_kwargs.get("file", sys.stderr)):
        return bar  # tqdm would draw nothing: no handler at all (not one whose filter runs every step)
    bar.attach(
        trainer,
        output_transform=lambda out: {"loss": loss_from_output(out)},
        event_name=Events.ITERATION_COMPLETED(event_filter=_every_seconds(refresh_s)),
    )
    return bar


def _is_terminal(stream: Any) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


def _in_notebook() -> bool:
    """Whether ``tqdm.autonotebook`` (what Ignite's ProgressBar uses) picked the notebook bar, which
    draws with ipywidgets (without them it would fail at the first iteration: no bar then)."""
    from tqdm.autonotebook import tqdm as auto_tqdm

    if not auto_tqdm.__module__.startswith("tqdm.notebook"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        logger.info("No progress bar in this notebook: pip install ipywidgets to have one.")
        return False
    return True


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


_ANSI_GREEN, _ANSI_RESET = "\x1b[32m", "\x1b[0m"


def _cell(column: str, value: Any) -> str:
    if column == "epoch_s":
        return "-" if value is None else f"{value:.2f}"
    if isinstance(value, float) and math.isfinite(value) and value != 0 and 1e-3 <= abs(value) < 1e5:
        return f"{value:.4f}"  # fixed decimals: the digits of a column line up
    return format_value(value, digits=4, nonfinite="nan")


class EpochTable:
    """The console's view of the history: one aligned line per validation, as skorch's ``PrintLog``.

    Columns stay put from line to line (a header is printed first, and again when a column appears
    or has to widen); the objective's value is marked ``*`` when it is a new best, and coloured
    when ``color`` is true. Shown: ``epoch``, ``iter``, the ``train_*`` and ``val_*`` columns, the
    learning rates, and the epoch's seconds (``time``).

    Examples:
        .. code-block:: python

            table = EpochTable(best, color=False)
            table.lines(row)   # ["epoch  iter  train_loss  val_loss ...", "    1    55      0.6931    0.6921* ..."]
    """

    _HEADERS = {"iteration": "iter", "epoch_s": "time"}

    def __init__(self, best: BestTracker, *, color: bool = False) -> None:
        self.best = best
        self.color = color
        self._widths: dict[str, int] = {}

    def _columns(self, row: dict[str, Any]) -> list[str]:
        picked = [k for k in row if k.startswith(("train_", "val_")) and not is_evidence_column(k)]
        rates = [k for k in row if k == "lr" or k.startswith("lr_")]
        return ["epoch", "iteration", *picked, *rates, "epoch_s"]

    def lines(self, row: dict[str, Any]) -> list[str]:
        """The header (when the columns changed) and the line of ``row``."""
        columns = self._columns(row)
        objective = self.best.objective.column
        cells = {c: _cell(c, row.get(c)) for c in columns}
        widths = {c: max(len(self._HEADERS.get(c, c)), len(cells[c]), self._widths.get(c, 0), 6) for c in columns}
        out = []
        if widths != self._widths:
            self._widths = widths
            out.append("  ".join(self._HEADERS.get(c, c).rjust(widths[c]) + (" " if c == objective else "")
                                 for c in columns).rstrip())
        parts = []
        for c in columns:
            text = cells[c].rjust(widths[c])
            if c == objective:
                is_best = bool(row.get("is_best"))
                text = (f"{_ANSI_GREEN}{text}*{_ANSI_RESET}" if self.color else f"{text}*") if is_best else f"{text} "
            parts.append(text)
        out.append("  ".join(parts).rstrip())
        return out


def console_is_terminal(log: logging.Logger = logger) -> bool:
    """Whether ``log``'s records reach only terminals (and ``NO_COLOR`` is unset): colour is then safe."""
    if os.environ.get("NO_COLOR"):
        return False
    streams = []
    current: logging.Logger | None = log
    while current is not None:
        streams += [h.stream for h in current.handlers if isinstance(h, logging.StreamHandler)]
        current = current.parent if current.propagate else None
    return bool(streams) and all(getattr(stream, "isatty", lambda: False)() for stream in streams)


@contextmanager
def _outside_bar(bar: ProgressBar | None) -> Iterator[None]:
    """Clear ``bar`` while a line is written, and draw it again after (tqdm's ``external_write_mode``),
    so that no half-drawn bar is left glued to the line."""
    pbar = getattr(bar, "pbar", None)
    if pbar is None or getattr(pbar, "disable", False) or getattr(pbar, "fp", None) is None:
        yield  # no bar drawn (closed, or off where no terminal watches)
        return
    with type(pbar).external_write_mode(file=pbar.fp):
        yield


def attach_epoch_log(
    evaluator: Engine, trainer: Engine, recorder: HistoryRecorder, *, bar: ProgressBar | None = None
) -> EpochTable:
    """Log the history row of each validation run at INFO as an aligned
    :class:`~monitor.handlers.progress.EpochTable` line, written around ``bar`` (if any) so none of the
    bar is left on the line; on ``evaluator``."""
    table = EpochTable(recorder.best, color=console_is_terminal())

    def log_line(_: Engine) -> None:
        with _outside_bar(bar):
            for line in table.lines(recorder.last_row):
                logger.info(line)

    evaluator.add_event_handler(Events.COMPLETED, log_line)
    return table

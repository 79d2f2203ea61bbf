"""load_run: one run directory, read-only, as data (pandas) before text."""
from __future__ import annotations

import io
import json
import os
import socket
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.diagnosis import Finding
from monitor.diagnosis import diagnose as diagnose_rows
from monitor.review.events import read_scalars
from monitor.review.text import summary_text
from monitor.store.history import complete_rows_text, raw_rows, read_history_rows, rows_digest
from monitor.store.layout import (
    BEST_PREFIX,
    HISTORY_NAME,
    TENSORBOARD_DIR,
    RunPaths,
    checkpoint_files,
    parse_checkpoint_name,
)
from monitor.store.record import FORMAT_VERSION

if TYPE_CHECKING:
    import pandas

__all__ = ["Run", "RunDirectoryError", "load_run"]


class RunDirectoryError(ValueError):
    """A folder that cannot be reviewed as a run; the message names the path and the problem."""


class Run:
    """A finished or running run, read from its folder; never writes there.

    Attributes: ``path``, ``name``, ``record`` (``run.json`` as a dict), ``history`` (DataFrame, one row
    per epoch), ``status``, ``stop_reason``, ``best`` (``metric, mode, value, epoch, checkpoint``),
    ``scalars`` (TensorBoard points, read on first use).

    Examples:
        .. code-block:: python

            run = load_run("reports/binary_classification")
            run.best            # {"metric": "val_loss", "epoch": 15, "value": 0.4735, ...}
            run.history.plot(x="epoch", y=["train_loss", "val_loss"])
            print(run.summary())
    """

    def __init__(
        self, path: Path, record: dict[str, Any], history: pandas.DataFrame, *, is_live: bool = False
    ) -> None:
        self.path = path
        self.record = record
        self.history = history
        self.is_live = is_live  # when loaded: a process may still be writing it (see holder_is_alive)

    @property
    def name(self) -> str:
        return str(self.record.get("name") or self.path.name)

    @property
    def status(self) -> str:
        """``run.json``'s status, except ``"crashed"`` for a run it says is running but whose process
        is gone (killed, or its machine lost): resume it to continue."""
        status = str(self.record.get("status"))
        return "crashed" if status == "running" and not self.is_live else status


    @property
    def epochs(self) -> int:
        """Epochs completed, from whichever of ``run.json`` and ``history.csv`` is further (after a
        kill, the history can be a few writes ahead of the record)."""
        recorded = int(self.record.get("epochs_completed") or 0)
        in_history = int(self.history["epoch"].max()) if len(self.history) else 0
        return max(recorded, in_history)

    @property
    def stop_reason(self) -> str | None:
        reason = self.record.get("stop_reason")
        return None if reason is None else str(reason)

    @property
    def best(self) -> dict[str, Any]:
        """``metric, mode, value, epoch, checkpoint`` (a Path), from ``run.json``, or from the history
        where it is further (a killed run's last improvements may be there only)."""
        best = dict(self.record.get("best") or {})
        objective = self.record.get("objective") or {}
        best.setdefault("metric", f"val_{objective['metric']}" if "metric" in objective else None)
        best.setdefault("mode", objective.get("mode"))
        newer = self._best_in_history(best)
        if newer is not None:
            best.update(newer)
        elif best.get("checkpoint"):
            best["checkpoint"] = self.path / best["checkpoint"]
        return best

    def _best_in_history(self, best: dict[str, Any]) -> dict[str, Any] | None:
        """The history's last ``is_best`` row, if it is later than the recorded best."""
        column = best.get("metric")
        if "is_best" not in self.history or column not in self.history:
            return None
        rows = self.history[self.history["is_best"] == True]  # noqa: E712 (a pandas column)
        if rows.empty or (best.get("epoch") is not None and int(rows["epoch"].iloc[-1]) <= int(best["epoch"])):
            return None
        epoch = int(rows["epoch"].iloc[-1])
        files = sorted(
            path for path in checkpoint_files(RunPaths(self.path).checkpoints, BEST_PREFIX)
            if getattr(parse_checkpoint_name(path.name), "epoch", None) == epoch
        )
        return {"epoch": epoch, "value": float(rows[column].iloc[-1]), "checkpoint": files[-1] if files else None}

    @property
    def objective_column(self) -> str:
        return str(self.best.get("metric") or "val_loss")

    @cached_property
    def scalars(self) -> pandas.DataFrame:
        """TensorBoard scalars (``tag, step, value, wall_time``), as the TensorBoard app shows them."""
        return read_scalars(self.path / TENSORBOARD_DIR)

    def best_row(self) -> dict[str, Any]:
        """The history row of the best epoch (empty if there is none yet)."""
        epoch = self.best.get("epoch")
        rows = self.history[self.history["epoch"] == epoch] if epoch is not None else self.history.iloc[0:0]
        if "is_best" in rows and rows["is_best"].astype(bool).any():  # validated more than once an epoch
            rows = rows[rows["is_best"].astype(bool)]
        return {} if rows.empty else {str(k): v for k, v in rows.iloc[-1].to_dict().items()}

    @property
    def findings(self) -> list[Finding]:
        """What went wrong in training, from the history (see :mod:`monitor.diagnosis`)."""
        return diagnose_rows(
            read_history_rows(RunPaths(self.path).history), objective_column=str(self.best.get("metric")),
            mode=str(self.best.get("mode") or "min"), stop_reason=self.stop_reason,
            after_last_row=self.record.get("after_last_row"), recoveries=self.record.get("recoveries") or (),
            kept_epochs={name.epoch for path in checkpoint_files(RunPaths(self.path).checkpoints, BEST_PREFIX)
                         if (name := parse_checkpoint_name(path.name)) is not None},
        )

    @property
    def damage(self) -> list[str]:
        """What in the folder is not what the run wrote, said in words, or an empty list if nothing is
        found. History rows changed or lost since ``run.json`` recorded them count; rows written after
        it are not checked."""
        recorded = self.record.get("history_rows")
        if not isinstance(recorded, dict):
            return []  # a run of a version that did not record them
        rows = raw_rows(RunPaths(self.path).history)
        count = int(recorded.get("count", 0))
        if len(rows) < count:
            return [f"history.csv has {len(rows)} rows where run.json recorded {count}: rows were lost"]
        if rows_digest(rows[:count]) != recorded.get("crc32"):
            return [f"history.csv's first {count} rows are not those run.json recorded (a row was changed)"]
        return []

    def summary(self) -> str:
        """A few aligned lines: status, epochs, best, and the metrics at the best epoch."""
        return summary_text(self)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r}, epochs={len(self.history)})"

    def _repr_html_(self) -> str:
        """How a notebook shows a run: why it stopped, its summary, configuration and curves inline."""
        # Imported when shown: loading a run needs none of the page (html.py knows Run for its annotations only).
        from monitor.review.charts import chart_assets
        from monitor.review.html import run_section

        return chart_assets() + run_section(self)


def holder_is_alive(run_dir: str | Path) -> bool:
    """Whether the run's lock names a holder that is alive on this host, or one on another host
    (which cannot be checked from here). Reads the lock file only: the review takes no lock, so it
    can never make a starting run fail as busy. A run that ended emptied its lock."""
    try:
        holder = json.loads(RunPaths(run_dir).lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return False
    if not isinstance(holder, dict) or "pid" not in holder:
        return False
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def load_run(run_dir: str | Path) -> Run:
    """Read ``run_dir`` (``run.json`` and ``history.csv``; TensorBoard only when asked).

    Raises:
        RunDirectoryError: the folder is missing, is not a run, is half-written, or has a format this
            version cannot read; the message names the path and what is wrong.
    """
    import pandas

    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirectoryError(f"{str(path)!r}: no such run directory")
    paths = RunPaths(path)
    record_path, history_path = paths.record, paths.history
    if not record_path.exists():
        half = history_path.exists()
        what = f"has {HISTORY_NAME} but no run.json (half-written?)" if half else "is not a run (no run.json)"
        raise RunDirectoryError(f"{str(path)!r}: {what}")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirectoryError(f"{str(path)!r}: run.json cannot be read ({e})") from e
    if not isinstance(record, dict) or "format" not in record:
        raise RunDirectoryError(f"{str(path)!r}: run.json is from an older format (no 'format' key); not readable")
    if record["format"] != FORMAT_VERSION:
        raise RunDirectoryError(
            f"{str(path)!r}: run.json has format {record['format']!r}; this monitor reads format {FORMAT_VERSION}"
        )
    text, _ = complete_rows_text(history_path)  # a line torn by a crash is not a row
    if text.count("\n") >= 1:
        history = pandas.read_csv(io.StringIO(text))
        if "epoch" not in history.columns:
            raise RunDirectoryError(f"{str(path)!r}: history.csv has no 'epoch' column")
    else:
        history = pandas.DataFrame({"epoch": pandas.Series(dtype="int64"), "iteration": pandas.Series(dtype="int64")})
    return Run(path, record, history, is_live=holder_is_alive(path))

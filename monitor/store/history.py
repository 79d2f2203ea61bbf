"""History: one row per validation run in ``history.csv``; crash-safe appends, truncation on resume.

Pure Python (the csv module); the review reads it into pandas (``monitor.load_run(run_dir).history``).
"""
from __future__ import annotations

import csv
import io
import math
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monitor.store._io import atomic_write_text

__all__ = ["History", "complete_rows_text", "read_history_rows", "raw_rows", "rows_digest", "compare_rows",
           "TIMING_COLUMNS", "is_evidence_column"]

# Columns that measure time, not training: a resumed run equals an uninterrupted one in every other.
TIMING_COLUMNS = ("elapsed_s", "epoch_s", "samples_per_s", "data_wait_frac")

_LEADING = ("epoch", "iteration")


def is_evidence_column(column: str) -> bool:
    """Whether ``column`` is kept as evidence for the diagnosis (``train_loss_spike``, the run's first
    step loss ``train_loss_start``, an epoch's highest ``train_<name>_max``) rather than shown with the
    curves: the console line and TensorBoard leave it out."""
    return column.startswith("train_") and column.endswith(("_spike", "_start", "_max"))


def complete_rows_text(path: Path | str) -> tuple[str, bool]:
    """The text of ``path`` up to its last whole line, and whether a torn line (cut by a crash
    mid-write) was left out. Reads only: ``""`` when there is no file.

    Both the writer (:class:`History`) and the review read ``history.csv`` through this.
    """
    path = Path(path)
    if not path.exists():
        return "", False
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        return text[: text.rfind("\n") + 1], True
    return text, False


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value).lower()  # nan, inf, -inf
    return str(value)


def _parse(cell: str) -> Any:
    if cell == "":
        return None
    if cell in ("True", "False"):
        return cell == "True"
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def _rows(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return [], []
    return list(header), [
        {k: _parse(v) for k, v in zip(header, line, strict=True)} for line in reader if len(line) == len(header)
    ]


Cells = dict[str, str]  # a row as written: its non-empty cells, by column


def raw_rows(path: Path | str) -> list[Cells]:
    """Every whole line of ``path`` after the header, as the text of its non-empty cells (a line with
    too many or too few cells too: a check must see it)."""
    text, _ = complete_rows_text(path)
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None) or []
    return [{k: v for k, v in zip(header, line, strict=False) if v != ""} | (
        {"<extra cells>": ",".join(line[len(header):])} if len(line) > len(header) else {}) for line in reader]


def rows_digest(rows: Sequence[Mapping[str, str]]) -> str:
    """A CRC-32 of ``rows`` (as :func:`raw_rows` gives them), whatever columns the file gained since."""
    text = "\x1e".join("\x1f".join(f"{k}={v}" for k, v in sorted(row.items())) for row in rows)
    return f"{zlib.crc32(text.encode()):08x}"


def compare_rows(found: Sequence[Mapping[str, str]], recorded: Sequence[Mapping[str, str]]) -> list[str]:
    """What differs between the rows ``found`` in a file and the rows ``recorded`` (the first few, in
    words; empty: none)."""
    problems = []
    for i, (row, want) in enumerate(zip(found, recorded, strict=False), start=1):
        changed = [k for k in {*row, *want} if row.get(k, "") != want.get(k, "")]
        if changed:
            column = sorted(changed)[0]
            problems.append(f"row {i} (epoch {want.get('epoch', '?')}) has {column}={row.get(column, '')!r} "
                            f"where {want.get(column, '')!r} was written")
    if len(found) < len(recorded):
        problems.append(f"{len(recorded) - len(found)} of its {len(recorded)} rows are missing")
    return problems[:3]


def read_history_rows(path: Path | str) -> list[dict[str, Any]]:
    """The whole rows of a ``history.csv``, parsed as :meth:`History.read_rows` does (an empty cell is
    ``None``, a NaN is ``nan``), without repairing the file. For readers, e.g. the review.

    Examples:
        .. code-block:: python

            rows = read_history_rows(run_dir / "history.csv")   # [{"epoch": 1, "val_loss": 0.69, ...}, ...]
    """
    return _rows(complete_rows_text(path)[0])[1]


class History:
    """Rows of per-epoch values, kept in a CSV file that is whole after any crash.

    Each :meth:`append` writes one line and hands it to the operating system (O(1) per row), so a
    killed process loses none; :meth:`sync` makes the rows durable against a power loss too, and is
    called before each last checkpoint is written (every row up to a checkpoint is on disk before
    it; a row after it that a power loss took is trained again by the resume). A row with a column
    the file has not seen yet rewrites the file atomically with the union of the columns, so
    columns are never dropped; cells a row lacks stay empty. ``epoch`` and ``iteration`` come first.

    Args:
        path: the CSV file; it is read if it exists.

    Examples:
        .. code-block:: python

            history = History(run_dir / "history.csv")
            history.append({"epoch": 1, "iteration": 55, "val_loss": 0.41, "is_best": True})
            history.truncate(after_epoch=0)      # on resume: drop rows of work being redone
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.columns: list[str] = []
        self.last_epoch = 0
        self.last_iteration = 0
        self._torn = False  # set by read_rows: the file ends in a line a crash cut short
        self.written: list[Cells] = []  # each row as this process knows it was written (a checkpoint keeps them)
        if self.path.exists():
            rows = self.read_rows()
            self._set_last(rows[-1] if rows else None)
            if self._torn:  # rewrite, so the next append starts on a row boundary
                self._rewrite(rows)
            self.written = raw_rows(self.path)

    def read_rows(self) -> list[dict[str, Any]]:
        """All complete rows in the file, values parsed (int, float, bool, str or ``None``)."""
        text, self._torn = complete_rows_text(self.path)
        header, rows = _rows(text)
        if header:
            self.columns = header
        return rows

    def append(self, row: Mapping[str, Any]) -> None:
        """Add one row: in the file when this returns (durable after :meth:`sync`)."""
        for key in _LEADING:
            if key not in row:
                raise KeyError(f"History row needs {key!r}; got columns {sorted(row)}.")
        new = [k for k in row if k not in self.columns]
        if new or not self.path.exists():
            rows = self.read_rows() if self.path.exists() else []
            for key in (*_LEADING, *new):
                if key not in self.columns:
                    self.columns.append(key)
            self._rewrite([*rows, dict(row)])
        else:
            try:
                with open(self.path, "a", encoding="utf-8", newline="") as f:
                    f.write(self._line(row))
            except OSError as e:  # e.g. ENOSPC: a torn line is dropped at the next open
                raise OSError(e.errno, e.strerror, str(self.path)) from e
        self.written.append({k: c for k in self.columns if (c := _cell(row.get(k))) != ""})
        self._set_last(row)

    def sync(self) -> None:
        """Put every row appended so far on disk (an fsync); nothing if there is no file yet."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            os.fsync(fd)
        except OSError as e:  # e.g. ENOSPC
            raise OSError(e.errno, e.strerror, str(self.path)) from e
        finally:
            os.close(fd)

    def truncate(self, after_epoch: int | None = None, *, after_iteration: int | None = None) -> int:
        """Drop rows with ``epoch > after_epoch`` or ``iteration > after_iteration`` (work a resume
        redoes); return how many were dropped."""
        rows = self.read_rows()

        def keep(row: Mapping[str, Any]) -> bool:
            if after_iteration is not None:
                return row.get("iteration") is not None and int(row["iteration"]) <= after_iteration
            return row["epoch"] is not None and int(row["epoch"]) <= (after_epoch or 0)

        kept = [r for r in rows if keep(r)]
        if len(kept) != len(rows) or self._torn:
            self._rewrite(kept)
        self._set_last(kept[-1] if kept else None)
        self.written = raw_rows(self.path)
        return len(rows) - len(kept)

    def repair(self, recorded: Sequence[Mapping[str, str]], *, keep_later: bool = False) -> list[str]:
        """Make the file hold the ``recorded`` rows (what a last checkpoint kept) if it does not: the file
        as found is kept beside it as ``history.csv.damaged``. With ``keep_later`` (a finished run, whose
        rows after its checkpoint are not trained again), the file's rows after the last recorded
        iteration are kept after them; else the file holds exactly the recorded rows. Returns what
        differed (empty: nothing did, nothing was written)."""
        found = raw_rows(self.path)
        last = _parse(recorded[-1].get("iteration", "")) if recorded else 0
        later = [row for row in found if keep_later and isinstance(_parse(row.get("iteration", "")), int)
                 and isinstance(last, int) and _parse(row["iteration"]) > last]
        problems = compare_rows(found, recorded)
        if not problems and len(found) == len(recorded) + len(later):
            return []
        if not problems:
            problems = [f"it has {len(found) - len(recorded) - len(later)} row(s) the checkpoint did not write"]
        if self.path.exists():
            shutil.copyfile(self.path, self.path.with_name(self.path.name + ".damaged"))
        kept = [*recorded, *later]
        columns = list(_LEADING) + [k for row in kept for k in row if k not in _LEADING]
        self.columns = list(dict.fromkeys(columns))
        self._rewrite([{k: _parse(v) for k, v in row.items()} for row in kept])
        rows = self.read_rows()
        self._set_last(rows[-1] if rows else None)
        self.written = raw_rows(self.path)
        return problems

    def _set_last(self, row: Mapping[str, Any] | None) -> None:
        self.last_epoch = int(row["epoch"]) if row else 0
        self.last_iteration = int(row["iteration"]) if row and row.get("iteration") is not None else 0

    def _line(self, row: Mapping[str, Any]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([_cell(row.get(k)) for k in self.columns])
        return buffer.getvalue()

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        if not self.columns:
            self.columns = list(_LEADING)
        header = io.StringIO()
        csv.writer(header, lineterminator="\n").writerow(self.columns)
        atomic_write_text(self.path, header.getvalue() + "".join(self._line(r) for r in rows))

"""run.json: the run record (status, stop reason, best, config, versions), written atomically.

Pure Python: the review reads it without torch.
"""
from __future__ import annotations

import json
import platform
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitor.core.status import RunStatus, StopReason, parse_reason, reason_value
from monitor.store._io import atomic_write_text, json_text
from monitor.store.layout import RECORD_NAME

__all__ = [
    "RECORD_NAME",
    "FORMAT_VERSION",
    "RunRecord",
    "read_record",
    "write_record",
    "record_text",
    "now_iso",
]

FORMAT_VERSION = 1
_LEADING_KEYS = ("name", "status", "stop_reason", "error", "epochs_completed", "best")


def now_iso() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``run.json`` of ``run_dir``, or ``None`` when there is none.

    Raises:
        ValueError: the file is not valid JSON (names the path).
    """
    path = Path(run_dir) / RECORD_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"Run record {str(path)!r} is not valid JSON: {e}.") from e
    if not isinstance(data, dict):
        raise ValueError(f"Run record {str(path)!r} should hold a JSON object, got {type(data).__name__}.")
    return data


def record_text(record: dict[str, Any]) -> str:
    """``record`` as the text of ``run.json`` (format version and leading keys first, time of update)."""
    first = {k: record[k] for k in _LEADING_KEYS if k in record}
    data = {"format": FORMAT_VERSION, **first, **record, "updated": now_iso()}
    return json_text(data)


def write_record(run_dir: str | Path, record: dict[str, Any] | str) -> None:
    """Replace ``run_dir/run.json`` atomically (temp file, fsync, rename, fsync folder).

    ``record`` is the record or its :func:`record_text` (taken earlier, e.g. before a background write).
    """
    atomic_write_text(Path(run_dir) / RECORD_NAME, record if isinstance(record, str) else record_text(record))


class RunRecord:
    """What ``run.json`` holds, and its lifecycle: a segment per start or resume, updates as the run
    goes, the status at its end. Writing is the caller's (``text()`` now, written later, in order).

    Examples:
        .. code-block:: python

            record = RunRecord.read(run_dir)             # empty when there is no run.json
            record.start_segment(from_epoch=0, config={"seed": 0})
            record.end_segment(RunStatus.COMPLETED, StopReason.MAX_EPOCHS)
            write_record(run_dir, record.text())
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(data or {})

    @classmethod
    def read(cls, run_dir: str | Path) -> RunRecord:
        """The record in ``run_dir`` (empty if there is none); ``ValueError`` if it is not JSON."""
        return cls(read_record(run_dir))

    @property
    def status(self) -> RunStatus | None:
        value = self.data.get("status")
        return None if value is None else RunStatus(value)

    @property
    def stop_reason(self) -> StopReason | None:
        return parse_reason(self.data.get("stop_reason"))

    @property
    def is_finished(self) -> bool:
        """Whether the run ended (completed, early-stopped, diverged), so that a resume trains nothing."""
        return self.status is not None and self.status.is_finished

    def start_segment(self, from_epoch: int, config: Mapping[str, Any], versions: Mapping[str, str] | None = None,
                      **fields: Any) -> None:
        """A start or resume: a new segment (with ``fields``), the config and the library ``versions``
        (handed in by the layer that knows them), status ``running``."""
        segment = {"started": now_iso(), "from_epoch": from_epoch, **fields}
        self.data.setdefault("started", segment["started"])
        self.data.setdefault("segments", []).append(segment)
        self.data.update(config, versions={"python": platform.python_version(), "platform": sys.platform,
                                           **(versions or {})})
        self.update(status=RunStatus.RUNNING, stop_reason=None, error=None)

    def update(self, *, status: RunStatus | None = None, stop_reason: StopReason | None = None,
               **fields: Any) -> None:
        """Set ``status`` and ``stop_reason`` (when given) and any other top-level ``fields``."""
        if status is not None:
            self.data["status"] = status.value
            self.data["stop_reason"] = reason_value(stop_reason)
        self.data.update(fields)

    def end_segment(self, status: RunStatus, stop_reason: StopReason | None, error: str | None = None) -> None:
        """The run ended with ``status``: recorded on the record and on its last segment."""
        self.update(status=status, stop_reason=stop_reason, error=error)
        if self.data.get("segments"):
            self.data["segments"][-1].update(ended=now_iso(), status=status.value)

    def text(self) -> str:
        """The text of ``run.json`` as the record is now."""
        return record_text(self.data)

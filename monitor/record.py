"""run.json: the run record (status, stop reason, best, config, versions), written atomically."""
from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitor._io import atomic_write_text, json_text

__all__ = ["RECORD_NAME", "FORMAT_VERSION", "read_record", "write_record", "now_iso", "library_versions"]

RECORD_NAME = "run.json"
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


def library_versions() -> dict[str, str]:
    """Versions of Python, torch, ignite and monitor, for the record."""
    import ignite
    import torch

    from monitor import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ignite": ignite.__version__,
        "monitor": __version__,
        "platform": sys.platform,
    }

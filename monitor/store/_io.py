"""Crash-safe file writes: temp file in the same folder, flush, fsync, rename, fsync the folder.

Every file a run writes goes through here, so a kill at any instant leaves either the old file or
the new one, whole, never a mix, and never a stray temp file that is not cleaned up at the next start.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from monitor.store.faults import crash_point
from monitor.store.layout import TEMP_PREFIX


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` whole or not at all: ``write(f)`` fills a temp file that replaces ``path``.

    Raises whatever ``write`` or the file system raised (``OSError(ENOSPC)`` on a full disk), after
    removing the temp file; the previous ``path`` is then untouched.
    """
    path = Path(path)
    tmp_name = path.parent / f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}"
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode as the umask allows
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        crash_point("after_temp_write")
        os.replace(tmp_name, path)
        crash_point("after_rename")
    except BaseException as e:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # name the file the user would look for
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write` for text (UTF-8)."""
    data = text.encode("utf-8")

    def write(f: IO[bytes]) -> None:
        f.write(data)

    atomic_write(path, write)


def json_text(data: Any) -> str:
    """``data`` as the indented JSON text of every file monitor writes (``run.json``, the manifest)."""
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n"


def atomic_write_json(path: Path, data: Any) -> None:
    """:func:`atomic_write` of ``data`` as indented JSON."""
    atomic_write_text(path, json_text(data))


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete temp files (and the folders of a sharded save) a killed write left in ``folder``; return
    what was removed."""
    removed = []
    if folder.is_dir():
        for p in folder.glob(TEMP_PREFIX + "*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed

"""The checks before a run writes into its folder (``prepare_run_dir``).

The layout itself is :mod:`monitor.store.layout`'s; reading checkpoints is :mod:`monitor.runtime.checkpoint_io`'s.
Their names are re-exported here, where they used to live.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from monitor.runtime.checkpoint_io import (
    CheckpointError,
    find_resume_checkpoint,
    load_checkpoint,
    remove_unlisted_checkpoints,
    set_aside_damaged,
)
from monitor.store._io import remove_stale_temp_files
from monitor.store.layout import RunPaths, last_checkpoints
from monitor.store.lock import RunLock
from monitor.store.record import read_record

__all__ = [
    "RunPaths",
    "prepare_run_dir",
    "remove_if_empty",
    "load_checkpoint",
    "load_resume_checkpoint",
    "remove_unlisted_checkpoints",
    "CheckpointError",
]


def prepare_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool, lock: RunLock) -> RunPaths:
    """Check and create ``run_dir``, and take ``lock`` on it, before anything is attached.

    Raises:
        ValueError: it already holds a run and neither ``resume`` nor ``overwrite`` is set, or both are.
        PermissionError: it cannot be created or written.
        RunDirectoryBusy: another live process holds it.
    """
    if resume and overwrite:
        raise ValueError("Arguments resume and overwrite should not both be True: continue the run or replace it.")
    paths = RunPaths(run_dir)
    try:
        if paths.root.exists() and not paths.root.is_dir():
            raise ValueError(f"Argument run_dir should be a directory, got the file {str(paths.root)!r}.")
        paths.root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=paths.root)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"Run directory {str(paths.root)!r} cannot be written: {e}.") from e
    lock.acquire()
    try:
        remove_stale_temp_files(paths.root)  # left by a run.json write that a kill cut short
        if paths.holds_a_run() and not resume:
            if not overwrite:
                record = read_record(paths.root) or {}
                raise ValueError(
                    f"Run directory {str(paths.root)!r} already holds a run (status "
                    f"{record.get('status', 'unknown')!r}, {record.get('epochs_completed', '?')} epochs); pass "
                    "resume=True to continue it, overwrite=True to replace it, or choose another run_dir."
                )
            for path in (paths.record, paths.history):
                path.unlink(missing_ok=True)
            for folder in (paths.checkpoints, paths.tensorboard):
                shutil.rmtree(folder, ignore_errors=True)
    except BaseException:
        lock.release()
        raise
    return paths


def load_resume_checkpoint(checkpoints: Path, required: Collection[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest usable last checkpoint and its content (``None``: there is none); damaged newer ones
    are renamed ``<name>.damaged``. Kept for scripts; a resume uses :func:`monitor.compose.resume.plan_resume`.

    Raises:
        CheckpointError: there are last checkpoints but none is usable (lists each problem).
    """
    try:
        found = find_resume_checkpoint(Path(checkpoints), required)
    except CheckpointError:
        set_aside_damaged(last_checkpoints(checkpoints))
        raise
    set_aside_damaged([path for path, _ in found.damaged])
    return None if found.path is None or found.state is None else (found.path, found.state)


def remove_if_empty(run_dir: str | Path) -> bool:
    """Remove ``run_dir`` if it holds no file but its (released) lock: what an attach that failed after
    making the folder leaves, which a review would take for a broken run. Returns whether it did."""
    paths = RunPaths(run_dir)
    if not paths.root.is_dir():
        return False
    files = [p for p in paths.root.rglob("*") if not p.is_dir()]
    if any(p != paths.lock for p in files):
        return False
    shutil.rmtree(paths.root, ignore_errors=True)
    return True

"""The run directory: its layout, the checks before a run writes there, and finding the resume point."""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from monitor._io import remove_stale_temp_files
from monitor.lock import RunLock
from monitor.manifest import Manifest
from monitor.record import RECORD_NAME, read_record

__all__ = [
    "RunPaths",
    "prepare_run_dir",
    "load_checkpoint",
    "load_resume_checkpoint",
    "remove_unlisted_checkpoints",
    "CheckpointError",
]

logger = logging.getLogger(__name__)

_LAST = re.compile(r"^last_epoch=(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint file could not be read or does not fit; the message names the path."""


class RunPaths:
    """Where each part of a run lives inside ``run_dir`` (see ``reports/README.md``)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.root = Path(run_dir)
        self.record = self.root / RECORD_NAME
        self.history = self.root / "history.csv"
        self.checkpoints = self.root / "checkpoints"
        self.tensorboard = self.root / "tb"

    def holds_a_run(self) -> bool:
        return self.record.exists() or self.history.exists() or self.checkpoints.exists()


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


def _last_checkpoints(checkpoints: Path) -> list[Path]:
    """``last_epoch=N.pt`` files in ``checkpoints``, newest (highest N) first."""
    found = []
    if checkpoints.is_dir():
        for path in checkpoints.iterdir():
            match = _LAST.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Verify ``path`` against the manifest and ``torch.load`` it on the CPU.

    Raises:
        CheckpointError: whatever the damage (missing, empty, truncated, garbage, a flipped byte),
            naming ``path``.
    """
    path = Path(path)
    try:
        problem = Manifest(path.parent).problem(path)
    except OSError as e:
        raise CheckpointError(f"Checkpoint {str(path)!r} cannot be read: {e}") from e
    if problem is not None:
        raise CheckpointError(f"Checkpoint {str(path)!r} is damaged: {problem}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"Checkpoint {str(path)!r} cannot be loaded: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {str(path)!r} should hold a dict, got {type(state).__name__}.")
    return state


def load_resume_checkpoint(checkpoints: Path, required: Collection[str]) -> tuple[Path, dict[str, Any]] | None:
    """The newest last checkpoint that is whole and holds the ``required`` keys, with its content.

    A damaged one is renamed ``<name>.damaged`` (kept for inspection, never loaded again) with a
    warning naming it, and the previous one is tried.

    Raises:
        CheckpointError: there are last checkpoints but none is usable (lists each problem).
    """
    problems = []
    for path in _last_checkpoints(checkpoints):
        try:
            state = load_checkpoint(path)
            missing = sorted(set(required) - set(state))
            if missing:
                raise CheckpointError(f"Checkpoint {str(path)!r} lacks {missing}.")
        except CheckpointError as e:
            logger.warning("%s Falling back to the previous checkpoint.", e)
            problems.append(str(e))
            path.rename(path.with_name(path.name + ".damaged"))
            continue
        return path, state
    if problems:
        raise CheckpointError("No usable last checkpoint to resume from: " + " ".join(problems))
    return None


def remove_unlisted_checkpoints(checkpoints: Path, prefix: str, keep: Collection[str]) -> list[str]:
    """Delete ``<prefix>_*.pt`` files not in ``keep`` (left by work a resume redoes); return their names."""
    removed = [p.name for p in checkpoints.glob(f"{prefix}_*.pt") if p.name not in keep]
    for name in removed:
        (checkpoints / name).unlink()
    if removed:
        Manifest(checkpoints).forget(removed)
    return removed

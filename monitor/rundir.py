"""The run directory: its layout, the checks before a run writes there, and finding the resume point."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from monitor.record import RECORD_NAME, read_record

__all__ = ["RunPaths", "prepare_run_dir", "find_last_checkpoint", "load_checkpoint", "CheckpointError"]

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


def prepare_run_dir(run_dir: str | Path, *, resume: bool, overwrite: bool) -> RunPaths:
    """Check and create ``run_dir`` before anything is attached.

    Raises:
        ValueError: it already holds a run and neither ``resume`` nor ``overwrite`` is set, or both are.
        PermissionError: it cannot be created or written.
    """
    if resume and overwrite:
        raise ValueError("Arguments resume and overwrite should not both be True: continue the run or replace it.")
    paths = RunPaths(run_dir)
    if paths.root.exists() and not paths.root.is_dir():
        raise ValueError(f"Argument run_dir should be a directory, got the file {str(paths.root)!r}.")
    if paths.holds_a_run() and not resume:
        if not overwrite:
            record = read_record(paths.root) or {}
            raise ValueError(
                f"Run directory {str(paths.root)!r} already holds a run (status {record.get('status', 'unknown')!r}, "
                f"{record.get('epochs_completed', '?')} epochs); pass resume=True to continue it, "
                "overwrite=True to replace it, or choose another run_dir."
            )
        for path in (paths.record, paths.history):
            path.unlink(missing_ok=True)
        for folder in (paths.checkpoints, paths.tensorboard):
            shutil.rmtree(folder, ignore_errors=True)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe-", dir=paths.root)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(f"Run directory {str(paths.root)!r} cannot be written: {e}.") from e
    return paths


def find_last_checkpoint(checkpoints: Path) -> Path | None:
    """The ``last_epoch=N.pt`` with the highest N in folder ``checkpoints``, if any."""
    found = []
    if checkpoints.is_dir():
        for path in checkpoints.iterdir():
            match = _LAST.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """``torch.load`` a checkpoint on the CPU, any failure raised as :class:`CheckpointError` naming ``path``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"Checkpoint {str(path)!r} cannot be loaded: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {str(path)!r} should hold a dict, got {type(state).__name__}.")
    return state

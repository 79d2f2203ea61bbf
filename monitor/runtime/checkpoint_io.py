"""Reading checkpoint files: verify against the manifest, load, find the one to resume from, check fit.

Reads only, except :func:`set_aside_damaged` and :func:`remove_unlisted_checkpoints`, which a resume
calls once it has decided what to do (see :mod:`monitor.compose.resume`).
"""
from __future__ import annotations

import io
import logging
import shutil
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch

from monitor.runtime.shard_folders import ShardEntry
from monitor.runtime.sharded import FullStateModel
from monitor.store.layout import (
    DAMAGED_SUFFIX,
    SHARDS_SUFFIX,
    checkpoint_files,
    checkpoint_of,
    last_checkpoints,
    shards_of,
)
from monitor.store.manifest import CheckpointError, Manifest, check_file, folder_problem

__all__ = [
    "CheckpointError",
    "ResumeCheckpoint",
    "load_checkpoint",
    "remove_checkpoint",
    "shards_named",
    "checkpoint_on_every_rank",
    "find_resume_checkpoint",
    "set_aside_damaged",
    "remove_unlisted_checkpoints",
    "check_model_fits",
]

logger = logging.getLogger(__name__)


def checkpoint_on_every_rank(path: Path, state: dict[str, Any] | None) -> dict[str, Any]:
    """``path``'s content on every rank, read from the disk by global rank 0 only (``state``: what
    rank 0 loaded and verified already, if it did): the others get the file's bytes through
    ``idist.broadcast``, so a run folder that only rank 0 can see (node-local disks) resumes as well
    as a shared one. One process: :func:`load_checkpoint`.

    Raises:
        CheckpointError: on every rank, if rank 0 cannot read the file or another rank cannot load it.
    """
    path = Path(path)
    if idist.get_world_size() == 1:
        return state if state is not None else load_checkpoint(path)
    main = idist.get_rank() == 0
    data, problem = b"", ""
    if main:
        try:
            data = path.read_bytes()
        except OSError as e:
            problem = f"{type(e).__name__}: {e}"
    size = int(idist.broadcast(-1 if problem else len(data), src=0))  # type: ignore[arg-type]
    if size < 0:  # every rank raises: none is left waiting in a collective
        raise CheckpointError(f"Checkpoint {str(path)!r} cannot be read by rank 0: "
                              f"{problem or 'see rank 0'}")
    device = idist.device()
    if main:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    else:
        buffer = torch.empty(size, dtype=torch.uint8, device=device)
    received = idist.broadcast(buffer, src=0)
    assert isinstance(received, torch.Tensor)
    if main:
        return state if state is not None else load_checkpoint(path)
    try:
        loaded = torch.load(io.BytesIO(received.cpu().numpy().tobytes()), map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"Checkpoint {str(path)!r}, sent by rank 0, cannot be loaded: "
                              f"{type(e).__name__}: {e}") from e
    return loaded  # type: ignore[no-any-return]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Verify ``path`` against its own checksum and the manifest, and ``torch.load`` it on the CPU.

    Raises:
        CheckpointError: whatever the damage (missing, empty, truncated, garbage, a flipped byte),
            naming ``path``.
    """
    path = Path(path)
    try:
        problem, verified = check_file(path, Manifest(path.parent).entries().get(path.name))
    except OSError as e:
        raise CheckpointError(f"Checkpoint {str(path)!r} cannot be read: {e}") from e
    if problem is not None:
        raise CheckpointError(f"Checkpoint {str(path)!r} is damaged: {problem}.")
    if not verified:
        logger.warning(
            "Checkpoint %r cannot be verified: it carries no checksum and the manifest does not list it "
            "(written by another tool or an older monitor); loading it as it is.", str(path)
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"Checkpoint {str(path)!r} cannot be loaded: {type(e).__name__}: {e}") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"Checkpoint {str(path)!r} should hold a dict, got {type(state).__name__}.")
    return state


@dataclass
class ResumeCheckpoint:
    """The newest usable last checkpoint (``path``/``state``, ``None`` if there is none) and the newer
    ones found damaged on the way (``damaged``: path and problem)."""

    path: Path | None = None
    state: dict[str, Any] | None = None
    damaged: list[tuple[Path, str]] = field(default_factory=list)


def find_resume_checkpoint(folder: Path, required: Collection[str]) -> ResumeCheckpoint:
    """The newest last checkpoint in ``folder`` that is whole and holds the ``required`` keys.

    Reads only: damaged files are listed in the result, with a warning naming each; nothing is renamed.

    Raises:
        CheckpointError: there are last checkpoints but none is usable (lists each problem).
    """
    found = ResumeCheckpoint()
    for path in last_checkpoints(folder):
        try:
            state = load_checkpoint(path)
            missing = sorted(set(required) - set(state))
            if missing:
                raise CheckpointError(f"Checkpoint {str(path)!r} lacks {missing}.")
            shards = shards_named(state.get("model"))
            problem = None if shards is None else folder_problem(path.with_name(shards))
            if problem is not None:
                raise CheckpointError(f"Checkpoint {str(path)!r} is not whole: {problem}.")
        except CheckpointError as e:
            logger.warning("%s Falling back to the previous checkpoint.", e)
            found.damaged.append((path, str(e)))
            continue
        found.path, found.state = path, state
        return found
    if found.damaged:
        raise CheckpointError("No usable last checkpoint to resume from: " + " ".join(p for _, p in found.damaged))
    return found


def shards_named(saved_model: Any) -> str | None:
    """The shards folder a checkpoint's model entry refers to (a sharded model's), or ``None``.

    Examples:
        >>> shards_named({"shards": "last_epoch=2.shards", "key": "model"})
        'last_epoch=2.shards'
    """
    named = saved_model.get("shards") if isinstance(saved_model, Mapping) else None
    return named if isinstance(named, str) else None


def remove_checkpoint(path: Path) -> None:
    """A checkpoint file and, for a sharded model's last checkpoint, its shards folder (after the file:
    a kill in between leaves a folder no file refers to, removed at the next start)."""
    path.unlink(missing_ok=True)
    shards = path.with_name(shards_of(path.name))
    if shards.is_dir():
        shutil.rmtree(shards)


def remove_orphan_shards(checkpoints: Path) -> list[str]:
    """Delete shards folders that no last checkpoint (nor one set aside as damaged) refers to: a kill
    came between a folder and its ``.pt``, or between removing the two; return their names."""
    removed = []
    for folder in sorted(checkpoints.glob("*" + SHARDS_SUFFIX)) if checkpoints.is_dir() else []:
        pt = checkpoint_of(folder.name)
        if not (checkpoints / pt).exists() and not (checkpoints / (pt + DAMAGED_SUFFIX)).exists():
            shutil.rmtree(folder)
            removed.append(folder.name)
    return removed


def set_aside_damaged(paths: Collection[Path]) -> None:
    """Rename each of ``paths`` to ``<name>.damaged``: kept for inspection, never loaded again."""
    for path in paths:
        if path.exists():
            path.rename(path.with_name(path.name + DAMAGED_SUFFIX))


def remove_unlisted_checkpoints(checkpoints: Path, prefix: str, keep: Collection[str]) -> list[str]:
    """Delete ``<prefix>`` checkpoints not in ``keep`` (left by work a resume redoes); return their names."""
    removed = sorted(p.name for p in checkpoint_files(checkpoints, prefix) if p.name not in keep)
    for name in removed:
        remove_checkpoint(checkpoints / name)
    if removed:
        Manifest(checkpoints).forget(removed)
    return removed


def check_model_fits(
    model: torch.nn.Module | FullStateModel | ShardEntry, saved: Mapping[str, Any], where: str
) -> None:
    """Raise :class:`CheckpointError` listing missing/unexpected keys and shape mismatches, before
    anything is loaded (so nothing is half-loaded)."""
    saved_shapes: dict[str, tuple[int, ...] | None]  # (None: a value that is no tensor: its key is checked)
    shards = shards_named(saved)
    if shards is not None:  # the model is in a shards folder
        if not isinstance(model, ShardEntry):
            raise CheckpointError(f"The model of {where} is in the shards folder {shards!r}: resume it "
                                  "with the model sharded (fully_shard) and Checkpoints(shards='dcp') (the default).")
        saved_shapes = model.folders.global_shapes(shards)
    else:
        saved_shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in saved.items()}
    if isinstance(model, (FullStateModel, ShardEntry)):
        model = model.model  # a sharded model's state_dict: DTensors of the full (global) shapes
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        model = model.module
    own = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else None for k, v in model.state_dict().items()}
    missing = sorted(set(own) - set(saved_shapes))
    unexpected = sorted(set(saved_shapes) - set(own))
    shapes = {k: (saved_shapes[k], own[k]) for k in set(own) & set(saved_shapes)
              if None not in (saved_shapes[k], own[k]) and saved_shapes[k] != own[k]}
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"The model does not fit {where}: missing keys {missing}, unexpected keys {unexpected}, "
            f"shape mismatches (saved, model) {dict(sorted(shapes.items()))}. Nothing was loaded."
        )

"""Resume: find the last usable checkpoint, check it fits, restore every object, tidy the run dir."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from ignite.handlers import Checkpoint

from monitor.distributed import is_main_process, on_main_process
from monitor.handlers.checkpoint import BEST_PREFIX, LAST_PREFIX
from monitor.rundir import CheckpointError, load_checkpoint, load_resume_checkpoint, remove_unlisted_checkpoints
from monitor.status import RunStatus, StopReason

if TYPE_CHECKING:
    from monitor.run import Monitor

__all__ = ["read_resume_state", "restore", "start_over", "check_model_fits"]

logger = logging.getLogger(__name__)


def read_resume_state(run: Monitor, required: set[str]) -> dict[str, Any] | None:
    """The content of the newest usable last checkpoint (``None``: nothing to resume).

    Raises:
        ValueError: the objective differs from the recorded one (names each change).
        CheckpointError: checkpoints exist but none is usable.
    """
    previous = run._record.get("objective")
    if previous is not None and previous != run.objective.to_dict():
        changed = {k: (previous.get(k), v) for k, v in run.objective.to_dict().items() if previous.get(k) != v}
        raise ValueError(
            f"Cannot resume {str(run.run_dir)!r} with a different objective; changed (was, now): {changed}. "
            "Start a new run_dir for a new objective."
        )
    picked: dict[str, Any] = {}

    def pick() -> str | None:  # rank 0 verifies (and sets aside damaged files); the others follow
        found = load_resume_checkpoint(run.paths.checkpoints, required)
        if found is None:
            return None
        picked["state"] = found[1]
        return found[0].name

    name = on_main_process(pick)
    if name is None:
        return None
    path = run.paths.checkpoints / name
    state = picked["state"] if "state" in picked else load_checkpoint(path)
    status = run._record.get("status")
    run.is_finished = status is not None and RunStatus(status).is_finished
    logger.info("Resuming %s from %s", run.run_dir, path.name)
    return state


def check_model_fits(model: torch.nn.Module, saved: Mapping[str, Any], where: str) -> None:
    """Raise :class:`CheckpointError` listing missing/unexpected keys and shape mismatches, before
    anything is loaded (so nothing is half-loaded)."""
    if isinstance(model, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        model = model.module
    own = model.state_dict()
    missing = sorted(set(own) - set(saved))
    unexpected = sorted(set(saved) - set(own))
    shapes = {
        k: (tuple(saved[k].shape), tuple(own[k].shape))
        for k in set(own) & set(saved)
        if isinstance(saved[k], torch.Tensor) and saved[k].shape != own[k].shape
    }
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"The model does not fit {where}: missing keys {missing}, unexpected keys {unexpected}, "
            f"shape mismatches (saved, model) {dict(sorted(shapes.items()))}. Nothing was loaded."
        )


def restore(run: Monitor, state_objects: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Load ``state`` into every object; drop history rows and checkpoints of work to be redone."""
    check_model_fits(state_objects["model"], state["model"], f"the last checkpoint of {str(run.run_dir)!r}")
    try:
        Checkpoint.load_objects(to_load=dict(state_objects), checkpoint=dict(state))
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"Last checkpoint of {str(run.run_dir)!r} does not fit: {e}") from e
    run.last_checkpoint.load_state_dict(state["checkpointer"])
    run.resumed_from_epoch = run.trainer.state.epoch
    if run.is_finished:
        return  # a finished run changes no file
    run.decided_stop = decided_stop(run)
    if not is_main_process():
        return  # rank 0 tidies the files
    epoch = run.trainer.state.epoch
    dropped = run.history.history.truncate(after_epoch=epoch)
    if dropped:
        logger.info("Dropped %d history row(s) after epoch %d (redone now)", dropped, epoch)
    for prefix, checkpoint in ((BEST_PREFIX, run.best_checkpoint), (LAST_PREFIX, run.last_checkpoint)):
        keep = {name for _, name in checkpoint.state_dict()["_saved"]}
        removed = remove_unlisted_checkpoints(run.paths.checkpoints, prefix, keep)
        if removed:
            logger.info("Removed checkpoint(s) of work redone after epoch %d: %s", epoch, removed)


def start_over(run: Monitor) -> None:
    """``resume=True`` found no checkpoint: the run starts again at epoch 0, so drop what an attempt
    killed before its first last checkpoint wrote (history rows, best files), as a resume drops the
    rows and files of work it redoes. (TensorBoard hides its points: ``purge_step=0``.)"""
    if not is_main_process():
        return
    dropped = run.history.history.truncate(after_epoch=0)
    removed = remove_unlisted_checkpoints(run.paths.checkpoints, BEST_PREFIX, keep=())
    if dropped or removed:
        logger.info(
            "No checkpoint to resume %s from: starting at epoch 0; dropped %d history row(s) and %s",
            run.run_dir, dropped, removed or "no checkpoint",
        )


def decided_stop(run: Monitor) -> StopReason | None:
    """The stop the restored state had already decided on, if any (its record may not say so yet)."""
    reason = run.handler_stop_reason()
    if reason is not None:
        return reason
    state = run.trainer.state
    if state.max_epochs is not None and state.epoch >= state.max_epochs:
        return StopReason.MAX_EPOCHS
    return None

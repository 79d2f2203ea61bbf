"""Resume as a plan: :func:`plan_resume` reads the run folder and says what to do; :func:`apply_resume`
does it. Neither knows :class:`~monitor.compose.attach.Monitor`.

Examples:
    .. code-block:: python

        plan = plan_resume(paths, objective=objective, record=record, required=set(objects) | {"checkpointer"})
        ...                                # attach the handlers (TensorBoard with plan.purge_step)
        apply_resume(plan, objects=objects, paths=paths, last_checkpoint=last_checkpoint)   # loads state
        ...                                # at trainer STARTED: tidy_for_resume(plan, ...) drops redone rows
"""
from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ignite.handlers import Checkpoint

from monitor.core.objective import Objective
from monitor.core.status import StopReason, parse_reason
from monitor.runtime.checkpoint_io import (
    CheckpointError,
    check_model_fits,
    checkpoint_on_every_rank,
    find_resume_checkpoint,
    remove_orphan_shards,
    remove_unlisted_checkpoints,
    set_aside_damaged,
)
from monitor.runtime.distributed import is_main_process, on_main_process
from monitor.store.history import History
from monitor.store.layout import BEST_PREFIX, LAST_PREFIX, RunPaths
from monitor.store.manifest import Manifest, check_file
from monitor.store.record import RunRecord

__all__ = ["ResumePlan", "plan_resume", "apply_resume", "tidy_for_resume", "repair_history", "check_model_fits"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePlan:
    """What a start does with the run folder.

    Attributes:
        resume: whether a resume was asked for (``False``: a new run, nothing to read).
        checkpoint: the last checkpoint to restore (``None``: start at epoch 0).
        state: its content.
        damaged: newer last checkpoints found damaged, to set aside as ``*.damaged``.
        is_finished: ``run.json`` says the run ended: train nothing, change no file.
        decided_stop: the restored state had decided to stop, but ``run.json`` does not say so yet, or
            (``extends``) it says so.
        extends: ``run.json`` says the run completed its ``max_epochs`` or ran out of patience: a larger
            ``max_epochs`` (and patience) continues it, as if it had been started with those numbers;
            otherwise it trains nothing and changes no file.
        from_epoch: the last epoch completed (training continues in the next one).
        from_iteration: the iteration training continues after, as the history records it (the steps
            taken: :func:`~monitor.core._position.run_iteration`).
    """

    resume: bool
    checkpoint: Path | None = None
    state: Mapping[str, Any] | None = None
    damaged: tuple[Path, ...] = ()
    is_finished: bool = False
    decided_stop: StopReason | None = None
    extends: bool = False
    from_epoch: int = 0
    from_iteration: int = 0

    @property
    def purge_step(self) -> int | None:
        """The first TensorBoard step written again, at and after which older points are hidden
        (``None`` for a new run; ``0`` for a resume starting over, which hides all of the killed
        attempt's points)."""
        if not self.resume:
            return None
        return 0 if self.state is None else self.from_iteration + 1


def plan_resume(
    paths: RunPaths,
    *,
    objective: Objective,
    record: RunRecord,
    required: Collection[str],
    state_types: Mapping[str, str] | None = None,
) -> ResumePlan:
    """Read ``paths`` and decide how to resume: the newest usable last checkpoint holding ``required``.

    Reads only (damaged files are listed, not renamed). Under ``ignite.distributed``, rank 0 verifies
    the files and every rank follows its choice.

    Raises:
        ValueError: the objective differs from the recorded one, or an object of ``to_save`` is of
            another class than the one saved (``state_types``: key -> class name); names each change.
        CheckpointError: checkpoints exist but none is usable.
    """
    saved_types = record.data.get("to_save") or {}
    for key, name in (state_types or {}).items():
        if key in saved_types and saved_types[key] != name:
            raise ValueError(
                f"Cannot resume {str(paths.root)!r}: to_save[{key!r}] is {name}; the run was saved with "
                f"{saved_types[key]}. Resume with the same classes, or start a new run_dir."
            )
    previous = record.data.get("objective")
    if previous is not None and previous != objective.to_dict():
        changed = {k: (previous.get(k), v) for k, v in objective.to_dict().items() if previous.get(k) != v}
        raise ValueError(
            f"Cannot resume {str(paths.root)!r} with a different objective; changed (was, now): {changed}. "
            "Start a new run_dir for a new objective."
        )
    picked: dict[str, Any] = {}

    def pick() -> dict[str, Any]:  # rank 0 verifies the files; the others follow its verdict
        found = find_resume_checkpoint(paths.checkpoints, required)
        picked["state"] = found.state
        return {"name": None if found.path is None else found.path.name, "damaged": [p.name for p, _ in found.damaged]}

    verdict = on_main_process(pick)
    damaged = tuple(paths.checkpoints / name for name in verdict["damaged"])
    if verdict["name"] is None:
        return ResumePlan(resume=True, damaged=damaged)
    path = paths.checkpoints / verdict["name"]
    state = checkpoint_on_every_rank(path, picked.get("state"))  # read by rank 0 only: its disk may be its own
    logger.info("Resuming %s from %s", paths.root, path.name)
    trainer = state["trainer"]
    iteration = int(trainer["iteration"])
    epoch = iteration // int(trainer["epoch_length"])
    decided = _decided_stop(state, epoch, required)
    offset = int((state.get("data_order") or {}).get("iteration_offset", 0))  # see core._position.run_iteration
    if _record_disagrees(record, decided, iteration + offset):
        logger.warning(
            "run.json of %s says %r (%s), but its last checkpoint (epoch %d, iteration %d) had not stopped: "
            "resuming from the checkpoint. (Was run.json edited or copied from another run?)", paths.root,
            record.data.get("status"), record.data.get("stop_reason"), epoch, iteration + offset)
        record = RunRecord({**record.data, "status": "running", "stop_reason": None})
    # A run that completed its max_epochs, or ran out of patience, may go on with a larger one (decided
    # when trainer.run starts).
    extends = record.is_finished and record.stop_reason in _EXTENDABLE
    if extends:
        decided = record.stop_reason
    finished = record.is_finished and not extends
    return ResumePlan(
        resume=True, checkpoint=path, state=state, damaged=damaged, is_finished=finished, from_epoch=epoch,
        from_iteration=iteration + offset, decided_stop=None if finished else decided, extends=extends,
    )


_EXTENDABLE = (StopReason.MAX_EPOCHS, StopReason.PATIENCE_EXHAUSTED)
# Stops a last checkpoint records itself (early stopping's, the training loss's, max_epochs): a record
# claiming one of them over a checkpoint that shows none is not obeyed.
_IN_THE_CHECKPOINT = (StopReason.MAX_EPOCHS, StopReason.PATIENCE_EXHAUSTED, StopReason.TARGET_REACHED,
                      StopReason.DIVERGED, StopReason.NONFINITE_METRIC, StopReason.NONFINITE_LOSS)


def _record_disagrees(record: RunRecord, decided: StopReason | None, iteration: int) -> bool:
    """Whether ``run.json`` says the run finished where that cannot be so: its last segment never ended,
    or its newest checkpoint, at ``iteration``, shows that it had not stopped (where the checkpoint can
    tell: it is at or after the record's last row, and the stop claimed is one a checkpoint records)."""
    if not record.is_finished or decided is not None:
        return False
    segments = record.data.get("segments") or []
    if segments and isinstance(segments[-1], Mapping) and "ended" not in segments[-1]:
        return True  # no end of a segment wrote this status (an end records when it ended)
    claimed = record.stop_reason
    # (a claimed reason that is no finishing one, e.g. 'failed' under 'completed', cannot be the run's own)
    return (claimed is None or claimed in _IN_THE_CHECKPOINT or not claimed.status.is_finished) and \
        iteration >= int(record.data.get("iterations_completed") or 0)


def repair_history(plan: ResumePlan, history: History, *, keep_later: bool = False) -> None:
    """``history.csv`` checked against the rows the last checkpoint recorded, and restored from them if it
    differs (said at WARNING; see :meth:`~monitor.store.history.History.repair`)."""
    recorded = (plan.state or {}).get("history", {}).get("rows")
    if recorded is None:
        return  # a checkpoint of a version that did not keep them
    damage = history.repair(recorded, keep_later=keep_later)
    if damage:
        logger.warning(
            "%s did not hold the rows the last checkpoint recorded (%s): restored from the checkpoint; the "
            "file as found is kept as %s.damaged.", history.path, "; ".join(damage), history.path.name)


def _damaged_best_files(paths: RunPaths, names: list[str]) -> list[str]:
    """Which of the best files ``names`` are missing or fail their checksum."""
    entries = Manifest(paths.checkpoints).entries()
    damaged = []
    for name in names:
        path = paths.checkpoints / name
        try:
            problem = check_file(path, entries.get(name))[0] if path.exists() else "missing"
        except OSError as e:
            problem = str(e)
        if problem is not None:
            damaged.append(name)
    return damaged


def _decided_stop(state: Mapping[str, Any], epoch: int, required: Collection[str]) -> StopReason | None:
    """The stop the saved state had decided on (early stopping, the training loss, max_epochs)."""
    for key in ("early_stopping", "train_loss"):
        if key in required and isinstance(state.get(key), Mapping):
            reason = parse_reason(state[key].get("stop_reason"))
            if reason is not None:
                return reason
    max_epochs = state["trainer"].get("max_epochs")
    if max_epochs is not None and epoch >= int(max_epochs):
        return StopReason.MAX_EPOCHS
    return None


def apply_resume(
    plan: ResumePlan,
    *,
    objects: Mapping[str, Any],
    paths: RunPaths,
    last_checkpoint: Checkpoint,
) -> None:
    """Load the planned state into ``objects`` (and the last checkpoint's bookkeeping). Touches no file:
    :func:`tidy_for_resume` does that once training really starts.

    Raises:
        CheckpointError: the model or another object does not fit the checkpoint (nothing half-loaded
            for the model: its fit is checked first).
    """
    if plan.state is None:
        return
    where = f"the last checkpoint of {str(paths.root)!r}"
    check_model_fits(objects["model"], plan.state["model"], where)
    # A key the checkpoint lacks was checked by plan_resume to be an optional one (newer than the file).
    to_load = {key: obj for key, obj in objects.items() if key in plan.state}
    try:
        Checkpoint.load_objects(to_load=to_load, checkpoint=dict(plan.state))
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"Last checkpoint of {str(paths.root)!r} does not fit: {e}") from e
    last_checkpoint.load_state_dict(plan.state["checkpointer"])


def tidy_for_resume(
    plan: ResumePlan,
    *,
    paths: RunPaths,
    history: History,
    best_checkpoint: Checkpoint,
    last_checkpoint: Checkpoint,
) -> None:
    """The file side of ``plan``, done when training starts (so a run refused before it starts, e.g.
    for a too small ``max_epochs``, changes no file): damaged checkpoints set aside, history rows and
    checkpoints of work to redo dropped, best files beyond ``n_saved`` removed. A resume with no
    checkpoint starts over: the killed attempt's history rows and best files go. A finished run
    changes no file. Only rank 0 touches the files.
    """
    if not plan.resume or plan.is_finished or not is_main_process():
        return
    set_aside_damaged(plan.damaged)
    orphans = remove_orphan_shards(paths.checkpoints)
    if orphans:
        logger.info("Removed shards folder(s) no checkpoint refers to (a kill came between the two): %s", orphans)
    epoch = plan.from_epoch
    if plan.state is None:
        dropped = history.truncate(after_epoch=0)
        removed = remove_unlisted_checkpoints(paths.checkpoints, BEST_PREFIX, keep=())
        if dropped or removed:
            logger.info(
                "No checkpoint to resume %s from: starting at epoch 0; dropped %d history row(s) and %s",
                paths.root, dropped, removed or "no checkpoint",
            )
        return
    dropped = history.truncate(after_iteration=plan.from_iteration)
    if dropped:
        logger.info("Dropped %d history row(s) after iteration %d (redone now)", dropped, plan.from_iteration)
    repair_history(plan, history)
    saved = list(best_checkpoint.state_dict()["_saved"])  # worst first
    damaged = _damaged_best_files(paths, [name for _, name in saved])
    if damaged:
        set_aside_damaged([paths.checkpoints / name for name in damaged])
        saved = [item for item in saved if item[1] not in damaged]
        best_checkpoint.load_state_dict({"_saved": saved})
        logger.warning("Best checkpoint(s) %s failed their checksum: set aside as *.damaged and dropped from the "
                       "best %s; the next better validation takes their place.", damaged, best_checkpoint.n_saved)
    n_saved = best_checkpoint.n_saved
    if n_saved is not None and len(saved) > n_saved:  # n_saved made smaller on resume: keep the best ones
        best_checkpoint.load_state_dict({"_saved": saved[-n_saved:]})
    for prefix, checkpoint in ((BEST_PREFIX, best_checkpoint), (LAST_PREFIX, last_checkpoint)):
        keep = {name for _, name in checkpoint.state_dict()["_saved"]}
        removed = remove_unlisted_checkpoints(paths.checkpoints, prefix, keep)
        if removed:
            logger.info("Removed checkpoint(s) of work redone after epoch %d or beyond n_saved: %s", epoch, removed)

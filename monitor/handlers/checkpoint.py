"""Best-k and last (resume) checkpoints on Ignite's Checkpoint, written durably."""
from __future__ import annotations

import copy
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

from monitor.core._checks import positive_int
from monitor.core._position import is_mid_epoch, run_iteration
from monitor.handlers.best import BestTracker
from monitor.runtime.checkpoint_io import (
    CheckpointError,
    checkpoint_on_every_rank,
    load_checkpoint,
    remove_checkpoint,
    shards_named,
)
from monitor.runtime.shard_folders import BestShards, read_model_shards
from monitor.runtime.sharded import FullStateModel, is_sharded
from monitor.store._io import atomic_write, fsync_dir, remove_stale_temp_files
from monitor.store.faults import crash_point
from monitor.store.layout import (
    BEST_PREFIX,
    BEST_WRITE_PATTERN,
    LAST_PATTERN,
    LAST_PREFIX,
    best_named,
    best_step,
    checkpoint_of,
)
from monitor.store.manifest import ChecksumWriter, Manifest, trailer
from monitor.store.writer import OrderedWriter

__all__ = [
    "DurableDiskSaver",
    "attach_best_checkpoint",
    "attach_last_checkpoint",
    "last_checkpointer",
    "last_checkpoint_name",
    "attach_restore_best",
    "restore_best_weights",
    "BEST_PREFIX",
    "LAST_PREFIX",
]

logger = logging.getLogger(__name__)


class DurableDiskSaver(DiskSaver):
    """Ignite's ``DiskSaver`` made crash-safe.

    What Ignite 0.5.5's lacks: it never fsyncs the file or the folder, so a power loss can leave an
    empty checkpoint; ``Checkpoint`` calls ``remove(old)`` *before* saving the new file, so a kill in
    between leaves no checkpoint at all; a killed save leaves ``tmpXXXX`` files behind; and
    ``require_empty=True`` refuses to resume into the same folder. Here a removal is deferred until
    the new file is complete and durable, temp files carry a prefix cleaned at the next start, and
    the folder may hold the previous checkpoints.

    With ``hold=True`` a save only takes a copy of the state (on the CPU) and keeps it until
    :meth:`release`, which hands every kept save to the writer in order; a kept file that Ignite
    rotates out before that is never written. Best checkpoints use this: they are written with the
    next last checkpoint (which a resume regenerates everything after), not on every improvement.
    ``last_background_s`` is the time the last save's serialisation and write took on a background
    writer (0 on a foreground one: the caller waited for it), for the budget; ``before_write(name)``,
    if set, runs on the writer before file ``name`` is written (and counts in that time).

    Examples:
        .. code-block:: python

            saver = DurableDiskSaver(run_dir / "checkpoints")
            Checkpoint({"model": model}, saver, n_saved=3, score_function=..., score_name="neg_val_loss")
    """

    def __init__(
        self, dirname: str | Path, *, writer: OrderedWriter | None = None, hold: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(dirname, atomic=True, create_dir=True, require_empty=False, **kwargs)
        self.writer = writer if writer is not None else OrderedWriter(background=False)
        self.hold = hold
        self.held: dict[str, tuple[Callable[[], None], list[str]]] = {}  # filename -> (write, removals after it)
        self.last_background_s = 0.0
        # Waits, on the writer, until what the file will name is complete (a shards folder written behind
        # training): a file is written, and the files it replaces removed, only after that.
        self.before_write: Callable[[str], None] | None = None
        self._to_remove: list[str] = []
        self.manifest = Manifest(self.dirname)
        removed = remove_stale_temp_files(self.dirname) if idist.get_rank() == self.save_on_rank else []
        if removed:
            logger.warning("Removed %d temp file(s) left by an interrupted save in %s", len(removed), self.dirname)

    def _save_func(self, checkpoint: Mapping[str, Any], path: Path, func: Callable[..., Any]) -> None:
        pending = [name for name in self._to_remove if name != path.name]
        self._to_remove = []
        # In the background, the training thread only copies the state as it is now (tensors cloned:
        # 15 ms for 200 MB, against 160 ms to serialise them); the writer serialises and writes it, in order.
        # A held save is copied to the CPU: kept for a while, it should not hold device memory.
        state = _snapshot(checkpoint, to_cpu=self.hold) if self.writer.background or self.hold else checkpoint

        def job() -> None:
            writing = time.perf_counter()
            if self.before_write is not None:
                self.before_write(path.name)
            self._write(state, path, func, pending)
            self.last_background_s = time.perf_counter() - writing if self.writer.background else 0.0

        if self.hold:
            self.held[path.name] = (job, pending)
        else:
            self.writer.submit(job)

    def release(self) -> None:
        """Hand every held save to the writer, in order, and the removals of files rotated out."""
        held, self.held = list(self.held.values()), {}
        for job, _ in held:
            self.writer.submit(job)
        if self._to_remove:  # files rotated out with no new file written since
            pending, self._to_remove = self._to_remove, []
            self.writer.submit(lambda: self._remove_files(pending))

    def drop(self, names: list[str]) -> None:
        """Forget the held saves of files ``names`` (never written) and the removals of files they
        rotated out, which stay on disk."""
        for name in names:
            self.held.pop(name, None)
        self._to_remove = []

    def _remove_files(self, names: list[str]) -> None:
        for name in names:
            remove_checkpoint(self.dirname / name)
        self.manifest.forget(names)
        fsync_dir(self.dirname)

    def _write(self, checkpoint: Mapping[str, Any], path: Path, func: Callable[..., Any], pending: list[str]) -> None:
        def write(f: IO[bytes]) -> None:
            checked = ChecksumWriter(f)
            try:
                func(checkpoint, checked, **self.kwargs)
            except Exception as e:
                if checked.error is not None:  # the real cause (e.g. ENOSPC), not torch's rewording
                    raise checked.error from e
                raise
            f.write(trailer(checked.size, checked.crc32))  # verifiable on its own (torch.load ignores it)
            # Before the rename, in one write: the new file's entry, without the files deleted next
            # (a kill in between leaves them unlisted, and unlisted files are checked by loading).
            self.manifest.record(path.name, size=checked.size, crc32=checked.crc32, dropping=pending)

        atomic_write(path, write)
        crash_point("before_remove_old_" + path.name.split("_")[0])
        for name in pending:
            remove_checkpoint(self.dirname / name)
        if pending:
            fsync_dir(self.dirname)

    def remove(self, filename: str) -> None:
        # Called by Checkpoint before the new file is saved: only remember it (see class docstring).
        if idist.get_rank() != self.save_on_rank:
            return
        dropped = self.held.pop(filename, None)
        if dropped is None:
            self._to_remove.append(filename)
        else:  # a held file rotated out is never written; the removals it carried pass to the next save
            self._to_remove.extend(dropped[1])


def _snapshot(obj: Any, memo: dict[tuple[Any, ...], Any] | None = None, *, to_cpu: bool = False) -> Any:
    """A copy of a checkpoint's state that training can no longer change: tensors cloned (one clone
    per view of the same memory, so tied weights stay tied; on the CPU with ``to_cpu``), containers
    rebuilt, anything else deep-copied."""
    memo = {} if memo is None else memo

    def copy_tensor(tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.detach()
        return tensor.to("cpu", copy=True) if to_cpu else tensor.clone()

    if isinstance(obj, torch.Tensor):
        if obj.layout is not torch.strided:  # sparse and the like: no storage to compare
            return copy_tensor(obj)
        view = (obj.untyped_storage().data_ptr(), obj.storage_offset(), obj.shape, obj.stride(), obj.dtype, obj.device)
        if view not in memo:
            memo[view] = copy_tensor(obj)
        return memo[view]
    if type(obj) in (dict, OrderedDict):
        copied = type(obj)((key, _snapshot(value, memo, to_cpu=to_cpu)) for key, value in obj.items())
        if getattr(obj, "__dict__", None):  # a module's state_dict carries _metadata (versions)
            copied.__dict__.update(copy.deepcopy(obj.__dict__))
        return copied
    if type(obj) in (list, tuple):
        return type(obj)(_snapshot(value, memo, to_cpu=to_cpu) for value in obj)
    return copy.deepcopy(obj)


def attach_best_checkpoint(
    evaluator: Engine,
    trainer: Engine,
    best: BestTracker,
    to_save: Mapping[str, Any],
    dirname: str | Path,
    *,
    n_saved: int = 1,
    writer: OrderedWriter | None = None,
    name_by_iteration: bool = False,
    hold: bool = False,
) -> Checkpoint:
    """Keep the ``n_saved`` best checkpoints by the Objective; attached to ``evaluator`` on ``COMPLETED``.

    A file is written only when ``best`` marks a new best (an improvement beyond the Objective's
    threshold, never a NaN), so the newest best file is always the run's best epoch. Filenames carry
    the epoch and the objective's value: ``best_epoch=7_val_loss=0.3812.pt``; with ``name_by_iteration``
    (for validation more than once per epoch) also the iteration:
    ``best_epoch=7_iteration=450_val_loss=0.3812.pt``. Without it, two bests of one epoch whose
    scores round to the same 4 decimals would get one name, and Ignite's ``Checkpoint`` replaces the
    earlier file with the later one (so fewer than ``n_saved`` would be kept).

    Examples:
        .. code-block:: python

            ckpt = attach_best_checkpoint(evaluator, trainer, best, {"model": model}, run_dir / "checkpoints")
            ckpt.last_checkpoint      # Path of the best file so far

    With a background ``writer`` (:class:`~monitor.store.writer.OrderedWriter`), files reach the disk
    shortly after; ``writer.flush()`` waits for them. With ``hold``, they wait in memory (CPU) until
    ``release_held(checkpoint)`` (monitor releases them with each last checkpoint).

    A model sharded with FSDP2 is kept as a folder of each rank's shards beside the file
    (:class:`~monitor.runtime.shard_folders.BestShards`, written from the release on, behind training
    with a background writer; ``finish_best_shards`` waits for it); pass it seen through
    :class:`~monitor.runtime.sharded.FullStateModel` for its full state in the file instead.
    """
    positive_int("n_saved", n_saved)
    objective = best.objective

    def score(_: Engine) -> float:
        assert best.value is not None
        return objective.score(best.value)

    def step(*_: Any) -> str:  # the value itself in the name, not Ignite's score
        return best_named(trainer.state.epoch, run_iteration(trainer.state) if name_by_iteration else None,
                          objective.column, float(best.value if best.value is not None else math.nan))

    def name_now() -> str:
        return BEST_WRITE_PATTERN.format(filename_prefix=BEST_PREFIX, global_step=step(), ext="pt")

    def listed() -> list[Any]:
        return list(checkpoint.state_dict()["_saved"])

    saver = DurableDiskSaver(dirname, writer=writer, hold=hold)
    objects = {key: BestShards(obj, Path(dirname), name_now, n_saved=n_saved, listed=listed,
                               background=saver.writer.background) if is_sharded(obj) else obj
               for key, obj in to_save.items()}
    for entry in objects.values():
        if isinstance(entry, BestShards):  # a .pt names its shards folder: written once the folder is committed
            saver.before_write = entry.committed
    checkpoint = Checkpoint(
        objects,
        saver,
        filename_prefix=BEST_PREFIX,
        score_function=score,
        score_name=objective.score_name,
        n_saved=n_saved,
        global_step_transform=step,
        filename_pattern=BEST_WRITE_PATTERN,
    )
    evaluator.add_event_handler(Events.COMPLETED(event_filter=lambda *_: best.is_best), checkpoint)
    evaluator.add_event_handler(
        Events.COMPLETED(event_filter=lambda *_: best.is_best),
        lambda _: logger.debug("Best checkpoint %s", checkpoint.last_checkpoint),
    )
    return checkpoint


def last_checkpointer(
    trainer: Engine, to_save: Mapping[str, Any], dirname: str | Path, *, writer: OrderedWriter | None = None
) -> Checkpoint:
    """Ignite's ``Checkpoint`` of everything needed to resume, not attached: call it with ``trainer``.

    Files are ``last_epoch=N.pt`` at an epoch's end and ``last_epoch=N_iteration=I.pt`` within epoch N;
    the two newest are kept (by iteration), so that a resume finding the newest damaged can fall back
    to the other. ``to_save`` should hold every stateful object: model, optimizer, scheduler,
    ``trainer`` and the handlers; the checkpoint's own bookkeeping is included (``include_self``).
    """

    def step(*_: Any) -> str:
        return _last_step(trainer.state)

    return Checkpoint(
        dict(to_save),
        DurableDiskSaver(dirname, writer=writer),
        filename_prefix=LAST_PREFIX,
        n_saved=2,
        score_function=lambda _: run_iteration(trainer.state),  # the newest is the most trained (not a name order)
        global_step_transform=step,
        filename_pattern=LAST_PATTERN,
        include_self=True,
    )


def _last_step(state: Any) -> str:
    return best_step(state.epoch, run_iteration(state) if is_mid_epoch(state) else None)


def last_checkpoint_name(state: Any) -> str:
    """The name of the last checkpoint :func:`last_checkpointer` writes at ``state`` (a trainer's)."""
    return LAST_PATTERN.format(filename_prefix=LAST_PREFIX, global_step=_last_step(state), ext="pt")


def attach_last_checkpoint(
    trainer: Engine,
    to_save: Mapping[str, Any],
    dirname: str | Path,
    *,
    event: Any = Events.EPOCH_COMPLETED,
    writer: OrderedWriter | None = None,
) -> Checkpoint:
    """Save everything needed to resume (:func:`~monitor.handlers.checkpoint.last_checkpointer`) on
    ``trainer`` ``event``."""
    checkpoint = last_checkpointer(trainer, to_save, dirname, writer=writer)
    trainer.add_event_handler(event, checkpoint)
    return checkpoint


def release_held(checkpoint: Checkpoint, *, together: bool = True) -> None:
    """Hand the saves ``checkpoint`` holds (a :class:`DurableDiskSaver` with ``hold=True``) to its writer;
    a sharded model's held shards are written first (on every rank: call it on all of them).

    ``together=False`` (after a failure, when the ranks may not all be here): held shards are dropped,
    and so are the held files that would name them; the best files before them stay, and so does the
    best-k's list of them."""
    saver = checkpoint.save_handler
    for entry in checkpoint.to_save.values():
        if not isinstance(entry, BestShards):
            continue
        if together:
            entry.write_held(kept={name for _, name in checkpoint.state_dict()["_saved"]})
            continue
        dropped, on_disk = entry.drop_held()
        if dropped:
            logger.warning("The sharded model's best checkpoint(s) %s were not written: a failure came before "
                           "every process could write its shards (the best files before them are kept).", dropped)
            checkpoint.load_state_dict({"_saved": on_disk})
            if isinstance(saver, DurableDiskSaver):
                saver.drop([checkpoint_of(name) for name in dropped])
    if isinstance(saver, DurableDiskSaver):
        saver.release()


def finish_best_shards(checkpoint: Checkpoint) -> None:
    """Until the best shards folder written behind training (if any) is committed (on every rank)."""
    for entry in checkpoint.to_save.values():
        if isinstance(entry, BestShards):
            entry.wait()


def restore_best_weights(best_checkpoint: Checkpoint, model: torch.nn.Module) -> Path | None:
    """Load the best file of ``best_checkpoint`` into ``model``; return its path (``None``: no best yet)."""
    release_held(best_checkpoint)  # a held best is written now
    finish_best_shards(best_checkpoint)  # a sharded best's folder, before it is read
    if isinstance(best_checkpoint.save_handler, DurableDiskSaver):
        best_checkpoint.save_handler.writer.flush()  # the file may still be on its way to the disk
    path = best_checkpoint.last_checkpoint
    if path is None:
        logger.info("No best checkpoint yet; the model keeps its last weights.")
        return None
    if is_sharded(model):
        _restore_sharded(model, Path(path))
    elif idist.get_world_size() == 1:
        Checkpoint.load_objects({"model": model}, _whole_model(Path(path)))
    else:  # rank 0 reads the file (it may be on its disk only) and sends the weights to the others
        if idist.get_rank() == 0:
            Checkpoint.load_objects({"model": model}, _whole_model(Path(path)))
        for tensor in model.state_dict().values():
            tensor.copy_(idist.broadcast(tensor.detach().clone(), src=0))
    logger.info("Restored best weights from %s", path)
    return Path(path)


def _restore_sharded(model: torch.nn.Module, path: Path) -> None:
    """A best file into sharded ``model`` on every rank: its shards folder read by each rank, or the full
    state it holds (rank 0 reads it) kept as each rank's shard."""
    state = checkpoint_on_every_rank(path, load_checkpoint(path) if idist.get_rank() == 0 else None)
    shards = shards_named(state)
    if shards is not None:
        read_model_shards(model, path.with_name(shards))
    else:
        Checkpoint.load_objects({"model": FullStateModel(model)}, state)


def _whole_model(path: Path) -> dict[str, Any]:
    """A best file's state for an unsharded model; a sharded model's folder is refused with the way out."""
    state = load_checkpoint(path)
    shards = shards_named(state)
    if shards is not None:
        raise CheckpointError(
            f"The best checkpoint {str(path)!r} is a sharded model's: its weights are each process's shards in "
            f"{shards!r}. Restore it into the model sharded with fully_shard, or load the file `monitor export` "
            "writes of it into an unsharded model.")
    return state


def attach_restore_best(trainer: Engine, best_checkpoint: Checkpoint, model: torch.nn.Module) -> Callable[..., Any]:
    """At the end of training (``trainer`` ``COMPLETED``), load the best checkpoint's weights into ``model``."""

    def restore(_: Engine) -> None:
        restore_best_weights(best_checkpoint, model)

    trainer.add_event_handler(Events.COMPLETED, restore)
    return restore

"""A sharded (FSDP2) model in its checkpoints as folders of PyTorch's distributed checkpoint.

Each rank writes its own shards of the model and of its optimizers with
``torch.distributed.checkpoint.save`` (no rank gathers the full state), into a temp folder; rank 0
then adds a manifest (size and CRC-32 of every file, each rank's checksummed by that rank) and renames
the folder into place (``last_epoch=2_iteration=100.shards``, beside the ``.pt`` file of the same name,
which refers to it and is written after it: the ``.pt`` commits the pair). In the background (the
default) a save is ``torch.distributed.checkpoint.async_save``: the training thread waits only for the
copy of the shards to the CPU (staging), the files are written behind training on a process group of
their own, and the ``.pt`` waits for the commit; at most one save is in flight (the next waits for it,
as the stager's buffers are reused, and so does the end of the run). A resume on any number
of processes loads it with ``torch.distributed.checkpoint.load`` into the model's and optimizers'
sharded state dicts (``get_state_dict``/``set_state_dict``), which reshards it. The run folder must be
on storage every process sees (checked at attach).

A best checkpoint's model is such a folder too (:class:`BestShards`): at a new best each rank copies its
shards to the CPU and holds them, as the best file is held, until the next last checkpoint; then every
rank writes them (``best_epoch=7_val_loss=0.3812.shards``, committed as above, before the ``.pt`` that
names it), behind training on a process group of its own (one best in flight) or, without background
writes, before training goes on. ``monitor export`` turns it into one plain ``state_dict``.

Examples:
    .. code-block:: python

        folders = ShardFolders(model, {"optimizer": optimizer}, run_dir / "checkpoints", name_now)
        to_save = {**to_save, **folders.entries()}     # the last checkpoint's model and optimizer
        best = BestShards(model, run_dir / "checkpoints", best_name_now, n_saved=1, listed=listed)  # a best's model
"""
from __future__ import annotations

import functools
import logging
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from torch import nn

from monitor.runtime.distributed import gather_json
from monitor.runtime.sharded import FullStateModel, FullStateOptimizer, is_sharded, model_optimizers
from monitor.store._io import atomic_write_json, fsync_dir
from monitor.store.faults import crash_point
from monitor.store.layout import TEMP_PREFIX, checkpoint_of, shards_of
from monitor.store.manifest import MANIFEST_NAME, file_checksum

__all__ = ["ShardFolders", "ShardEntry", "BestShards", "shard_folder_objects", "shard_folders_of", "read_model_shards"]

logger = logging.getLogger(__name__)

_METADATA = ".metadata"  # torch.distributed.checkpoint's own, written by its coordinator (rank 0)


class ShardFolders:
    """The shards folders of a run's last checkpoints: one save per checkpoint, for the model and the
    optimizers of its parameters, read back by each entry on its own.

    Args:
        model: the model sharded with ``fully_shard``.
        optimizers: key in ``to_save`` -> each optimizer of the model's parameters.
        folder: the run's ``checkpoints`` folder, on storage every process sees.
        name_now: the name of the shards folder of a last checkpoint made now (it follows the ``.pt``'s).
        background: write behind training (``async_save``); ``False``: each save is written before it returns.
    """

    def __init__(self, model: nn.Module, optimizers: Mapping[str, torch.optim.Optimizer], folder: Path,
                 name_now: Callable[[], str], *, background: bool = True) -> None:
        self.model, self.optimizers, self.folder, self.name_now = model, dict(optimizers), Path(folder), name_now
        # The folder of the save in progress and the entries that named it: Ignite's Checkpoint asks each
        # entry once per save, in its order, so an entry asked again starts the next save.
        self._written: str | None = None
        self._served: set[str] = set()
        _check_shared(self.folder)
        self.background = background
        self._behind = _Behind("monitor-shards")  # the newest save written behind training
        self._stager: Any = None
        self._group: Any = None
        if background:
            import torch.distributed as dist
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            # The write's collectives run on a thread of their own while training runs collectives on the
            # default group: they need a group of their own (gloo, as async_save stages to the CPU).
            self._group = dist.new_group(backend="gloo")
            on_cuda = any(p.is_cuda for p in model.parameters())
            self._stager = DefaultStager(StagingOptions(use_pinned_memory=on_cuda, use_shared_memory=False,
                                                        use_async_staging=False, use_non_blocking_copy=False))

    def entries(self) -> dict[str, ShardEntry]:
        """The last checkpoint's objects in place of the model and its optimizers."""
        return {"model": ShardEntry(self, "model"), **{key: ShardEntry(self, key) for key in self.optimizers}}

    def write(self, key: str) -> str:
        """The name of this save's folder, written by the first entry ``key`` of the save to ask (a
        collective of every rank)."""
        if self._written is not None and key not in self._served:
            self._served.add(key)
            return self._written
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        self.wait()  # the save in flight first (its error, if it failed, is raised here)
        name = self.name_now()
        temp = self.folder / f"{TEMP_PREFIX}{name}"
        state: dict[str, Any] = {"model": get_model_state_dict(self.model)}
        state.update({k: get_optimizer_state_dict(self.model, opt) for k, opt in self.optimizers.items()})
        if self.background:
            from torch.distributed.checkpoint.state_dict_saver import async_save

            # Returns once the shards are copied to the stager's CPU buffers; the write runs on DCP's thread.
            written: Any = async_save(state, checkpoint_id=temp, process_group=self._group, async_stager=self._stager)

            def finish() -> None:  # once every rank's shards are written, the folder committed
                written.result()
                _commit_everywhere(temp, self.folder / name, self._group)

            self._behind.start(name, finish)
        else:
            _write_folder(state, self.folder / name, None)
        self._written, self._served = name, {key}
        return name

    def wait(self) -> None:
        """Until the save in flight (if any) is committed; raise its error if it failed."""
        self._behind.wait()

    def committed(self, checkpoint_name: str) -> None:
        """Until the shards folder of the last checkpoint ``checkpoint_name`` (``.pt``) is committed; raise
        the error of its save if it failed. Rank 0's writer calls it before writing the ``.pt``."""
        self._behind.committed(checkpoint_name)

    def close(self) -> None:
        """Wait for the save in flight and free the stager's buffers (at the end of the run, on every rank)."""
        try:
            self.wait()
        finally:
            if self._stager is not None:
                self._stager.close()
                self._stager = None

    def read(self, name: str, key: str) -> None:
        """Load ``key``'s state (the model, or one optimizer) from folder ``name``, resharded to this layout."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict
        from torch.distributed.checkpoint.state_dict_loader import load

        path = self.folder / name
        if key == "model":
            read_model_shards(self.model, path)
            return
        optimizer = self.optimizers[key]
        state = {key: get_optimizer_state_dict(self.model, optimizer)}
        load(state, checkpoint_id=path)
        set_optimizer_state_dict(self.model, optimizer, state[key])

    def global_shapes(self, name: str) -> dict[str, tuple[int, ...] | None]:
        """The shapes folder ``name`` holds of the model's tensors (``None``: a value that is no tensor),
        by name, from its metadata (no shard is read)."""
        from torch.distributed.checkpoint.filesystem import FileSystemReader
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        metadata = FileSystemReader(str(self.folder / name)).read_metadata()
        return {fqn.removeprefix("model."): tuple(meta.size) if isinstance(meta, TensorStorageMetadata) else None
                for fqn, meta in metadata.state_dict_metadata.items() if fqn.startswith("model.")}


class _Save:
    """One save of a shards folder, written behind training."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = threading.Event()
        self.error: BaseException | None = None

    def wait(self) -> None:
        self.done.wait()
        if self.error is not None:
            raise self.error


class _Behind:
    """The newest shards folder written behind training, on a thread of its own: a failed save stays, and
    its error is raised at every wait. Read by rank 0's writer thread too (:meth:`committed`); a new save
    is started only once the one before it is committed."""

    def __init__(self, thread_name: str) -> None:
        self.thread_name = thread_name
        self.pending: _Save | None = None

    def start(self, name: str, write: Callable[[], None]) -> None:
        pending = self.pending = _Save(name)

        def run() -> None:
            try:
                write()
            except BaseException as e:  # noqa: BLE001 (raised where the save is waited for)
                pending.error = e
            finally:
                pending.done.set()

        threading.Thread(target=run, name=self.thread_name, daemon=True).start()

    def wait(self) -> None:
        pending = self.pending
        if pending is not None:
            pending.wait()

    def committed(self, checkpoint_name: str) -> None:
        """Until the folder of ``checkpoint_name`` (its ``.pt``) is committed, if it is the one in flight."""
        pending = self.pending
        if pending is not None and pending.name == shards_of(checkpoint_name):
            pending.wait()


class ShardEntry:
    """The model or one optimizer in the last checkpoint: ``state_dict()`` writes the save's shards
    folder (the first entry of a save) and names it; ``load_state_dict`` reads this entry back from it.

    Examples:
        .. code-block:: python

            entry.state_dict()     # {"shards": "last_epoch=2_iteration=100.shards", "key": "model"}
    """

    def __init__(self, folders: ShardFolders, key: str) -> None:
        self.folders, self.key = folders, key

    @property
    def model(self) -> nn.Module:
        return self.folders.model

    def state_dict(self) -> dict[str, Any]:
        return {"shards": self.folders.write(self.key), "key": self.key}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "shards" not in state_dict:  # a last checkpoint of the full state (Checkpoints(shards="full"))
            full = FullStateModel(self.model) if self.key == "model" else \
                FullStateOptimizer(self.model, self.folders.optimizers[self.key])
            full.load_state_dict(state_dict)
            return
        self.folders.read(str(state_dict["shards"]), self.key)


def read_model_shards(model: nn.Module, folder: Path) -> None:
    """Load the model's state of shards folder ``folder`` into sharded ``model`` (every rank; resharded to
    this layout)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    from torch.distributed.checkpoint.state_dict_loader import load

    state = {"model": get_model_state_dict(model)}
    load(state, checkpoint_id=folder)
    set_model_state_dict(model, state["model"])


class BestShards:
    """A sharded model in its best checkpoints: ``state_dict()`` (at a new best, on every rank) copies this
    rank's shards to the CPU and holds them under the best file's name; :meth:`write_held` writes the held
    copies Ignite's ``Checkpoint`` still keeps as shards folders (a collective, before the held ``.pt``
    files are written). Restore best reads a folder back with :func:`read_model_shards`.

    Each rank holds at most ``n_saved`` copies of its shards (each new best enters the best-k and pushes
    the oldest out, so an older held copy would never be written). ``listed()`` is the best-k's list of
    files (Ignite's ``Checkpoint.state_dict()["_saved"]``): the list as it was before the first held copy
    is kept, so that dropping the copies (:meth:`drop_held`) can give back the list of the files on disk.

    With ``background`` a folder is written behind training, on a gloo group of its own (the last
    checkpoint's saves and training's collectives go on beside it), one at a time; :meth:`committed`
    holds the ``.pt`` back until its folder is committed (rank 0's writer calls it).

    Examples:
        .. code-block:: python

            best = BestShards(model, run_dir / "checkpoints", name_now, n_saved=1, listed=listed)
            best.state_dict()     # {"shards": "best_epoch=7_val_loss=0.3812.shards", "key": "model"}
    """

    def __init__(self, model: nn.Module, folder: Path, name_now: Callable[[], str], *, n_saved: int,
                 listed: Callable[[], list[Any]], background: bool = False) -> None:
        self.model, self.folder, self.name_now, self.n_saved = model, Path(folder), name_now, n_saved
        self.listed = listed
        self.held: OrderedDict[str, dict[str, Any]] = OrderedDict()  # shards folder name -> this rank's copy
        self.on_disk: list[Any] = []  # the best-k's list before the first held copy
        self._behind = _Behind("monitor-best-shards")  # the folder written behind training
        self._group: Any = None
        if background:
            import torch.distributed as dist

            self._group = dist.new_group(backend="gloo")  # a collective: every rank makes it at attach

    def state_dict(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.staging import BlockingAsyncStager
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        name = shards_of(self.name_now())
        if not self.held:  # asked before the best-k takes the new file in
            self.on_disk = self.listed()
        # A CPU copy of this rank's shards (still DTensors, so DCP writes them as shards of the whole)
        self.held[name] = BlockingAsyncStager().stage({"model": get_model_state_dict(self.model)})
        while len(self.held) > self.n_saved:
            self.held.popitem(last=False)
        return {"shards": name, "key": "model"}

    def write_held(self, kept: Collection[str]) -> list[str]:
        """Write each held copy whose best file (``.pt`` name) is in ``kept`` as its shards folder (every
        rank, in the same order; behind training with ``background``, each after the one before is
        committed); drop the others. Returns the names of the folders written or on their way."""
        held, self.held = self.held, OrderedDict()
        written = []
        for name, state in held.items():
            if checkpoint_of(name) not in kept:
                continue
            self.wait()  # the best in flight first (its error, if it failed, is raised here)
            write = functools.partial(_write_folder, state, self.folder / name, self._group,
                                      point="before_best_shards_commit")
            if self._group is None:
                write()
            else:
                self._behind.start(name, write)
            written.append(name)
        return written

    def wait(self) -> None:
        """Until the best folder in flight (if any) is committed; raise its error if it failed."""
        self._behind.wait()

    def committed(self, checkpoint_name: str) -> None:
        """Until the shards folder of best file ``checkpoint_name`` is committed (rank 0's writer, before
        it writes the ``.pt``); raise the error of its write if it failed."""
        self._behind.committed(checkpoint_name)

    def drop_held(self) -> tuple[list[str], list[Any]]:
        """Forget the held copies without writing them (after a failure, when the ranks may not all be
        here to write together); return their folder names and the best-k's list of the files on disk."""
        held, self.held = list(self.held), OrderedDict()
        return held, self.on_disk


def shard_folder_objects(to_save: Mapping[str, Any], folder: Path, name_now: Callable[[], str], *,
                         background: bool = True) -> dict[str, Any]:
    """``to_save`` for the last checkpoint: a sharded ``"model"`` and its optimizers as :class:`ShardEntry`
    objects of one :class:`ShardFolders` (a collective: every rank checks it sees ``folder``); as it is
    for an unsharded model."""
    if not is_sharded(to_save["model"]):
        return dict(to_save)
    optimizers = model_optimizers(to_save)
    entries = ShardFolders(to_save["model"], optimizers, folder, name_now, background=background).entries()
    return {key: entries.get(key, obj) for key, obj in to_save.items()}


def shard_folders_of(objects: Mapping[str, Any]) -> ShardFolders | None:
    """The :class:`ShardFolders` of the last checkpoint's ``objects``, if its model is in one."""
    entry = objects.get("model")
    return entry.folders if isinstance(entry, ShardEntry) else None


def _write_folder(state: dict[str, Any], final: Path, group: Any, *, point: str = "before_shards_commit") -> None:
    """Every rank its shards of ``state`` into a temp folder beside ``final`` (fsynced; rank 0 the metadata,
    after all wrote), then the folder committed as ``final`` (on ``group``; ``None``: the default group)."""
    from torch.distributed.checkpoint.state_dict_saver import save

    temp = final.with_name(f"{TEMP_PREFIX}{final.name}")
    save(state, checkpoint_id=temp, process_group=group)
    _commit_everywhere(temp, final, group, point=point)


def _commit_everywhere(temp: Path, final: Path, group: Any, *, point: str = "before_shards_commit") -> None:
    """Every rank's checksums of its own files gathered (on ``group``); rank 0 commits the folder."""
    crash_point(point)
    rank = idist.get_rank()
    mine = {p.name: file_checksum(p) for p in temp.glob(f"__{rank}_*")}
    if group is None:
        everyone = gather_json(mine)
    else:  # on this thread, not idist's collectives (gather_json): those hung here, beside training's
        import torch.distributed as dist

        everyone = [None] * dist.get_world_size(group)
        dist.all_gather_object(everyone, mine, group=group)
    if rank == 0:
        _commit(temp, final, everyone)


def _commit(temp: Path, final: Path, everyone: list[dict[str, Any]]) -> None:
    """Rank 0: the manifest of every rank's files (a file rank 0 cannot see means the folder is not
    shared), then the folder renamed into place; an earlier folder of the same name is replaced."""
    files = {name: {"size": size, "crc32": crc} for ranks in everyone for name, (size, crc) in ranks.items()}
    size, crc = file_checksum(temp / _METADATA)
    files[_METADATA] = {"size": size, "crc32": crc}
    unseen = sorted(name for name in files if not (temp / name).is_file())
    if unseen:
        raise RuntimeError(f"The shards {unseen} other processes wrote to {str(temp)!r} are not in rank 0's "
                           "folder: a sharded run's checkpoints need run_dir on storage every process sees.")
    atomic_write_json(temp / MANIFEST_NAME, files)
    fsync_dir(temp)
    if final.exists():  # saved again at the same iteration (e.g. at the end): the new folder replaces it
        old = final.with_name(f"{TEMP_PREFIX}old-{final.name}")
        final.rename(old)
        temp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        temp.rename(final)
    fsync_dir(final.parent)


def _check_shared(folder: Path) -> None:
    """Every rank sees rank 0's ``folder`` (a probe file written by rank 0); else a ``ValueError`` at attach."""
    if idist.get_world_size() == 1:
        return
    probe = folder / f"{TEMP_PREFIX}shared-probe"
    if idist.get_rank() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
    idist.barrier()
    seen = gather_json(probe.exists())  # once every rank has looked (a collective): the probe may go
    if idist.get_rank() == 0:
        probe.unlink(missing_ok=True)
    if not all(seen):
        blind = [rank for rank, ok in enumerate(seen) if not ok]
        raise ValueError(
            f"Argument run_dir should be on storage every process sees for a sharded model's checkpoints: "
            f"rank(s) {blind} do not see {str(folder)!r}. Use a shared filesystem, or pass "
            "checkpoints=Checkpoints(shards='full') (the full state gathered on rank 0 and written there).")

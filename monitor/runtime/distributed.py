"""What ``monitor`` needs from ``ignite.distributed`` beyond Ignite itself, kept in one place.

- Only rank 0 writes files; other ranks learn its verdicts (run folder checks, which checkpoint to
  resume from) through :func:`broadcast_json`, so an error on rank 0 is raised on every rank
  instead of leaving the others waiting in a collective.
- Validation without padding: ``DistributedSampler`` pads the data by repeating samples when its
  size is not divisible by the world size, which shifts the metrics (0.08931 vs 0.08961 seen on
  ignite 0.5.5); :class:`UnpaddedDistributedSampler` gives each sample to exactly one rank, and
  Ignite's metrics sum the per-rank counts correctly.
- Leaving together: :func:`leave_together` replaces a plain barrier at the end of a run, so that
  no process starts shutting down while gloo still holds tensors that Python knows.
"""
from __future__ import annotations

import json
import math
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ignite.distributed as idist
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

T = TypeVar("T")

__all__ = [
    "UnpaddedDistributedSampler",
    "broadcast_json",
    "on_main_process",
    "gather_json",
    "is_main_process",
    "leave_together",
    "validation_loader",
]


def is_main_process() -> bool:
    """True on rank 0 (and when not distributed): the process that writes files and shows progress."""
    return idist.get_rank() == 0


def broadcast_json(value: Any) -> Any:
    """Rank 0's ``value`` (JSON-able) on every rank; the value itself when not distributed."""
    if idist.get_world_size() == 1:
        return value
    text = json.dumps(value) if is_main_process() else None
    return json.loads(str(idist.broadcast(text, src=0, safe_mode=True)))


def gather_json(value: Any) -> list[Any]:
    """Every rank's ``value`` (JSON-able), in rank order, on every rank."""
    if idist.get_world_size() == 1:
        return [value]
    gathered = idist.all_gather(json.dumps(value))
    return [json.loads(str(text)) for text in gathered]  # type: ignore[union-attr]


def leave_together(rounds: int = 2, grace: float = 0.05, timeout: float = 10.0) -> None:
    """Wait for every rank, then give gloo's worker threads time to let go of Python's tensors.

    Why not ``idist.barrier()`` alone: gloo runs a collective on a worker thread, which drops its
    reference to the tensors only after the caller has returned. In torch 2.13, dropping a tensor
    that Python has seen takes the GIL; if the interpreter is already shutting down, the thread
    cannot get it and the process aborts ("terminate called without an active exception", SIGABRT
    at exit). That hit about 1 two-process run in 10 here, right after the end-of-run barrier that
    followed the restore-best broadcasts. So each round is an all-reduce of a tensor of ours, after
    which this rank sleeps (releasing the GIL) until the worker has let that tensor go; then it
    sleeps ``grace`` seconds more so that a worker still finishing an earlier collective (a
    metric's, a broadcast's) gets the GIL too. Nothing is waited for when not distributed.

    Examples:
        .. code-block:: python

            trainer.run(loader, max_epochs=10)
            leave_together()   # all ranks are here; safe to return and exit
    """
    if idist.get_world_size() == 1:
        return
    deadline = time.monotonic() + timeout
    for _ in range(rounds):
        flag = torch.zeros(1)
        idist.all_reduce(flag)
        released = weakref.ref(flag)
        del flag
        while released() is not None and time.monotonic() < deadline:
            time.sleep(0.001)
    time.sleep(grace)


def on_main_process(func: Callable[[], T]) -> T:
    """Run ``func`` on rank 0 only; return its (JSON-able) result on every rank.

    If it raises, rank 0 raises the original error and every other rank an error of the same type
    (when it is a built-in or monitor's own) with the same message, so that no rank goes on alone.
    """
    if idist.get_world_size() == 1:
        return func()
    result, failure, error = None, None, None
    if is_main_process():
        try:
            result = func()
        except Exception as e:  # sent to the other ranks, then raised here too
            error, failure = e, [type(e).__name__, str(e)]
    verdict = broadcast_json({"result": result, "failure": failure})
    if error is not None:
        raise error
    if verdict["failure"] is not None:
        name, message = verdict["failure"]
        raise _error_types().get(name, RuntimeError)(f"(on rank 0) {message}")
    return verdict["result"]  # type: ignore[no-any-return]


def _error_types() -> dict[str, type[Exception]]:
    from monitor.store.lock import RunDirectoryBusy
    from monitor.store.manifest import CheckpointError

    builtin = (ValueError, TypeError, KeyError, PermissionError, FileNotFoundError, OSError, RuntimeError)
    return {cls.__name__: cls for cls in (*builtin, RunDirectoryBusy, CheckpointError)}


class UnpaddedDistributedSampler(DistributedSampler):  # type: ignore[type-arg]
    """Each sample on exactly one rank, in order (rank r gets r, r + W, r + 2W, ...); no padding.

    Ranks may get one sample fewer than others, which is fine for evaluation: Ignite's metrics
    all-reduce their sums and counts. Not for training, where DDP needs equal batch counts.
    """

    def __init__(self, dataset: Dataset[Any], **kwargs: Any) -> None:
        super().__init__(dataset, shuffle=False, drop_last=False, **kwargs)
        self.num_samples = len(range(self.rank, len(dataset), self.num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def validation_loader(dataset: Dataset[Any], *, batch_size: int, **kwargs: Any) -> DataLoader[Any]:
    """A validation ``DataLoader`` that gives each sample to exactly one rank (plain when not distributed).

    ``batch_size`` is the total over all ranks, as in :func:`ignite.distributed.auto_dataloader`.

    Examples:
        .. code-block:: python

            val_loader = monitor.validation_loader(val_set, batch_size=64)   # 1 or N processes
    """
    world = idist.get_world_size()
    if world == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **kwargs)
    sampler = UnpaddedDistributedSampler(dataset, num_replicas=world, rank=idist.get_rank())
    loader = idist.auto_dataloader(dataset, batch_size=max(1, math.ceil(batch_size)), sampler=sampler, **kwargs)
    return loader  # type: ignore[return-value]

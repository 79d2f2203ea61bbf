"""The rest of an interrupted epoch on another data layout: each sample not yet trained, once.

A data layout is the number of processes, the batch each takes and the steps an epoch has. A resume on
another layout (a 2-process job back on 3, with ``idist.auto_dataloader``'s batch of 64 now 3 x 21)
cannot skip the steps already done as steps: they were of another size. It can skip them as samples.
After ``done`` steps of a global batch ``G``, the first ``done x G`` samples of the epoch's order are
trained, whatever the number of processes: a ``DistributedSampler`` deals the order out to the ranks
in turn and each rank's batches are consecutive, so each step trains the next stretch of the order.
So a checkpoint keeps where its epoch's order came from (its *source*: a ``DistributedSampler``'s seed,
or in one process the sampler itself, drawn again in the RNG state of the epoch's start) and how far
it went; a resume on another layout draws the order again and deals what is left of it to the new
ranks the way a ``DistributedSampler`` would (padded to equal shares, or cut with ``drop_last``).
The epochs after it are the new layout's own.

Examples:
    .. code-block:: python

        source = order_source(loader)                      # {"kind": "distributed", "seed": 0, ...}
        order = distributed_order(source, epoch=2)          # the epoch's order over all processes
        batches = deal(order[128:], processes=3, rank=0, batch_size=21)
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ignite.distributed as idist
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from torch.utils.data.distributed import DistributedSampler

__all__ = ["distributed_sampler", "order_source", "distributed_order", "sampler_order", "cannot_draw", "deal",
           "share_of", "steps_to_deal"]


def distributed_sampler(loader: DataLoader[Any]) -> DistributedSampler[Any] | None:
    for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if isinstance(sampler, DistributedSampler):
            return sampler
    return None


def order_source(loader: DataLoader[Any]) -> dict[str, Any] | None:
    """Where ``loader``'s epoch order comes from, as kept in the checkpoint (``None``: monitor cannot
    draw it again on another layout, e.g. a batch sampler of the user's own making)."""
    sampler = distributed_sampler(loader)
    if sampler is not None:
        return {"kind": "distributed", "seed": int(sampler.seed), "shuffle": bool(sampler.shuffle),
                "drop_last": bool(sampler.drop_last), "size": len(sampler.dataset),  # type: ignore[arg-type]
                "processes": int(sampler.num_replicas)}
    batch_sampler = loader.batch_sampler
    if idist.get_world_size() == 1 and type(batch_sampler) is BatchSampler:
        return {"kind": "sampler", "sampler": type(batch_sampler.sampler).__name__,
                "size": len(batch_sampler.sampler),  # type: ignore[arg-type]
                # a generator of its own: drawn from that generator, not from torch's global RNG
                "own_generator": getattr(batch_sampler.sampler, "generator", None) is not None}
    return None


def distributed_order(source: dict[str, Any], epoch: int) -> list[int]:
    """The order a ``DistributedSampler`` of ``source`` deals out in ``epoch``, before it is split into
    the ranks' shares (torch's own sampler, for one process: its permutation for ``seed + epoch``)."""
    sampler: DistributedSampler[int] = DistributedSampler(
        range(int(source["size"])), num_replicas=1, rank=0,  # type: ignore[arg-type]  # a range has a length
        shuffle=bool(source["shuffle"]), seed=int(source["seed"]))
    sampler.set_epoch(epoch)
    order = list(sampler)
    if source["drop_last"]:  # what the processes of that layout shared; the rest was never trained
        processes = int(source["processes"])
        order = order[: len(order) // processes * processes]
    return order


def cannot_draw(source: dict[str, Any] | None, loader: DataLoader[Any]) -> str | None:
    """Why the order of ``source`` cannot be drawn again for ``loader`` (``None``: it can)."""
    if source is None:
        return "its order came from a sampler monitor cannot draw again"
    if source["kind"] == "distributed":
        return None
    now = order_source(loader)
    if now is not None and now["kind"] == "sampler" and now["sampler"] == source["sampler"]:
        return None
    if source["sampler"] in _DRAWN_ANYWHERE and not source.get("own_generator", True) and now is not None:
        return None
    return (f"its order came from a {source['sampler']} in one process, which the new layout's "
            f"{type(loader.sampler).__name__} cannot draw again")


# One process's samplers whose order any layout can draw again in the RNG state of the epoch's start
# (a RandomSampler without a generator of its own draws its seed from torch's global RNG; neither has a
# state of its own). A checkpoint that does not say whether it had one is not taken as drawable.
_DRAWN_ANYWHERE = ("RandomSampler", "SequentialSampler")


def sampler_order(source: dict[str, Any]) -> list[int]:
    """The order one process's ``RandomSampler`` or ``SequentialSampler`` of ``source`` draws now (call it
    in the RNG state that sampler drew in: the epoch's start, after the loader's seed)."""
    size = int(source["size"])
    if source["sampler"] == "SequentialSampler":
        return list(range(size))
    return list(RandomSampler(range(size)))


def deal(rest: Sequence[int], processes: int, rank: int, batch_size: int, *, pad: bool = True,
         drop_last: bool = False, most: int | None = None) -> list[list[int]]:
    """``rank``'s batches of ``rest``, dealt out to ``processes`` in turn as a ``DistributedSampler``
    deals an order (padded with its first samples to equal shares, or cut to them when ``pad`` is
    false), in batches of ``batch_size`` (the last one short, or left out with ``drop_last``); at
    ``most`` batches, the last one taking what is left (every batch before it stays whole: a
    checkpoint within them knows how far the order went)."""
    order = list(rest)
    short = -len(order) % processes
    if short and pad and order:
        order += (order * (short // len(order) + 1))[:short]
    elif short:
        order = order[: len(order) - (len(order) % processes)]
    mine = order[rank::processes]
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    if most is not None and len(batches) > most:
        batches[most - 1:] = [[i for batch in batches[most - 1:] for i in batch]]
    return batches


def share_of(count: int, processes: int, *, pad: bool = True) -> int:
    """The samples :func:`deal` gives each rank of ``count`` (padded up to equal shares, or cut down)."""
    return -(-count // processes) if pad else count // processes


def steps_to_deal(count: int, processes: int, batch_size: int, *, pad: bool = True, drop_last: bool = False) -> int:
    """How many batches :func:`deal` gives each rank for ``count`` samples."""
    share = share_of(count, processes, pad=pad)
    return share // batch_size if drop_last else -(-share // batch_size)

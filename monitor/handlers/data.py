"""DataOrder: replay the data order of an epoch, so that a resume mid-epoch sees the same batches.

Ignite 0.5.5 resumes an iteration mid-epoch by counting on, with a fresh data iterator: the rest of
the epoch then gets other batches than the uninterrupted run (and repeats or skips samples). Its
``DeterministicEngine`` with ``ReproducibleBatchSampler`` replays the order, but it re-seeds the
global RNGs itself at every epoch (the library would then decide the user's randomness), needs its
own Engine class (not the user's), keeps every epoch's batch indices in a list, and knows nothing of
a ``DataLoader``'s own ``generator`` nor of ``DistributedSampler.set_epoch``. So here, on the
trainer's ``STARTED``, a ``DataLoader`` over a map-style dataset is swapped (Ignite's
``update_dataloader``) for one whose batch sampler draws the epoch's order when the iterator is made
and can skip the first batches as indices only (no data loaded), and the RNG states right before
each epoch's iterator is made are kept (and saved in the last checkpoint). A resume mid-epoch makes
the iterator from those states, skips the batches already trained, and goes on with the checkpoint's
own RNG state. With DataLoader workers, the batches already trained are loaded again and dropped
instead (each worker's random state, seeded from the loader's base seed, advances with every sample
it loads: random augmentation in workers then resumes exactly); persistent workers, whose state
carries over epochs, cannot be replayed, and that is said at resume. A resume on another layout
(number of processes, batch a process) continues the interrupted epoch with its samples not yet
trained, each once (:mod:`monitor.runtime.elastic`), and renumbers Ignite's iteration for the new
epoch length (the history keeps counting steps: ``run_iteration``). Other data (a list, a
generator, an ``IterableDataset``) cannot be replayed: resume then continues from the last completed
epoch, and this is said once when training starts.
"""
from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import ignite.distributed as idist
import torch
from ignite.base.mixins import Serializable
from ignite.engine import Engine, Events
from ignite.engine.deterministic import DeterministicEngine, ReproducibleBatchSampler, update_dataloader
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
    default_collate,
)
from torch.utils.data.distributed import DistributedSampler

from monitor.core._position import done_in_epoch, is_mid_epoch
from monitor.handlers.outputs import BatchSizes, Throughput
from monitor.handlers.rng import _from_json, _to_json, capture_rng, capture_rng_objects, restore_rng, rng_state
from monitor.runtime.distributed import gather_json
from monitor.runtime.elastic import (
    cannot_draw,
    deal,
    distributed_order,
    distributed_sampler,
    order_source,
    sampler_order,
    share_of,
    steps_to_deal,
)

__all__ = ["DataOrder", "attach_data_order"]

# Samplers that draw an epoch's order from torch's RNG (global or their generator) and nothing else.
_TORCH_SAMPLERS = (RandomSampler, SequentialSampler, SubsetRandomSampler, WeightedRandomSampler, DistributedSampler)

logger = logging.getLogger(__name__)


class _Batches:
    """The batches of one epoch: the order is drawn at the first ``next`` or at :meth:`draw`, and the
    first ``skip`` batches are passed over as indices (no data is loaded for them); or, for an epoch
    continued on another layout, ``rest`` makes them from the batch sampler."""

    def __init__(self, batch_sampler: Iterable[list[int]], skip: int,
                 rest: Callable[[Iterable[list[int]]], list[list[int]]] | None = None) -> None:
        self._sampler, self._skip, self._rest = batch_sampler, skip, rest
        self._batches: Iterator[list[int]] | None = None

    def draw(self) -> None:
        if self._batches is None and self._rest is not None:
            self._batches = iter(self._rest(self._sampler))
        if self._batches is None:
            batches = iter(self._sampler)
            head = list(itertools.islice(batches, self._skip + 1))  # draws the order (the sampler's RNG)
            self._batches = itertools.chain(head[self._skip:], batches)

    def drawn(self) -> Iterator[list[int]]:
        self.draw()
        assert self._batches is not None
        return self._batches

    def lazily(self) -> Iterator[list[int]]:
        """The batches, drawn at the first ``next`` if not before; every ``next`` is itertools' own, with
        no Python frame: the loader asks for one each step."""
        return itertools.chain.from_iterable(map(_Batches.drawn, (self,)))


class _SkippingBatchSampler:
    """The user's batch sampler, whose epochs can start ``skip`` batches in. Iterating it draws nothing
    yet: torch's multi-process loader makes one iterator in its ``__init__`` and another in ``_reset``,
    and only the second is used; :class:`DataOrder` draws that one (``latest``) itself."""

    def __init__(self, batch_sampler: Iterable[list[int]]) -> None:
        self.batch_sampler = batch_sampler
        self.skip = 0
        self.rest: Callable[[Iterable[list[int]]], list[list[int]]] | None = None
        self.latest: _Batches | None = None

    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[list[int]]:
        self.latest = _Batches(self.batch_sampler, self.skip, self.rest)
        return self.latest.lazily()


class _EagerReproducibleBatchSampler(ReproducibleBatchSampler):
    """Ignite's ``ReproducibleBatchSampler``, drawing the epoch's order when its iterator is made.

    Ignite's draws it at the first batch. On a resume mid-epoch ``DeterministicEngine`` re-seeds,
    makes the iterator, then puts back the checkpoint's RNG states, all before that first batch:
    with ``num_workers=0`` the order was then drawn from the wrong state (another order than the
    uninterrupted run's, measured). ``start_iteration`` is kept for the loader's second iterator
    (the multi-process loader makes two) and cleared by :class:`DataOrder` when the next epoch starts.
    """

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        return iter(list(self.batch_sampler)[self.start_iteration or 0:])


class _ReplayableLoader:
    """The user's ``DataLoader``, remade with a :class:`_SkippingBatchSampler`, whose iterator is made
    from the RNG states :class:`DataOrder` keeps."""

    def __init__(self, loader: DataLoader[Any], order: DataOrder) -> None:
        self.original = loader
        self.sampler = loader.batch_sampler
        self.skipper = _SkippingBatchSampler(loader.batch_sampler)  # type: ignore[arg-type]
        self.loader = update_dataloader(loader, self.skipper)  # type: ignore[arg-type]
        self.order = order

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return self.order.make_iterator(self)


def _batch_sizes(loader: DataLoader[Any], first: int) -> BatchSizes | None:
    """The sizes of ``loader``'s batches from the one at ``first``, where torch makes them (its
    ``BatchSampler`` over a sampler of known length, its ``default_collate``); else ``None``."""
    batch_sampler = loader.batch_sampler
    if type(batch_sampler) is not BatchSampler or loader.collate_fn is not default_collate:
        return None
    try:
        samples, batches = len(batch_sampler.sampler), len(batch_sampler)  # type: ignore[arg-type]
    except TypeError:  # a sampler without a length
        return None
    size = batch_sampler.batch_size
    if not batches:
        return None
    return BatchSizes(size=size, batches=batches, first=first,
                      last=size if batch_sampler.drop_last else samples - size * (batches - 1))


def _generators(loader: DataLoader[Any]) -> list[torch.Generator]:
    found = [loader.generator, getattr(loader.sampler, "generator", None),
             getattr(getattr(loader.batch_sampler, "sampler", None), "generator", None)]
    unique: list[torch.Generator] = []
    for generator in found:
        if isinstance(generator, torch.Generator) and all(generator is not g for g in unique):
            unique.append(generator)
    return unique


def _generator_states(generators: list[torch.Generator]) -> list[bytes]:
    return [g.get_state().numpy().tobytes() for g in generators]


def _set_generator_states(generators: list[torch.Generator], states: list[bytes]) -> None:
    for generator, state in zip(generators, states, strict=False):
        generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))


def _steps(layout: Mapping[str, int]) -> str:
    """``2 processes x 32 a step (64 in all, 8 steps an epoch)``."""
    n = layout["processes"]
    return (f"{n} process{'es' if n != 1 else ''} x {layout['batch_size']} a step "
            f"({n * layout['batch_size']} in all, {layout['batches']} steps an epoch)")


def _layout(data: Any) -> dict[str, int] | None:
    """How a ``DataLoader``'s data is laid out: processes, batch size a process, batches an epoch."""
    batch_size = getattr(getattr(data, "batch_sampler", None), "batch_size", None) or getattr(data, "batch_size", None)
    if not isinstance(data, DataLoader) or not isinstance(batch_size, int):
        return None
    try:
        batches = len(data)
    except TypeError:  # an IterableDataset without a length
        return None
    return {"processes": idist.get_world_size(), "batch_size": batch_size, "batches": batches}


def is_replayable(data: Any) -> bool:
    """Whether ``data`` is a ``DataLoader`` over a map-style dataset, whose order can be replayed."""
    return isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset) and \
        data.batch_sampler is not None


@dataclass
class _Rest:
    """The rest of an interrupted epoch on a new layout (see :meth:`DataOrder._plan_rest`)."""

    source: Mapping[str, Any] | None  # the order the epoch was drawn from
    trained: int  # samples of it trained before the interruption
    why: str | None = None  # why that order cannot be drawn again (None: it can, and the rest is exact)
    left: int = 0  # samples of it not yet trained
    steps: int = 0  # steps of the new layout that train them
    end: int = 0  # where the order ends (a DistributedSampler that drops its last samples: before its size)
    pad: bool = True  # equal shares padded with repeated samples, as DistributedSampler does
    drop_last: bool = False  # the batch sampler drops a short last batch
    new_done: int = 0  # the steps of the new layout's epoch counted as done


def _say_relayout(saved: Mapping[str, Any], now: Mapping[str, Any], length: int, epoch: int, done: int,
                  rest: _Rest, iteration: int, offset: int) -> None:
    """The one WARNING a resume on another data layout gives: what changed, how the interrupted epoch goes
    on (exactly, with the numbers; or not, and why), and how the iterations are counted from here."""
    before, after = saved["processes"] * saved["batch_size"], now["processes"] * now["batch_size"]
    change = f"{_steps(saved)} -> {_steps(now)}"
    what = "another global batch" if before != after else (
        "another number of steps an epoch" if now["batches"] != length else "another number of processes")
    numbering = (f"The history's iteration counts the steps taken ({iteration + offset} so far); Ignite's "
                 f"trainer.state.iteration is renumbered for {now['batches']} steps an epoch ({iteration}; "
                 f"trainer.state.iteration_offset = {offset}).")
    if not done:
        logger.warning("Resuming with %s: %s. Epoch %d and the epochs after it are the new layout's. %s",
                       what, change, epoch, numbering)
    elif rest.why is None:
        share = share_of(rest.left, now["processes"], pad=rest.pad)
        last, padding = share - (rest.steps - 1) * now["batch_size"], share * now["processes"] - rest.left
        notes = ([f"the last one {last} a process"] if last != now["batch_size"] else []) + (
            [f"{padding} of them twice, for equal shares, as DistributedSampler pads"] if padding > 0 else [])
        logger.warning(
            "Resuming with %s: %s. Epoch %d was %d samples in (%d steps): its %d samples not yet trained "
            "are trained once each, in %d steps of the new layout%s; the epochs after it are the new "
            "layout's. %s", what, change, epoch, rest.trained, done, rest.left, rest.steps,
            f" ({'; '.join(notes)})" if notes else "", numbering)
    else:
        logger.warning(
            "Resuming with %s: %s. This resume is not exact: %s. So the rest of epoch %d is the new "
            "layout's order from step %d of %d (about %d samples in, where the checkpoint was %d in): some "
            "samples are trained twice in it, some not at all. The epochs after it are whole. %s",
            what, change, rest.why, epoch, rest.new_done + 1, now["batches"], rest.new_done * after, rest.trained,
            numbering)


class DataOrder(Serializable):
    """The RNG states each epoch's data order was drawn from, and the loader's own generators.

    Args:
        trainer: the engine whose data is replayed; its ``epoch``/``iteration`` say where.

    Examples:
        .. code-block:: python

            order = attach_data_order(trainer)   # on the *trainer*'s STARTED; into the last checkpoint
            to_save["data_order"] = order
    """

    _state_dict_all_req_keys = ("epoch_rng", "generators")

    def __init__(self, trainer: Engine) -> None:
        if not isinstance(trainer, Engine):
            raise TypeError(f"Argument trainer should be an ignite Engine, got {type(trainer).__name__}.")
        self.trainer = trainer
        self.replayable: bool | None = None  # known once training starts
        self._epoch_rng: dict[str, Any] | None = None  # global RNG + generators before this epoch's iterator
        self._epoch_objects: tuple[tuple[Any, ...], list[torch.Tensor]] | None = None  # the same, not yet converted
        self._loaded_generators: list[bytes] | None = None  # to put into the loader's generators at start
        self._loader: _ReplayableLoader | None = None
        self._generators: list[torch.Generator] = []  # the loader's own, whichever path replays it
        self._warned = False
        self.timer: Throughput | None = None  # times the batches of the data it replays
        self.layout: dict[str, int] | None = None  # processes, batch size a process, batches an epoch
        self.source: dict[str, Any] | None = None  # where this layout's epoch order comes from (elastic.order_source)
        self.continued: dict[str, Any] | None = None  # an epoch continued on another layout: its source, how far
        self.change: dict[str, Any] | None = None  # the layout's change at this resume (run.json's segment)
        self._rest: Callable[[Iterable[list[int]]], list[list[int]]] | None = None  # this rank's rest of it
        self._saved_layout: dict[str, int] | None = None  # the checkpoint's, on a resume
        self._saved_source: dict[str, Any] | None = None
        self._torch_only = False  # the order is drawn by torch's own samplers: from torch's RNG alone

    @property
    def epoch_rng(self) -> dict[str, Any] | None:
        """The RNG states (global and the loader's generators) right before this epoch's iterator was
        made, as saved in the checkpoint; taken as objects and converted when first asked for."""
        if self._epoch_objects is not None:
            objects, generators = self._epoch_objects
            self._epoch_rng = {**rng_state(objects), "generators": [g.numpy().tobytes() for g in generators]}
            self._epoch_objects = None
        return self._epoch_rng

    @epoch_rng.setter
    def epoch_rng(self, value: dict[str, Any] | None) -> None:
        self._epoch_rng, self._epoch_objects = value, None

    def started(self, trainer: Engine) -> None:
        """Swap the trainer's data for a replayable one (or say once that it cannot be replayed)."""
        data = trainer.state.dataloader
        if isinstance(data, _ReplayableLoader):
            data = data.original
        self.layout = _layout(data)
        self.replayable = is_replayable(data)
        self.source = order_source(data) if isinstance(data, DataLoader) and self.replayable else None
        batch_sampler = getattr(data, "batch_sampler", None)
        self._torch_only = type(batch_sampler) is BatchSampler and type(batch_sampler.sampler) in _TORCH_SAMPLERS
        self._relayout(trainer, data)
        self._loader = None
        self._generators = _generators(data) if isinstance(data, DataLoader) else []
        if self.timer is not None:  # the batches come from Ignite's loop (unless replayed: below)
            self.timer.use_events(trainer, True)
        if not isinstance(data, DataLoader) or not self.replayable:
            if not self._warned:
                logger.warning(
                    "The training data (%s) cannot be replayed mid-epoch (only a DataLoader over a map-style "
                    "dataset can): a resume continues from the last completed epoch.", type(data).__name__
                )
                self._warned = True
            return
        if isinstance(trainer, DeterministicEngine):  # Ignite replays the order; the generators are ours
            saved = self._loaded_generators
            if is_mid_epoch(trainer.state) and self.epoch_rng is not None:
                saved = self.epoch_rng.get("generators", saved)
            self._set_generators(saved)
            sampler = data.batch_sampler
            if isinstance(sampler, BatchSampler) and not isinstance(sampler, ReproducibleBatchSampler):
                trainer.state.dataloader = update_dataloader(data, _EagerReproducibleBatchSampler(sampler))
            return
        self._loader = _ReplayableLoader(data, self)
        self._set_generators(self._loaded_generators)  # resumed: the generators as they were when saved
        trainer.state.dataloader = self._loader
        if self.timer is not None:  # the iterator is ours: the clock needs no GET_BATCH handlers
            self.timer.use_events(trainer, False)

    def epoch_started(self, trainer: Engine) -> None:
        """For a ``DeterministicEngine``: keep the generators' state before this epoch's iterator."""
        if isinstance(trainer, DeterministicEngine) and done_in_epoch(trainer.state) == 0:
            self.epoch_rng = {"generators": _generator_states(self._generators)}
            batch_sampler = getattr(trainer.state.dataloader, "batch_sampler", None)
            if isinstance(batch_sampler, _EagerReproducibleBatchSampler):
                batch_sampler.start_iteration = None  # a new epoch from its first batch
            data = trainer.state.dataloader
            sampler = distributed_sampler(data) if isinstance(data, DataLoader) else None
            if sampler is not None:
                sampler.set_epoch(trainer.state.epoch)

    def _set_generators(self, saved: list[bytes] | None) -> None:
        _set_generator_states(self._generators, saved or [])
        self._loaded_generators = None

    def make_iterator(self, loader: _ReplayableLoader) -> Iterator[Any]:
        """The iterator of the current epoch, skipping the batches this epoch already trained."""
        state = self.trainer.state
        sampler = distributed_sampler(loader.original)
        if sampler is not None:
            sampler.set_epoch(state.epoch)
        done = done_in_epoch(state)
        replay = done > 0 and self.epoch_rng is not None  # a resume mid-epoch: the same order, minus what is done
        workers = loader.loader.num_workers
        rest, self._rest = self._rest, None
        if rest is not None:  # an epoch continued on another layout: its order drawn again, minus what is done
            loader.skipper.rest = rest
        elif self.continued is not None and self.continued["epoch"] != state.epoch:
            self.continued = None  # that epoch is over
        drop = bool(workers) and rest is None
        if replay:
            current = capture_rng()
            restore_rng(self.epoch_rng or {})
            _set_generator_states(self._generators, (self.epoch_rng or {}).get("generators", []))
            # In the process, the batches done are skipped as indices (nothing loaded): the random
            # state a dataset draws from is the checkpoint's. A worker draws from its own, seeded
            # from the loader's base seed and advanced by every sample it loads: so with workers
            # the batches done are loaded again and dropped, and each worker goes on as it did.
            loader.skipper.skip = 0 if drop or rest is not None else done
            if drop:
                self._say_workers_replay(loader.original, done)
        else:
            self._epoch_objects = (capture_rng_objects(torch_only=self._torch_only),
                                   [g.get_state() for g in self._generators])
        # The loader's seed for its workers, then the order: drawn now, in this RNG state, whatever
        # Ignite or the user's handlers do before the first batch.
        iterator = iter(loader.loader)
        if loader.skipper.latest is not None:
            loader.skipper.latest.draw()
        loader.skipper.skip, loader.skipper.rest = 0, None
        if replay and drop:
            for _ in range(done):
                next(iterator)
        if replay:
            restore_rng(current)  # training goes on with the checkpoint's own RNG state
        if self.timer is None:
            return iterator
        sizes = None if rest is not None else _batch_sizes(loader.original, first=done if replay else 0)
        return self.timer.timed(iterator, sizes)

    def _relayout(self, trainer: Engine, data: Any) -> None:
        """At a resume on another data layout, renumber the trainer for the new epoch length and plan the
        rest of the interrupted epoch: its samples not yet trained, each once (:mod:`elastic`); said once."""
        saved, now, self._saved_layout = self._saved_layout, self.layout, None
        continued, self.continued, self.change = self.continued, None, None
        state = trainer.state
        length = state.epoch_length
        if saved is None or now is None or not length or state.max_iters is not None or length != saved["batches"]:
            return  # a new run, data without a layout, or an epoch length of the user's own
        epoch, done = state.iteration // length + 1, state.iteration % length
        if continued is not None and (continued["epoch"] != epoch or not done):
            continued = None
        before, after = saved["processes"] * saved["batch_size"], now["processes"] * now["batch_size"]
        # The steps done can be skipped as steps only where both layouts deal one order alike: several
        # processes' DistributedSamplers of one seed (one process draws with its own sampler, another order).
        kinds = ((self._saved_source or {}).get("kind"), (order_source(data) or {}).get("kind"))
        if continued is None and before == after and now["batches"] == length and (
                saved == now or kinds == ("distributed", "distributed")):
            if saved != now:  # the same global batch on another number of processes: skipped as steps
                logger.info("Resuming with the data laid out anew: %s -> %s. The global batch is the same, so %s.",
                            _steps(saved), _steps(now),
                            f"epoch {epoch} continues with exactly the samples not yet trained" if done else
                            "the epochs are as before")
            return
        rest = self._plan_rest(trainer, data, now, before, after, done, continued)
        if done and rest.why is None:
            self.continued = {"epoch": epoch, "position": rest.trained, "done": rest.new_done, "source": rest.source}
            self._rest = self._dealer(epoch, rest.trained, rest.end, rest.pad, rest.drop_last, rest.steps)
        iteration = (epoch - 1) * now["batches"] + rest.new_done
        offset = int(getattr(state, "iteration_offset", 0)) + state.iteration - iteration
        state.iteration, state.epoch_length = iteration, now["batches"]
        state.iteration_offset = offset  # type: ignore[attr-defined]  # an attribute of monitor's on Ignite's State
        if saved == now or idist.get_rank() != 0:  # (the same layout: an epoch continued earlier goes on)
            return
        self.change = {"from": dict(saved), "to": dict(now), "epoch": epoch, "trained": rest.trained,
                       "exact": rest.why is None, "iteration_offset": offset}
        _say_relayout(saved, now, length, epoch, done, rest, iteration, offset)

    def _plan_rest(self, trainer: Engine, data: Any, now: Mapping[str, Any], before: int, after: int, done: int,
                   continued: Mapping[str, Any] | None) -> _Rest:
        """How the rest of the interrupted epoch (``done`` steps in) is trained on the new layout: its samples
        not yet trained, dealt in ``steps``; or, where that order cannot be drawn again (``why``), the new
        layout's own order from about as far in."""
        source = continued["source"] if continued is not None else self._saved_source
        trained = (continued["position"] + (done - continued["done"]) * before) if continued is not None \
            else done * before  # samples of the epoch's order trained: each step takes the next stretch of it
        rest = _Rest(source=source, trained=trained)
        if not done:
            return rest
        rest.why = ("the trainer is a DeterministicEngine, which replays its own order"
                    if isinstance(trainer, DeterministicEngine) else cannot_draw(source, data))
        if rest.why is None:
            assert source is not None
            rest.end = int(source["size"])
            if source["kind"] == "distributed" and source["drop_last"]:
                rest.end = rest.end // int(source["processes"]) * int(source["processes"])
            rest.left = max(rest.end - trained, 0)
            sampler = distributed_sampler(data)
            rest.pad = sampler is None or not sampler.drop_last
            rest.drop_last = bool(getattr(data.batch_sampler, "drop_last", 0))
            # At most one step fewer than an epoch: the epoch must stay under way (a resume at its step
            # 0 would start its sums anew); the last step then takes what is left.
            rest.steps = min(steps_to_deal(rest.left, now["processes"], now["batch_size"], pad=rest.pad,
                                           drop_last=rest.drop_last), now["batches"] - 1)
            if rest.steps < 1:
                rest.why = "the new layout's epoch is one step" if now["batches"] < 2 else "no sample of it is left"
        if rest.why is None:
            rest.new_done = now["batches"] - rest.steps
        else:  # the new layout's own order of the epoch, from about as far as the old one went (under way)
            rest.new_done = max(1, min(now["batches"] - 1, round(trained / after))) if now["batches"] > 1 else 0
        return rest

    def _dealer(self, epoch: int, trained: int, end: int, pad: bool, drop_last: bool,
                most: int) -> Callable[[Iterable[list[int]]], list[list[int]]]:
        """This rank's batches of the rest of ``epoch``'s order, from the batch sampler (in one process,
        its sampler is drawn again in the RNG state of the epoch's start: the order is the old one)."""
        layout, source = self.layout, (self.continued or {}).get("source")
        assert layout is not None and source is not None

        def rest(batch_sampler: Iterable[list[int]]) -> list[list[int]]:
            sampler = getattr(batch_sampler, "sampler", None)
            if source["kind"] == "distributed":
                order = distributed_order(source, epoch)
            elif sampler is not None and type(sampler).__name__ == source["sampler"]:
                order = list(sampler)
            else:  # one process's RandomSampler, drawn again on another number of them (cannot_draw said so)
                order = sampler_order(source)
            return deal(order[trained:end], layout["processes"], idist.get_rank(), layout["batch_size"],
                        pad=pad, drop_last=drop_last, most=most)
        return rest

    def _say_workers_replay(self, loader: DataLoader[Any], done: int) -> None:
        """Say at resume what the workers' replay costs, and where it cannot be exact."""
        logger.info("Resuming mid-epoch with %d DataLoader workers: loading the %d batches this epoch already "
                    "trained again (not trained on), so that each worker's random state (augmentations) "
                    "is the uninterrupted run's.", loader.num_workers, done)
        if loader.persistent_workers and self.trainer.state.epoch > 1:
            logger.warning(
                "The DataLoader has persistent_workers=True: its workers' random state carries over from earlier "
                "epochs, which a resume cannot replay, so random augmentation in them differs from the "
                "uninterrupted run from here on (persistent_workers=False makes the resume exact).")
        if loader.worker_init_fn is not None:
            logger.info("The DataLoader has a worker_init_fn: the replay is exact if it seeds from the worker's "
                        "seed (torch.initial_seed(), as PyTorch's notes on reproducibility do), not if it seeds "
                        "from the clock or the process id.")

    def state_dict(self) -> OrderedDict[str, Any]:
        if self.replayable is not None:  # started
            generators = _generator_states(self._generators)
        else:  # not started (yet): what was loaded, if anything
            generators = list(self._loaded_generators or [])
        own = {"epoch_rng": self.epoch_rng, "generators": generators}
        state: OrderedDict[str, Any] = OrderedDict(own)
        if self.layout is not None:  # the same on every rank
            state["layout"] = dict(self.layout)
            state["source"], state["continued"] = self.source, self.continued
        offset = int(getattr(self.trainer.state, "iteration_offset", 0))
        if offset:  # see core._position.run_iteration
            state["iteration_offset"] = offset
        if idist.get_world_size() > 1:  # every rank's (its global RNG differs)
            state["ranks"] = [_from_json(s) for s in gather_json(_to_json(own))]
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        ranks = state_dict.get("ranks")
        own = ranks[idist.get_rank()] if ranks is not None and len(ranks) == idist.get_world_size() else state_dict
        self.epoch_rng = own["epoch_rng"]
        self._loaded_generators = list(own["generators"])
        self._saved_layout = state_dict.get("layout")
        self._saved_source, self.continued = state_dict.get("source"), state_dict.get("continued")
        self.trainer.state.iteration_offset = int(state_dict.get("iteration_offset", 0))  # type: ignore[attr-defined]


def attach_data_order(trainer: Engine) -> DataOrder:
    """A :class:`DataOrder` on ``trainer``'s ``STARTED`` (attach it before the checkpoint that saves it)."""
    order = DataOrder(trainer)
    trainer.add_event_handler(Events.STARTED, order.started)
    trainer.add_event_handler(Events.EPOCH_STARTED, order.epoch_started)
    return order

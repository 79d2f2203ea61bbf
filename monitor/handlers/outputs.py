"""TrainOutputs and Throughput: every scalar the training step returns, and how fast it gets its data."""
from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import ignite.distributed as idist
import torch
from ignite.base.mixins import Serializable
from ignite.engine import Engine, Events

from monitor.core._position import done_in_epoch
from monitor.handlers.loss import highest_of
from monitor.handlers.step import StepWork, step_for
from monitor.runtime.distributed import gather_json

__all__ = ["BatchSizes", "TrainOutputs", "Throughput", "attach_train_outputs", "attach_throughput"]


class TrainOutputs(Serializable):
    """The epoch's mean of every scalar in the trainer's output mapping other than ``"loss"``
    (which :class:`~monitor.handlers.loss.TrainLoss` has), e.g. ``{"loss": l, "grad_norm": g}`` gives
    ``train_grad_norm``. Tensors are summed on their device: the one host sync is at :meth:`values`,
    when a history row is written. A tensor of more than one element is left out.

    For the names in ``peaks`` the epoch's highest value is kept too (``train_<name>_max``; NaN
    steps left out, an infinite one kept): a gradient norm that blows up for a few steps shows there
    when the mean hides it. That is one ``torch.fmax`` on the device per step and name. So is the
    run's first step's value (``train_<name>_start``, the same on every row): the reference a blow-up
    in the first epoch is judged against, before there are earlier epochs to compare with.

    Args:
        trainer: the engine whose ``state.output`` is read after each iteration.
        peaks: the output names whose maximum is kept. Default ``("grad_norm",)`` (from
            :func:`~monitor.parts.attach_grad_norm`).

    Examples:
        .. code-block:: python

            outputs = attach_train_outputs(trainer)      # on the *trainer*
            outputs.values()                             # {"train_grad_norm": 1.7}
    """

    _state_dict_all_req_keys = ("sums", "counts")

    def __init__(self, trainer: Engine, *, peaks: Collection[str] = ("grad_norm",)) -> None:
        if not isinstance(trainer, Engine):
            raise TypeError(f"Argument trainer should be an ignite Engine, got {type(trainer).__name__}.")
        if isinstance(peaks, str) or not all(isinstance(name, str) for name in peaks):
            raise TypeError(f"Argument peaks should be a collection of output names (str), got {peaks!r}.")
        self.trainer = trainer
        self.peaks = frozenset(peaks)
        self._sums: dict[str, torch.Tensor | float] = {}
        self._counts: dict[str, int] = {}
        self._maxes: dict[str, torch.Tensor | float] = {}
        self._firsts: dict[str, torch.Tensor | float] = {}  # the run's first step's, for the names in peaks
        self._firsts_known = True  # False after a resume from a checkpoint that did not keep them

    def started(self, _: Engine) -> None:
        if done_in_epoch(self.trainer.state) == 0:  # not a resume going on mid-epoch
            self._sums, self._counts, self._maxes = {}, {}, {}

    def __call__(self, _: Engine) -> None:
        output: Any = self.trainer.state.output
        if not isinstance(output, Mapping) or (len(output) == 1 and "loss" in output):
            return  # nothing but the loss (build_trainer's output: StepWork does not call this for it)
        for name, value in output.items():
            if name == "loss" or not isinstance(name, str):
                continue
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue
                value = value.detach().reshape(())
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self._sums[name] = self._sums.get(name, 0.0) + value
            self._counts[name] = self._counts.get(name, 0) + 1
            if name in self.peaks:
                self._maxes[name] = highest_of(self._maxes.get(name), value)
                if name not in self._firsts and self._firsts_known:
                    self._firsts[name] = value.clone() if isinstance(value, torch.Tensor) else value

    def values(self) -> dict[str, float]:
        """``{"train_<name>": mean over the epoch so far}`` (under idist: over every rank's steps)."""
        names = sorted(self._sums)
        totals = [float(self._sums[n]) for n in names]
        counts = [self._counts[n] for n in names]
        if idist.get_world_size() > 1 and names:
            reduced = idist.all_reduce(torch.tensor([totals, counts], dtype=torch.float64))
            assert isinstance(reduced, torch.Tensor)
            totals, counts = reduced[0].tolist(), [int(c) for c in reduced[1].tolist()]
        values = {f"train_{n}": t / c for n, t, c in zip(names, totals, counts, strict=True) if c}
        peaks = sorted(self._maxes)
        highest = [float(self._maxes[n]) for n in peaks]
        if idist.get_world_size() > 1 and peaks:
            reduced = idist.all_reduce(torch.tensor(highest, dtype=torch.float64).nan_to_num(-math.inf), op="MAX")
            assert isinstance(reduced, torch.Tensor)
            highest = reduced.tolist()
        values.update((f"train_{n}_max", v) for n, v in zip(peaks, highest, strict=True) if v != -math.inf)
        firsts = sorted(self._firsts)
        start = [float(self._firsts[n]) for n in firsts]
        if idist.get_world_size() > 1 and firsts:  # the highest rank's: a blow-up is judged against no less
            reduced = idist.all_reduce(torch.tensor(start, dtype=torch.float64).nan_to_num(-math.inf), op="MAX")
            assert isinstance(reduced, torch.Tensor)
            start = reduced.tolist()
        values.update((f"train_{n}_start", v) for n, v in zip(firsts, start, strict=True) if math.isfinite(v))
        return values

    def state_dict(self) -> OrderedDict[str, Any]:
        # Plain floats (a host sync at saving time only); every rank's, since each sums its own steps.
        state: OrderedDict[str, Any] = OrderedDict(
            sums={n: float(v) for n, v in self._sums.items()}, counts=dict(self._counts),
            maxes={n: float(v) for n, v in self._maxes.items()},
            firsts={n: float(v) for n, v in self._firsts.items()} if self._firsts_known else None,
        )
        if idist.get_world_size() > 1:
            state["ranks"] = gather_json([state["sums"], state["counts"], state["maxes"], state["firsts"]])
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        ranks = state_dict.get("ranks")
        own = ranks[idist.get_rank()] if ranks is not None and len(ranks) == idist.get_world_size() else None
        sums, counts, *rest = own if own is not None else (
            state_dict["sums"], state_dict["counts"], state_dict.get("maxes", {}), state_dict.get("firsts"))
        self._sums = {str(n): float(v) for n, v in sums.items()}
        self._counts = {str(n): int(v) for n, v in counts.items()}
        self._maxes = {str(n): float(v) for n, v in (rest[0] if rest else {}).items()}
        firsts = rest[1] if len(rest) > 1 else None
        # A checkpoint from before the run's first values were kept: a later step is not the first.
        self._firsts_known = firsts is not None
        self._firsts = {str(n): float(v) for n, v in (firsts or {}).items()}


def _batch_size(batch: Any) -> int | None:
    """Samples in a batch: the first dimension of its first tensor (host metadata, no sync)."""
    if type(batch) in (tuple, list) and batch and isinstance(batch[0], torch.Tensor):  # (x, y): the usual
        return int(batch[0].shape[0]) if batch[0].dim() > 0 else None
    while isinstance(batch, (list, tuple, Mapping)) and len(batch):
        batch = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) and batch.dim() > 0 else None


@dataclass(frozen=True)
class BatchSizes:
    """The sizes of an epoch's batches as torch's ``BatchSampler`` makes them: ``size`` samples each but
    the epoch's last (``batches`` of them), which has ``last``; served from the batch at index ``first``.

    >>> BatchSizes(size=16, batches=7, last=4, first=5).samples(2)   # the epoch's last two: 16 + 4
    20
    """

    size: int
    batches: int
    last: int
    first: int = 0

    def samples(self, served: int) -> int:
        """Samples in the ``served`` batches from ``first`` on."""
        short = self.size - self.last if served and self.first + served >= self.batches else 0
        return served * self.size - short

    def at(self, index: int) -> int:
        """Samples in the batch at ``index``."""
        return self.last if index == self.batches - 1 else self.size


class Throughput:
    """Samples per second of training and the share of that time spent waiting for the next batch,
    over the epoch so far, from Ignite's ``GET_BATCH_STARTED`` / ``GET_BATCH_COMPLETED`` events.

    The time counted runs from asking for a batch to the end of its iteration, so validation and
    the end-of-epoch handlers are not in it. Three reads of ``time.monotonic()`` per iteration (the one
    after the step shared with the checkpoint cadence); no device sync (on a GPU the queue of kernels
    makes the per-epoch sums right, not each step).

    Examples:
        .. code-block:: python

            throughput = attach_throughput(trainer)  # on the *trainer*
            throughput.values()                      # {"samples_per_s": 5120.0, "data_wait_frac": 0.04}
    """

    def __init__(self) -> None:
        self.asked = self._waiting = self.busy = 0.0
        self._samples = 0
        self._counted = True  # every batch had a size
        self._sizes: BatchSizes | None = None  # what the sampler says of the batches served since timed()
        self._served = 0  # batches counted by _sizes

    def started(self, trainer: Engine) -> None:
        if done_in_epoch(trainer.state) == 0:
            self._waiting = self.busy = 0.0
            self._samples, self._counted = 0, True
            if self._sizes is not None:  # an iterator that goes on into this epoch (an epoch_length of its own)
                self._sizes = replace(self._sizes, first=self._sizes.first + self._served)
            self._served = 0

    def batch_asked(self, _: Engine) -> None:
        self.asked = time.monotonic()

    def batch_got(self, trainer: Engine) -> None:
        self._waiting += time.monotonic() - self.asked
        self._count(trainer.state.batch)

    def _count(self, batch: Any) -> None:
        self._add(_batch_size(batch))

    def _add(self, size: int | None) -> None:
        if size is None:
            self._counted = False
        else:
            self._samples += size

    def timed(self, batches: Iterator[Any], sizes: BatchSizes | None = None) -> Iterator[Any]:
        """``batches``, each ``next`` timed and its batch counted: the clock of data that monitor
        iterates itself (:class:`~monitor.handlers.data.DataOrder`), without the two ``GET_BATCH``
        handlers, whose dispatch costs more per step than the clock (see :meth:`use_events`). With
        ``sizes`` (torch's batch sampler and collate), a batch is counted by what the sampler says,
        once the first one's size agrees: reading a tensor's shape after the step costs about 8 us."""
        if self._sizes is not None:  # an iterator before this one, in the same epoch
            self._samples += self._sizes.samples(self._served)
        self._sizes, self._served = sizes, 0
        return _TimedBatches(batches, self) if sizes is None else _SizedBatches(batches, self)

    def _read_size(self, batch: Any) -> bool:
        """Count a batch of a :class:`_SizedBatches` by reading it (the first; each one, where the first's
        size was not the sampler's); whether the next must be read too."""
        size = _batch_size(batch)
        sizes = self._sizes
        if sizes is not None and not self._served and size == sizes.at(sizes.first):
            self._served = 1
            return False
        self._sizes = None  # (its first tensor is not the samples stacked: every batch read)
        self._add(size)
        return True

    def use_events(self, trainer: Engine, on: bool) -> None:
        """Time the batches with the ``GET_BATCH`` events (``on``), or not (the data is :meth:`timed`)."""
        for event, handler in ((Events.GET_BATCH_STARTED, self.batch_asked),
                               (Events.GET_BATCH_COMPLETED, self.batch_got)):
            if trainer.has_event_handler(handler, event) != on:
                if on:
                    trainer.add_event_handler(event, handler)
                else:
                    trainer.remove_event_handler(handler, event)

    def iteration_done(self, _: Engine) -> None:
        """The end of a step (what :class:`~monitor.handlers.step.StepWork` does inline for its ``clock``)."""
        self.busy += time.monotonic() - self.asked

    def values(self) -> dict[str, float | None]:
        """``samples_per_s`` (``None`` where batches have no size) and ``data_wait_frac``."""
        if not self.busy:
            return {"samples_per_s": None, "data_wait_frac": None}
        own = self._samples + (self._sizes.samples(self._served) if self._sizes is not None else 0)
        samples = own * idist.get_world_size()  # every rank trains its own share
        return {
            "samples_per_s": round(samples / self.busy, 3) if self._counted else None,
            "data_wait_frac": round(min(1.0, self._waiting / self.busy), 6) if math.isfinite(self._waiting) else None,
        }


class _TimedBatches:
    """An iterator of batches that tells a :class:`Throughput` how long each ``next`` waited."""

    __slots__ = ("_batches", "_throughput")

    def __init__(self, batches: Iterator[Any], throughput: Throughput) -> None:
        self._batches, self._throughput = batches, throughput

    def __iter__(self) -> _TimedBatches:
        return self

    def __next__(self) -> Any:
        # One Python call a step: the clock and the usual batch's size inline (Throughput._count).
        throughput = self._throughput
        throughput.asked = asked = time.monotonic()
        batch = next(self._batches)
        throughput._waiting += time.monotonic() - asked
        first = batch[0] if type(batch) in (tuple, list) and batch else None
        if type(first) is torch.Tensor and (shape := first.shape):  # (x, y): _batch_size's first case
            throughput._samples += shape[0]
        else:
            throughput._count(batch)
        return batch


class _SizedBatches(_TimedBatches):
    """:class:`_TimedBatches` whose batches, after the first, are counted by the sampler's sizes: no
    tensor read a step."""

    __slots__ = ("_read",)

    def __init__(self, batches: Iterator[Any], throughput: Throughput) -> None:
        super().__init__(batches, throughput)
        self._read = True  # the batch is read (the first, and every one where the sizes do not hold)

    def __next__(self) -> Any:
        throughput = self._throughput
        throughput.asked = asked = time.monotonic()
        batch = next(self._batches)
        throughput._waiting += time.monotonic() - asked
        if self._read:
            self._read = throughput._read_size(batch)
        else:
            throughput._served += 1
        return batch


def attach_train_outputs(trainer: Engine, *, step: StepWork | None = None) -> TrainOutputs:
    """A :class:`TrainOutputs` on ``trainer``: reset on ``EPOCH_STARTED``, summed after each step by ``step``
    (one handler for every part's per-step work), or by a StepWork of its own when attached alone."""
    outputs = TrainOutputs(trainer)
    trainer.add_event_handler(Events.EPOCH_STARTED, outputs.started)
    step_for(trainer, step, None, "step").outputs.append(outputs)
    return outputs


def attach_throughput(trainer: Engine, *, step: StepWork | None = None) -> Throughput:
    """A :class:`Throughput` on ``trainer``'s ``EPOCH_STARTED`` and ``GET_BATCH_*``, and after each step in
    ``step`` (or a StepWork of its own when attached alone)."""
    step = step_for(trainer, step, None, "step")
    if step.clock is not None:
        raise ValueError("Argument step already keeps a Throughput's clock: one Throughput a trainer.")
    throughput = Throughput()
    trainer.add_event_handler(Events.EPOCH_STARTED, throughput.started)
    throughput.use_events(trainer, True)  # until a DataOrder times the batches itself
    step.clock = throughput  # its busy clock, read after each step by the step's one handler
    return throughput

"""TrainLoss: the epoch's mean training loss, kept on the device, and a stop on a non-finite loss."""
from __future__ import annotations

import logging
import math
import numbers
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import ignite.distributed as idist
import torch
from ignite.base.mixins import Serializable
from ignite.engine import Engine, Events

from monitor.core._position import done_in_epoch, run_iteration
from monitor.core.status import StopReason, parse_reason, reason_value
from monitor.handlers.step import StepWork, step_for
from monitor.runtime.distributed import gather_json

__all__ = ["TrainLoss", "attach_train_loss", "loss_from_output", "highest_of"]

logger = logging.getLogger(__name__)

_FOLD_EVERY = 64  # steps whose losses (tensors or numbers) wait in a list at most before they are summed


def loss_from_output(output: Any) -> torch.Tensor | float:
    """The loss in ``trainer.state.output``: ``output["loss"]`` for a mapping, else the output itself."""
    if type(output) is dict:  # build_trainer's: no ABC checks
        found = output.get("loss")
        if type(found) is float or type(found) is torch.Tensor:
            return found
    if isinstance(output, Mapping) and "loss" not in output:
        raise KeyError(
            "trainer.state.output should hold the loss under 'loss'; got a mapping with keys "
            f"{sorted(map(str, output))}. Return {{'loss': loss, ...}} from the training step, or the loss itself."
        )
    loss = output["loss"] if isinstance(output, Mapping) else output
    if not isinstance(loss, (torch.Tensor, numbers.Number)):
        raise TypeError(
            f"trainer.state.output should be a loss (tensor or number) or a mapping with key 'loss', got {output!r}."
        )
    return loss if isinstance(loss, torch.Tensor) else float(loss)  # type: ignore[arg-type]


def highest_of(highest: torch.Tensor | float | None, value: torch.Tensor | float) -> torch.Tensor | float:
    """The larger of a running maximum and a step's value, a NaN left out (``torch.fmax``), on the
    value's device: no host sync. ``highest`` is ``None`` before the first step."""
    if highest is None:
        return value
    if isinstance(value, torch.Tensor) and isinstance(highest, torch.Tensor):  # the usual: one op
        return torch.fmax(highest, value)
    if isinstance(value, torch.Tensor) or isinstance(highest, torch.Tensor):
        value = torch.as_tensor(value)
        return torch.fmax(torch.as_tensor(highest, dtype=value.dtype, device=value.device), value)
    return value if math.isnan(highest) or value > highest else highest


class TrainLoss(Serializable):
    """Sum of the training losses of the current epoch, accumulated on their device.

    Ignite's ``TerminateOnNan`` is not used: it moves the loss to the host on every iteration (a device
    sync), adds a ``StreamHandler`` to a logger it configures itself, and records no stop reason.
    Here the loss is summed on its device and checked only on the iterations where it is looked at
    anyway (``check_every``) and at the end of each epoch: a NaN/inf anywhere makes the sum non-finite.

    The epoch's highest step loss is kept too (found where the steps are summed, on the device for
    tensors; NaN steps left out), and :attr:`spike` is it as a multiple of the run's first step loss (read once): how
    far above its start the loss went. An untrained network's loss hardly depends on the batch
    (about ``log(classes)`` for a classifier), so a healthy run stays at or below 1-2; a loss that
    blows up for a few steps shows there even when the epoch's mean hides it (see
    :mod:`monitor.diagnosis`). Under idist a step's loss is each rank's share's, so the highest is
    that of a share: at least the one-process run's.

    Args:
        trainer: the engine whose output holds the loss (see :func:`~monitor.handlers.loss.loss_from_output`).
        output_transform: picks the loss out of ``trainer.state.output``.

    Examples:
        .. code-block:: python

            train_loss = attach_train_loss(trainer, check_every=10)   # on the *trainer*
            train_loss.epoch_mean                                     # after EPOCH_COMPLETED
    """

    _state_dict_all_req_keys = ("stop_reason",)  # and, since mid-epoch checkpoints, "sum" and "count"
    read_cpu_as_numbers = True  # CPU losses are summed as Python floats at the fold (no tensor op)
    fold_every = _FOLD_EVERY  # inline numbers waiting before a StepWork has them summed (see check)

    def __init__(
        self, trainer: Engine, output_transform: Callable[[Any], torch.Tensor | float] = loss_from_output
    ) -> None:
        self.trainer = trainer
        self.output_transform = output_transform
        self.stop_reason: StopReason | None = None
        self.epoch_mean: float | None = None
        self._sum: torch.Tensor | float = 0.0
        self._count = 0
        self._read: tuple[float, int] | None = None  # the running total and count, as read since the last sum
        self._max: torch.Tensor | float | None = None  # the epoch's highest step loss, on its device
        self._pending: list[torch.Tensor] = []  # the loss tensors of the steps not yet folded in
        self._numbers: list[float] = []  # the losses of the steps not yet folded in that are numbers
        self._plain = output_transform is loss_from_output
        # _numbers, once a StepWork may append build_trainer's finite float losses to it inline (see _open)
        self.inline: list[float] | None = None
        self.inline_ok = False  # set by attach_train_loss: its checks fold the list often enough
        self._check_due = False  # a step since the last check was not inline: its loss is yet to be checked
        self._copy = False  # each step's loss tensor is copied (the step returns one tensor changed in place)
        self._last_read: tuple[torch.Tensor, float] | None = None  # the last tensor read as a number, and its value
        self._first: float | None = None  # the run's first step loss
        self._recent: list[Any] | None = None
        self._world = idist.get_world_size()  # read again at each epoch's start (idist may start later)

    @property
    def recent(self) -> list[Any] | None:
        """Each step's loss (a number, or a tensor off the host), kept for a reader that drains it
        (Recovery's judgement every log_every steps) once one sets it to a list; ``None``: kept for nobody."""
        return self._recent

    @recent.setter
    def recent(self, steps: list[Any] | None) -> None:
        self._recent = steps
        self._open()

    def _open(self) -> None:
        """Let a StepWork append a step's finite float loss inline (``inline``), and leave the check out
        while only such steps come, where that is all a step asks: the default transform, a first loss
        read, nobody keeping each step's loss, checks that fold, one process (whose check is no
        collective that every rank must join), no step since the last check that was not inline."""
        fits = (self.inline_ok and self._plain and self._first is not None and self._recent is None
                and self._world == 1 and not self._check_due)
        self.inline = self._numbers if fits else None

    def started(self, _: Engine) -> None:
        """A new epoch: start summing again (not when a resume goes on mid-epoch with its saved sum)."""
        self._world = idist.get_world_size()
        if done_in_epoch(self.trainer.state) == 0:
            self._sum, self._count, self._read = 0.0, 0, None
            self._max, self._pending = None, []
            self._numbers.clear()  # (in place: the list StepWork appends to)
        self._open()

    def __call__(self, _: Engine) -> None:
        # build_trainer's output on the CPU, {"loss": float}, only joins a list: summed with the others at
        # the check every log_every steps (_fold), as numbers. Every other output takes _take. Either way
        # this step's loss is for the next check (a StepWork's inline steps leave it out otherwise).
        self._check_due, self.inline = True, None
        output: Any = self.trainer.state.output
        if type(output) is dict and self._plain and "skipped" not in output:
            loss = output.get("loss")
            if type(loss) is float and self._first is not None:
                numbers = self._numbers
                numbers.append(loss)
                if self._recent is not None:
                    self._recent.append(loss)
                if len(numbers) >= _FOLD_EVERY:
                    self._fold()
                return
        self._take(output)

    def _take(self, output: Any) -> None:
        # A tensor joins a list, summed every few steps (_fold: at the check every log_every steps, at
        # every read): no tensor op per step (after the step's own work one finds torch's code out of the
        # caches, about 3 us of CPU each) and no host sync. Type tests before isinstance: 30 against 160 ns.
        loss: Any
        if type(output) is dict:
            if output.get("skipped"):  # a step SkipStep left out: not trained, not counted
                if self._recent is not None:
                    self._recent.append(None)
                return
            loss = output.get("loss")  # build_trainer's: loss_from_output's first cases, without the call
            if (type(loss) is not float and type(loss) is not torch.Tensor) or not self._plain:
                loss = self.output_transform(output)
        else:
            loss = self.output_transform(output)
        if type(loss) is not float and isinstance(loss, torch.Tensor):
            if self._copy:  # the step hands back one tensor it changes in place: keep each step's value
                loss = loss.detach().clone()
            self._pending.append(loss)
            if len(self._pending) >= _FOLD_EVERY:
                self._fold()
        else:
            self._numbers.append(loss)
            if len(self._numbers) >= _FOLD_EVERY:
                self._fold()
        if self._recent is not None:
            self._recent.append(loss)
        if self._first is None:  # the loss the run started from: one host read, once (every rank's mean)
            first = float(loss)
            self._first = first if idist.get_world_size() == 1 else float(idist.all_reduce(first)) / (
                idist.get_world_size())
            self._open()

    def _fold(self) -> None:
        """Add the pending steps' losses to the epoch's sum and highest: numbers and CPU scalars summed in
        order as numbers, other tensors on their device."""
        numbers, pending = self._numbers, self._pending
        if not numbers and not pending:
            return
        self._read = None  # steps since the last read
        if numbers:
            values = numbers[:]
            del numbers[:]  # (in place: the list StepWork appends to)
            self._add_numbers(values)
        if not pending:
            return
        self._pending = []
        # (every test here is on a few tensors, not all: each Python op on a tensor costs about 1 us here)
        if len(pending) > 1 and not self._copy and (pending[-1] is pending[-2] or pending[0] is pending[-1]):
            self._copy = True  # from now on each step's loss is copied as it comes
            logger.warning(
                "The training step returned the same loss tensor object at several of the last %d steps. Each "
                "was counted with the tensor's value now: if the step changes it in place, epoch %d's training "
                "loss is off by their earlier values. From here each step's loss is copied (a tensor copy a "
                "step); returning a new tensor each step (e.g. loss.detach()) avoids both.",
                len(pending), self.trainer.state.epoch)
        if self.read_cpu_as_numbers and pending[0].is_cpu:
            try:
                values = [loss.item() for loss in pending]  # (an integer loss too)
            except RuntimeError:  # a loss of several elements: summed as a tensor below
                values = []
            if values:
                self._add_numbers(values)
                self._last_read = (pending[-1], float(values[-1]))
                return
        self._count += len(pending)
        with torch.no_grad():
            try:
                stacked = torch.stack(pending).reshape(-1)
            except RuntimeError:  # steps of other shapes, dtypes or devices: one at a time
                stacked = torch.stack([torch.as_tensor(x, device=pending[0].device).reshape(())
                                       .to(pending[0].dtype) for x in pending])
            self._sum = self._sum + stacked.sum()
            highest = stacked.nan_to_num(nan=-math.inf, posinf=math.inf).amax()  # NaN steps left out
            self._max = highest_of(self._max, highest)

    def _add_numbers(self, values: list[Any]) -> None:
        """Steps' losses read as numbers: counted, summed in order, the highest kept (NaN steps left out)."""
        # A loop of float additions and comparisons, the interpreter's own (as sum() adds, in order):
        # sum() and max(), whose C code is out of the caches after the step's work, cost more here.
        total, top = self._sum, None
        for value in values:
            total = total + value
            if value == value and (top is None or value > top):
                top = value
        self._count += len(values)
        self._sum = total
        if top is not None and (self._max is None or not top <= self._max):
            self._max = highest_of(self._max, top)

    def as_number(self, loss: torch.Tensor | float) -> float:
        """``loss`` (a step's, as its output holds it) as a number: the value read when the steps were
        last summed if it is the last of them (TensorBoard's ``train/loss`` point, right after the
        check), else read now."""
        last = self._last_read
        return last[1] if last is not None and last[0] is loss else float(loss)

    def running_mean(self) -> float | None:
        """The mean loss of the epoch so far (a host sync; under idist, over every rank's steps, the
        same on each): what a validation within the epoch shows; at the epoch's end, ``epoch_mean``.
        Read once per step summed: the check and the history row at an epoch's end share it."""
        total, count = self._totals()
        return total / count if count else None

    def _totals(self) -> tuple[float, int]:
        self._fold()  # (steps since the last read make it None)
        if self._read is None:
            total, count = float(self._sum), self._count
            if idist.get_world_size() > 1:
                total, count = float(idist.all_reduce(total)), int(idist.all_reduce(count))
            self._read = (total, count)
        return self._read

    @property
    def spike(self) -> float | None:
        """The epoch's highest step loss over the run's first (a host sync; under idist, the highest
        of every rank's steps): ``None`` before a step, or where the first loss was not above 0."""
        self._fold()
        if self._max is None or self._first is None or not self._first > 0:
            return None
        highest = float(self._max)
        if highest == -math.inf:  # every step NaN
            highest = math.nan
        if idist.get_world_size() > 1:
            highest = float(idist.all_reduce(highest, op="MAX"))
        return highest / self._first

    @property
    def start(self) -> float | None:
        """The run's first step loss, which the diagnosis compares a loss that sits far above it with
        (under idist every rank's mean, the same on each; ``None`` before a step)."""
        return self._first

    def check(self, _: Engine) -> None:
        """Stop the trainer if the epoch's loss is not finite; the one host sync."""
        self._check_due = False
        self._open()
        self._fold()
        if type(self._sum) is float and self._world == 1:  # CPU losses: a division
            self.epoch_mean = self._sum / self._count if self._count else None
        else:
            self.epoch_mean = self.running_mean()  # non-finite exactly when the sum is (there is a step in it)
        mean = self.epoch_mean  # (finite: between the infinities; a comparison, not math.isfinite's call)
        if mean is not None and not -math.inf < mean < math.inf and self.stop_reason is None:
            self.stop_reason = StopReason.NONFINITE_LOSS
            logger.warning(
                "Training loss is not finite (epoch %d, iteration %d); stopping.",
                self.trainer.state.epoch,
                run_iteration(self.trainer.state),
            )
            self.trainer.terminate()

    def state_dict(self) -> OrderedDict[str, Any]:
        # The epoch's running sum, for a checkpoint mid-epoch (one host sync, at saving time only);
        # every rank's, since each sums its own share of the batches.
        self._fold()
        state: OrderedDict[str, Any] = OrderedDict(
            stop_reason=reason_value(self.stop_reason), sum=float(self._sum), count=self._count,
            highest=None if self._max is None else float(self._max), first=self._first,
        )
        if idist.get_world_size() > 1:
            state["ranks"] = gather_json([state["sum"], state["count"], state["highest"]])  # first: the same on each
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stop_reason = parse_reason(state_dict["stop_reason"])
        ranks = state_dict.get("ranks")
        own = ranks[idist.get_rank()] if ranks is not None and len(ranks) == idist.get_world_size() else None
        total, count, highest = [*own, None][:3] if own is not None else (
            state_dict.get("sum", 0.0), state_dict.get("count", 0), state_dict.get("highest"))
        first = state_dict.get("first")
        self._sum, self._count, self._read, self._pending = float(total), int(count), None, []
        self._numbers.clear()
        # (checkpoints from before the spike have neither: the first loss is then read again)
        self._max = None if highest is None else float(highest)
        self._first = None if first is None else float(first)
        self._open()


def attach_train_loss(
    trainer: Engine,
    *,
    check_every: int | None = None,
    output_transform: Callable[[Any], torch.Tensor | float] = loss_from_output,
    step: StepWork | None = None,
) -> TrainLoss:
    """Attach :class:`TrainLoss` to ``trainer``: sum every iteration, check every ``check_every``
    iterations (default 10) and at each epoch's end (before any other ``EPOCH_COMPLETED`` handler
    attached later). Its per-step work joins ``step`` (whose ``log_every`` is then the cadence), or a
    :class:`~monitor.handlers.step.StepWork` of its own when attached alone.
    """
    step = step_for(trainer, step, check_every, "check_every")
    tracker = TrainLoss(trainer, output_transform)
    trainer.add_event_handler(Events.EPOCH_STARTED, tracker.started)
    if step.loss is not None:
        raise ValueError("Argument step already sums a TrainLoss: one training loss a trainer.")
    step.loss = tracker  # its float losses appended inline, once it opens its list; its check every log_every
    tracker.inline_ok = step.log_every <= _FOLD_EVERY  # the step has them summed every log_every steps at least
    trainer.add_event_handler(Events.EPOCH_COMPLETED, tracker.check)
    return tracker

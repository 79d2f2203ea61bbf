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

from monitor._checks import positive_int
from monitor._position import done_in_epoch
from monitor.distributed import gather_json
from monitor.status import StopReason, parse_reason, reason_value

__all__ = ["TrainLoss", "attach_train_loss", "loss_from_output"]

logger = logging.getLogger(__name__)


def loss_from_output(output: Any) -> torch.Tensor | float:
    """The loss in ``trainer.state.output``: ``output["loss"]`` for a mapping, else the output itself."""
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


class TrainLoss(Serializable):
    """Sum of the training losses of the current epoch, accumulated on their device.

    Ignite's ``TerminateOnNan`` is not used: it moves the loss to the host on every iteration (a device
    sync), adds a ``StreamHandler`` to a logger it configures itself, and records no stop reason.
    Here the loss is summed on its device and checked only on the iterations where it is looked at
    anyway (``check_every``) and at the end of each epoch: a NaN/inf anywhere makes the sum non-finite.

    Args:
        trainer: the engine whose output holds the loss (see :func:`loss_from_output`).
        output_transform: picks the loss out of ``trainer.state.output``.

    Examples:
        .. code-block:: python

            train_loss = attach_train_loss(trainer, check_every=10)   # on the *trainer*
            train_loss.epoch_mean                                     # after EPOCH_COMPLETED
    """

    _state_dict_all_req_keys = ("stop_reason",)  # and, since mid-epoch checkpoints, "sum" and "count"

    def __init__(
        self, trainer: Engine, output_transform: Callable[[Any], torch.Tensor | float] = loss_from_output
    ) -> None:
        self.trainer = trainer
        self.output_transform = output_transform
        self.stop_reason: StopReason | None = None
        self.epoch_mean: float | None = None
        self._sum: torch.Tensor | float = 0.0
        self._count = 0
        self._mean: tuple[float | None] | None = None  # the running mean, read since the last loss was summed

    def started(self, _: Engine) -> None:
        """A new epoch: start summing again (not when a resume goes on mid-epoch with its saved sum)."""
        if done_in_epoch(self.trainer.state) == 0:
            self._sum, self._count, self._mean = 0.0, 0, None

    def __call__(self, _: Engine) -> None:
        loss = self.output_transform(self.trainer.state.output)
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        self._sum = self._sum + loss
        self._count += 1
        self._mean = None

    def running_mean(self) -> float | None:
        """The mean loss of the epoch so far (a host sync; under idist, over every rank's steps, the
        same on each): what a validation within the epoch shows; at the epoch's end, :attr:`epoch_mean`.
        Read once per step summed: the check and the history row at an epoch's end share it."""
        if self._mean is None:
            total, count = float(self._sum), self._count
            if idist.get_world_size() > 1:
                total, count = float(idist.all_reduce(total)), int(idist.all_reduce(count))
            self._mean = (total / count if count else None,)
        return self._mean[0]

    def check(self, _: Engine) -> None:
        """Stop the trainer if the epoch's loss is not finite; the one host sync."""
        self.epoch_mean = self.running_mean()  # non-finite exactly when the sum is (there is a step in it)
        if self.epoch_mean is not None and not math.isfinite(self.epoch_mean) and self.stop_reason is None:
            self.stop_reason = StopReason.NONFINITE_LOSS
            logger.warning(
                "Training loss is not finite (epoch %d, iteration %d); stopping.",
                self.trainer.state.epoch,
                self.trainer.state.iteration,
            )
            self.trainer.terminate()

    def state_dict(self) -> OrderedDict[str, Any]:
        # The epoch's running sum, for a checkpoint mid-epoch (one host sync, at saving time only);
        # every rank's, since each sums its own share of the batches.
        state: OrderedDict[str, Any] = OrderedDict(
            stop_reason=reason_value(self.stop_reason), sum=float(self._sum), count=self._count
        )
        if idist.get_world_size() > 1:
            state["ranks"] = gather_json([state["sum"], state["count"]])
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stop_reason = parse_reason(state_dict["stop_reason"])
        ranks = state_dict.get("ranks")
        own = ranks[idist.get_rank()] if ranks is not None and len(ranks) == idist.get_world_size() else None
        total, count = own if own is not None else (state_dict.get("sum", 0.0), state_dict.get("count", 0))
        self._sum, self._count, self._mean = float(total), int(count), None


def attach_train_loss(
    trainer: Engine,
    *,
    check_every: int = 10,
    output_transform: Callable[[Any], torch.Tensor | float] = loss_from_output,
) -> TrainLoss:
    """Attach :class:`TrainLoss` to ``trainer``: sum every iteration, check every ``check_every``
    iterations and at each epoch's end (before any other ``EPOCH_COMPLETED`` handler attached later).
    """
    positive_int("check_every", check_every)
    tracker = TrainLoss(trainer, output_transform)
    trainer.add_event_handler(Events.EPOCH_STARTED, tracker.started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, tracker)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=check_every), tracker.check)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, tracker.check)
    return tracker

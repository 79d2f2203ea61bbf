"""GracefulStop: a stop request (SIGTERM, SIGINT, a time limit) ends training at the next safe point."""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

import ignite.distributed as idist
from ignite.engine import Engine, Events

from monitor.core._position import is_last_of_epoch
from monitor.core.status import StopReason
from monitor.handlers.step import StepWork, step_for

__all__ = ["GracefulStop", "attach_graceful_stop", "attach_time_limit"]

logger = logging.getLogger(__name__)

_CODES = {None: 0, StopReason.INTERRUPTED: 1, StopReason.TIME_LIMIT: 2}  # all-reduced with MAX
_REASONS = {code: reason for reason, code in _CODES.items()}


class GracefulStop:
    """While ``trainer`` runs, the first SIGTERM or SIGINT (Ctrl-C), or :meth:`request` (a time limit),
    stops training after the current iteration, so the files stay whole, a checkpoint is written at
    that iteration, and the run is recorded as interrupted; a second signal stops at once
    (``KeyboardInterrupt``). Signals within ``same_within`` seconds of the first count as the same
    request: one event often sends several (Ctrl-C reaches a launcher and its workers, which the
    launcher then also terminates; a dying launcher's workers get a parent-death signal; a scheduler
    signals every process of a job).

    The stop comes at a safe point: after an iteration, except the last of an epoch, where the
    epoch's own work (validation, history row, checkpoint) runs first. Under ``ignite.distributed`` a
    request may reach one process only, or each at another iteration (when the launcher dies,
    torch's spawn sends each rank SIGINT); stopping one rank alone would leave the others waiting in
    a collective. So there the ranks all-reduce the request every ``agree_every`` iterations and at
    each epoch end (:meth:`honour`): all stop at the same iteration, at most ``agree_every``
    iterations after the first request.

    The previous signal handlers are put back when training ends. Signals can only be caught in the
    main thread; elsewhere only :meth:`request` works.

    Examples:
        .. code-block:: python

            stop = attach_graceful_stop(trainer)   # on the *trainer*: STARTED installs, COMPLETED removes
            trainer.run(loader, max_epochs=100)
            stop.reason                            # StopReason.INTERRUPTED, or None
    """

    def __init__(
        self,
        trainer: Engine,
        signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT),
        *,
        same_within: float = 2.0,
    ) -> None:
        self.trainer = trainer
        self.signals = signals
        self.same_within = same_within
        self.received: int | None = None  # the signal, on the rank that got it
        self.reason: StopReason | None = None  # the request, on every rank once they agreed
        self._requested: StopReason | None = None  # this rank's own request, not yet agreed
        self._received_at = -math.inf
        self._previous: dict[int, Any] = {}
        self._distributed = idist.get_world_size() > 1  # read once: it is not free (about 1 us)
        # Called at the first request: puts honour on the step's work (one process), so that a run
        # nobody stops makes no call a step for it.
        self.arm: Callable[[], None] | None = None

    def install(self, _: Engine | None = None) -> None:
        self.received, self.reason, self._requested, self._received_at = None, None, None, -math.inf
        self._distributed = idist.get_world_size() > 1
        if self._distributed and self.arm is not None:  # attached before idist started: every rank must agree
            self.arm()
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self, _: Engine | None = None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def request(self, reason: StopReason) -> None:
        """Ask for a stop at the next safe point (the first request's reason is kept)."""
        if self._requested is None:
            self._requested = reason
            if self.arm is not None:
                self.arm()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if now - self._received_at < self.same_within:
            logger.info("Received %s again within %.1f s: the same stop request.", signal.Signals(signum).name,
                        self.same_within)
            return
        if self.received is not None:
            self.uninstall()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.received, self._received_at = signum, now
        distributed = idist.get_world_size() > 1
        logger.warning(
            "Received %s: finishing the current iteration%s, then stopping (send it again to stop at once).",
            signal.Signals(signum).name, " and agreeing on the stop with the other processes" if distributed else "",
        )
        self.request(StopReason.INTERRUPTED)

    def honour(self, engine: Engine) -> None:
        """Stop the trainer here if a stop was requested (on any rank) and this is a safe point."""
        if self._distributed:
            code = int(idist.all_reduce(_CODES[self._requested], op="MAX"))
            self._requested = self._requested or _REASONS[code]
        if self._requested is None or engine.should_terminate:
            return
        at_epoch_end = engine.last_event_name == Events.EPOCH_COMPLETED
        if at_epoch_end or not is_last_of_epoch(engine.state):
            self.reason = self._requested
            engine.terminate()


def attach_graceful_stop(
    trainer: Engine, *, agree_every: int | None = None, step: StepWork | None = None
) -> GracefulStop:
    """Attach a :class:`GracefulStop` to ``trainer``: installed on ``STARTED``, removed on ``COMPLETED``,
    honoured after each iteration and epoch (attach it after the handlers that must run before a
    stop); under ``ignite.distributed`` the ranks agree every ``agree_every`` iterations (default 10)
    and at each epoch end. The check after each iteration joins ``step`` (whose ``log_every`` is then
    the cadence), or a :class:`~monitor.handlers.step.StepWork` of its own when attached alone."""
    step = step_for(trainer, step, agree_every, "agree_every")
    stop = GracefulStop(trainer)
    trainer.add_event_handler(Events.STARTED, stop.install)
    trainer.add_event_handler(Events.COMPLETED, stop.uninstall)
    distributed = idist.get_world_size() > 1
    if distributed:  # the ranks agree every log_every steps, whoever was asked
        step.every_log.append(stop.honour)
    else:  # a signal's handler or the time limit arms it, from the step it comes in on
        def arm() -> None:
            if stop.honour not in step.last:
                step.last.append(stop.honour)

        stop.arm = arm
    trainer.add_event_handler(Events.EPOCH_COMPLETED, stop.honour)
    return stop


class _Clock(Protocol):
    @property
    def elapsed_s(self) -> float: ...


def attach_time_limit(
    trainer: Engine, stop: GracefulStop, *, clock: _Clock, max_time_s: float, step: StepWork | None = None
) -> None:
    """Request a stop (``time_limit``) from ``stop`` once ``clock.elapsed_s`` (training time over all
    segments, e.g. a :class:`~monitor.HistoryRecorder`) reaches ``max_time_s``; checked after each
    iteration (a clock read). Unlike Ignite's ``TimeLimit`` the run is not finished: it is resumable.
    """

    def check(_: Engine) -> None:
        if clock.elapsed_s >= max_time_s:
            stop.request(StopReason.TIME_LIMIT)

    step_for(trainer, step, None, "step").last.append(check)

"""GracefulStop: SIGTERM / SIGINT finish the current iteration and stop training cleanly."""
from __future__ import annotations

import logging
import math
import signal
import threading
import time
from types import FrameType
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events

from monitor._checks import positive_int

__all__ = ["GracefulStop", "attach_graceful_stop"]

logger = logging.getLogger(__name__)


class GracefulStop:
    """While ``trainer`` runs, the first SIGTERM or SIGINT (Ctrl-C) asks it to stop after the current
    iteration (``trainer.terminate()``), so the files stay whole and the run is recorded as
    interrupted; a second one stops at once (``KeyboardInterrupt``). Signals within ``same_within``
    seconds of the first count as the same request: one event often sends several (Ctrl-C reaches a
    launcher and its workers, which the launcher then also terminates; a dying launcher's workers get
    a parent-death signal; a scheduler signals every process of a job).

    The previous signal handlers are put back when training ends. Signals can only be caught in the
    main thread; elsewhere this does nothing.

    Under ``ignite.distributed`` a signal may reach one process only, or each at another iteration
    (when the launcher dies, torch's spawn sends each rank SIGINT). Stopping one rank alone would
    leave the others waiting in a collective. So the handler only notes the signal, and every
    ``agree_every`` iterations and at each epoch end (:meth:`agree`) the ranks all-reduce it: all
    stop at the same iteration, at most ``agree_every`` iterations after the first signal.

    Examples:
        .. code-block:: python

            stop = attach_graceful_stop(trainer)   # on the *trainer*: STARTED installs, COMPLETED removes
            trainer.run(loader, max_epochs=100)
            stop.received                          # signal.SIGTERM, or None
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
        self.received: int | None = None  # on every rank once they agreed to stop
        self._received_at = -math.inf  # monotonic time of the first signal
        self._previous: dict[int, Any] = {}

    def install(self, _: Engine | None = None) -> None:
        self.received, self._received_at = None, -math.inf
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self, _: Engine | None = None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._received_at > -math.inf and now - self._received_at < self.same_within:
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
        if not distributed:
            self.trainer.terminate()

    def agree(self, _: Engine | None = None) -> None:
        """Under ``ignite.distributed``: if any rank got a signal, every rank stops after this iteration.

        One all-reduce of one number; call it at the same iterations on every rank.
        """
        if idist.get_world_size() == 1:
            return
        signum = int(idist.all_reduce(self.received or 0, op="MAX"))
        if signum and not self.trainer.should_terminate:
            self.received = self.received or signum
            self.trainer.terminate()


def attach_graceful_stop(trainer: Engine, *, agree_every: int = 10) -> GracefulStop:
    """Attach a :class:`GracefulStop` to ``trainer``: installed on ``STARTED``, removed on ``COMPLETED``;
    under ``ignite.distributed`` the ranks agree every ``agree_every`` iterations and at each epoch end."""
    positive_int("agree_every", agree_every)
    stop = GracefulStop(trainer)
    trainer.add_event_handler(Events.STARTED, stop.install)
    trainer.add_event_handler(Events.COMPLETED, stop.uninstall)
    if idist.get_world_size() > 1:
        trainer.add_event_handler(Events.ITERATION_COMPLETED(every=agree_every), stop.agree)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, stop.agree)
    return stop

"""GracefulStop: SIGTERM / SIGINT finish the current iteration and stop training cleanly."""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["GracefulStop", "attach_graceful_stop"]

logger = logging.getLogger(__name__)


class GracefulStop:
    """While ``trainer`` runs, the first SIGTERM or SIGINT (Ctrl-C) asks it to stop after the current
    iteration (``trainer.terminate()``), so the files stay whole and the run is recorded as
    interrupted; a second one stops at once (``KeyboardInterrupt``).

    The previous signal handlers are put back when training ends. Signals can only be caught in the
    main thread; elsewhere this does nothing.

    Examples:
        .. code-block:: python

            stop = attach_graceful_stop(trainer)   # on the *trainer*: STARTED installs, COMPLETED removes
            trainer.run(loader, max_epochs=100)
            stop.received                          # signal.SIGTERM, or None
    """

    def __init__(self, trainer: Engine, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.trainer = trainer
        self.signals = signals
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self, _: Engine | None = None) -> None:
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def uninstall(self, _: Engine | None = None) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:
            self.uninstall()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping at once")
        self.received = signum
        logger.warning(
            "Received %s: finishing the current iteration, then stopping (send it again to stop at once).",
            signal.Signals(signum).name,
        )
        self.trainer.terminate()


def attach_graceful_stop(trainer: Engine) -> GracefulStop:
    """Attach a :class:`GracefulStop` to ``trainer``: installed on ``STARTED``, removed on ``COMPLETED``."""
    stop = GracefulStop(trainer)
    trainer.add_event_handler(Events.STARTED, stop.install)
    trainer.add_event_handler(Events.COMPLETED, stop.uninstall)
    return stop

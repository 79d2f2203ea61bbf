"""Where monitor's log lines go when the user has not configured logging: to the console.

Lightning's convention (``lightning/pytorch/__init__.py``): a library logs through its own logger and,
only when the root logger has no handler, gives that logger a console handler of its own. Here that is
done when a run is attached (not at import, so logging configured after ``import monitor`` still
wins) and undone when the run is closed; the handler also stands aside as soon as the root logger gets
a handler, so a user's own configuration never prints a line twice.
"""
from __future__ import annotations

import logging
import sys

__all__ = ["ConsoleLog", "LOGGER_NAME"]

LOGGER_NAME = "monitor"


class _UnlessConfigured(logging.Filter):
    """Passes records only while the root logger has no handler (the user has configured none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


class ConsoleLog:
    """monitor's INFO lines (the epoch table, the stop line, warnings) on ``sys.stderr`` while no logging
    is configured, and Ignite's own INFO chatter ("Engine run starting...") kept quiet unless the user
    set a level for the ``ignite`` logger. Shared by the runs of a process: the first to start installs
    it, the last to close removes it (two runs at once print each line once).

    Examples:
        .. code-block:: python

            console = ConsoleLog()
            console.install()      # at attach_monitoring
            ...
            console.remove()       # at Monitor.close
    """

    _users = 0  # runs of this process that installed it and have not removed it
    _handler: logging.Handler | None = None
    _set_levels: list[logging.Logger] = []

    def __init__(self) -> None:
        self._installed = False

    def install(self) -> None:
        """Give the ``monitor`` logger a console handler and the INFO level, if nobody configured them."""
        if self._installed:
            return
        self._installed = True
        ConsoleLog._users += 1
        if ConsoleLog._users > 1:
            return
        ignite = logging.getLogger("ignite")
        if ignite.level == logging.NOTSET:  # the user chose no level for Ignite: its run lines stay quiet
            ignite.setLevel(logging.WARNING)
            ConsoleLog._set_levels.append(ignite)
        log = logging.getLogger(LOGGER_NAME)
        if logging.getLogger().handlers or log.handlers:
            return  # the user's configuration wins
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
            ConsoleLog._set_levels.append(log)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_UnlessConfigured())
        log.addHandler(handler)
        ConsoleLog._handler = handler

    def remove(self) -> None:
        """Undo :meth:`install` once the last run using it is closed (idempotent)."""
        if not self._installed:
            return
        self._installed = False
        ConsoleLog._users -= 1
        if ConsoleLog._users > 0:
            return
        if ConsoleLog._handler is not None:
            logging.getLogger(LOGGER_NAME).removeHandler(ConsoleLog._handler)
            ConsoleLog._handler = None
        for log in ConsoleLog._set_levels:
            log.setLevel(logging.NOTSET)
        ConsoleLog._set_levels = []

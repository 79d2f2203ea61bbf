"""Named crash points: test hooks that kill the process with SIGKILL at a chosen instant.

Set ``MONITOR_CRASH_AT=<point>`` (first time there) or ``<point>:<n>`` (the n-th time) in the
environment of a run; without it, :func:`crash_point` does nothing but read the environment.
Points: ``after_history_row``, ``after_temp_write``, ``after_rename``, ``before_remove_old_best``,
``before_remove_old_last``, ``after_stop_decision``.
"""
from __future__ import annotations

import os
import signal

CRASH_ENV = "MONITOR_CRASH_AT"
_hits: dict[str, int] = {}  # per-process hit counts; only used when CRASH_ENV is set


def crash_point(name: str) -> None:
    """SIGKILL this process if ``MONITOR_CRASH_AT`` names this point (and hit count)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

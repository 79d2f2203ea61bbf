"""The one fault-injection point: named instants where a test (or a user checking their own setup) can
have the process killed with SIGKILL, to prove that a kill there loses nothing.

Set ``MONITOR_CRASH_AT=<point>`` (the first time there) or ``<point>:<n>`` (the n-th time) in the
environment of a run; without it, :func:`crash_point` only reads the environment. The points, in the
order a validation reaches them: ``after_history_row`` (the row is written, the checkpoint not yet),
``after_stop_decision`` (early stopping decided, nothing recorded), ``after_temp_write`` and
``after_rename`` (an atomic file write half done), ``before_remove_old_best`` and
``before_remove_old_last`` (a new checkpoint is in place, the old one not yet removed); for a sharded
model, ``before_shards_commit`` (every process's shards of a last checkpoint written, the folder not
yet committed) and ``before_best_shards_commit`` (the same for a best checkpoint's folder).

Examples:
    .. code-block:: bash

        MONITOR_CRASH_AT=after_rename:3 python train.py    # killed after the 3rd atomic rename
"""
from __future__ import annotations

import os
import signal

__all__ = ["CRASH_ENV", "POINTS", "crash_point"]

CRASH_ENV = "MONITOR_CRASH_AT"
POINTS = ("after_history_row", "after_stop_decision", "after_temp_write", "after_rename", "before_remove_old_best",
          "before_remove_old_last", "before_shards_commit", "before_best_shards_commit")
_hits: dict[str, int] = {}  # per-process hit counts; only used when CRASH_ENV is set


def crash_point(name: str) -> None:
    """SIGKILL this process if ``MONITOR_CRASH_AT`` names this point (and hit count); a value naming no
    point is refused (a kill test that never kills would pass for the wrong reason)."""
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point not in POINTS or not (nth == "" or nth.isdigit() and int(nth) > 0):
        raise ValueError(f"{CRASH_ENV}={wanted!r} names no crash point; use one of {list(POINTS)}, optionally "
                         f"followed by :<n> (the n-th time there).")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

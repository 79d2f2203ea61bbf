"""RunLock: one writer per run directory (``fcntl.flock`` on ``run_dir/.lock``).

The OS drops the lock when its process dies, so a killed run's successor takes over at once; a
second live process fails at once, naming the holder. A process forked while the lock is held (a
``DataLoader`` worker with ``num_workers > 0``) closes its copy of the descriptor at once: an flock
belongs to the open file, so a worker outliving a killed run would otherwise hold it for that run.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import weakref
from pathlib import Path
from typing import IO

from monitor.store.layout import LOCK_NAME
from monitor.store.record import now_iso

__all__ = ["RunLock", "RunDirectoryBusy", "RunDirectoryLost"]


class RunDirectoryBusy(RuntimeError):
    """Another live process is writing the run directory."""


class RunDirectoryLost(RuntimeError):
    """The run directory (or its lock) was removed or replaced while this process was writing it."""


class RunLock:
    """Hold ``run_dir/.lock`` exclusively from ``acquire()`` until ``release()`` (or process exit).

    Examples:
        .. code-block:: python

            lock = RunLock(run_dir).acquire()   # RunDirectoryBusy if another process holds it
            ...
            lock.release()
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._file: IO[str] | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the lock file we hold

    def acquire(self) -> RunLock:
        if self._file is not None:
            return self
        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunDirectoryBusy(
                f"Run directory {str(self.path.parent)!r} is in use by another process ({holder}); "
                "wait for it to end, or stop it, before starting or resuming this run."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}) + "\n")
        f.flush()
        self._file = f
        stat = os.fstat(f.fileno())
        self._identity = (stat.st_dev, stat.st_ino)
        # The fork hook is process-wide by nature (os has no per-object one, nor a way to remove one);
        # it holds only a weak reference, and does nothing once the lock is released.
        held = weakref.ref(self)

        def forget_in_child() -> None:
            lock = held()
            if lock is not None:
                lock._forget_in_child()

        os.register_at_fork(after_in_child=forget_in_child)
        return self

    def _forget_in_child(self) -> None:
        """In a forked child: close the inherited descriptor without unlocking (the parent holds it)."""
        if self._file is not None:
            self._file.close()  # not LOCK_UN: that would release the parent's lock too
            self._file, self._identity = None, None

    def is_lost(self) -> bool:
        """Whether the lock file we hold is no longer the one at its path (the folder was removed,
        or removed and made again by someone else). Always False when not held."""
        if self._identity is None:
            return False
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (stat.st_dev, stat.st_ino) != self._identity

    def check(self, *_: object) -> None:
        """Raise :class:`RunDirectoryLost` if :meth:`is_lost`: nothing more may be written there.

        Another process may already be writing a new run in a folder of the same name; writing on
        would mix two runs. (Usable as an Ignite handler: extra arguments are ignored.)
        """
        if self.is_lost():
            raise RunDirectoryLost(
                f"Run directory {str(self.path.parent)!r} was removed or replaced while this run was writing "
                "it; this run stops and writes nothing more there."
            )

    def release(self) -> None:
        if self._file is not None:
            self._file.truncate(0)  # no holder any more; a run that ended cleanly leaves it empty
            self._file.flush()
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
            self._identity = None

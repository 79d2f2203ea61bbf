"""OrderedWriter: a run's durable writes, done in order on one background thread.

A resumable run writes files every epoch: the last checkpoint, a best checkpoint on improvements,
the checkpoint manifest and ``run.json``, each through a temp file, fsync, rename and folder fsync.
Once the state is copied, none of it needs the training thread. So the training thread takes a
snapshot of the state at that instant and hands the write over; the writer thread serialises and
writes, one job at a time, in the order the jobs were given. That keeps the durability order of
synchronous code: a best checkpoint is on disk before the last checkpoint that lists it, and both
before the ``run.json`` naming them. A kill loses at most the jobs not yet done, as if it had come a
little earlier; resume already handles that. The writer's Python work still competes for the GIL,
so on tiny models with fast epochs it saves nothing (see ``benchmarks/README.md``); it pays off
where saves are large or the disk is slow.
"""
from __future__ import annotations

import atexit
import threading
from collections import deque
from collections.abc import Callable

__all__ = ["OrderedWriter"]


class OrderedWriter:
    """Run write jobs one after another, in submission order, on a background thread.

    A job that raises stops the writer: the jobs after it are dropped (they could name files that
    were never written) and the error, with the path it names, is raised in the caller's thread at
    the next :meth:`submit` or :meth:`flush`. At most ``max_pending`` jobs wait; a further
    :meth:`submit` blocks until one is done, so a slow disk slows training instead of filling memory.
    With ``background=False`` every job runs at once in the caller, as plain synchronous code does.
    ``guard`` runs right before each job (e.g. a check that the run folder is still this run's).

    Examples:
        .. code-block:: python

            writer = OrderedWriter()
            writer.submit(lambda: atomic_write_json(path, data))   # returns at once
            writer.flush()   # all submitted jobs are on disk, or the first error is raised here
            writer.close()
    """

    def __init__(
        self, *, background: bool = True, max_pending: int = 4, guard: Callable[[], None] | None = None
    ) -> None:
        self.background = background
        self.max_pending = max_pending
        self.guard = guard  # runs before each job; raising stops the writer as a failed job does
        self._jobs: deque[Callable[[], None]] = deque()
        self._busy = False
        self._error: BaseException | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    # -- the caller's side --------------------------------------------------------------------------
    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` (or run it now when not in the background); raise an earlier job's error."""
        if self.guard is not None:
            job = self._guarded(job, self.guard)
        if not self.background:
            job()  # an error is raised here, at once
            return
        with self._cond:
            while len(self._jobs) >= self.max_pending and self._error is None:
                self._cond.wait()
            self._raise_error_locked()
            if self._closing:
                raise RuntimeError("OrderedWriter is closed; no more writes are accepted.")
            self._jobs.append(job)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="monitor-writer", daemon=True)
                self._thread.start()
                # A daemon thread dies with the interpreter: finish the queue first if the owner forgot to.
                atexit.register(self.close)

    def flush(self, *, raise_error: bool = True) -> None:
        """Wait until every submitted job is done; then raise the first error (if ``raise_error``)."""
        with self._cond:
            while (self._jobs or self._busy) and self._error is None:
                self._cond.wait()
            if raise_error:
                self._raise_error_locked()

    @property
    def error(self) -> BaseException | None:
        """The error that stopped the writer (``None`` while it works)."""
        return self._error

    def close(self) -> None:
        """Finish the queued jobs (errors are kept in :attr:`error`, not raised) and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            atexit.unregister(self.close)

    @staticmethod
    def _guarded(job: Callable[[], None], guard: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            guard()
            job()

        return run

    def _raise_error_locked(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the writer thread --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._jobs and not self._closing:
                    self._cond.wait()
                if not self._jobs:
                    return
                job = self._jobs.popleft()
                self._busy = True
                self._cond.notify_all()  # a place in the queue is free
            try:
                job()
            except BaseException as e:  # noqa: BLE001 (handed to the caller's thread)
                with self._cond:
                    self._error = e
                    self._jobs.clear()  # later jobs may describe files this one failed to write
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

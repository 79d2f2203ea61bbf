"""tensorboardX's writer made durable: each point reaches the OS within a second and ``flush()`` puts every
point on disk (imported by :mod:`monitor.handlers.tensorboard` when a logger is made)."""
from __future__ import annotations

import os
import time
from typing import Any

try:
    from tensorboardX import FileWriter, SummaryWriter
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
except ImportError as e:  # a dependency; said clearly where an environment lacks it
    raise ModuleNotFoundError("attach_tensorboard requires tensorboardX: pip install tensorboardX") from e

__all__ = ["SyncEventFileWriter", "SyncFileWriter", "DurableSummaryWriter"]

_WRITE_EVERY_S = 1.0  # events wait at most this long in memory before they reach the OS


class SyncEventFileWriter:
    """tensorboardX's ``EventFileWriter`` without its queue and thread.

    What the original lacks: events wait in a ``multiprocessing.Queue`` for a writer thread and
    ``flush()`` does not drain it, so a kill loses the recent points even after a flush (about
    100 of 150 in the tests behind issue #3); the thread also competes with training. Here
    ``add_event`` hands the events to the OS about every second, on the training thread, and
    ``flush()`` writes the rest and fsyncs the file.
    """

    def __init__(self, logdir: str, filename_suffix: str) -> None:
        os.makedirs(logdir, exist_ok=True)
        self._logdir = logdir
        self._writer = EventsWriter(os.path.join(logdir, "events"), filename_suffix)
        self._closed = False
        self._pending: list[Any] = []
        self._written_at = time.monotonic()

    def get_logdir(self) -> str:
        return self._logdir

    def add_event(self, event: Any) -> None:
        if self._closed:
            return
        self._pending.append(event)
        now = time.monotonic()
        if now - self._written_at >= _WRITE_EVERY_S:
            self._write_pending(now)

    def add_point(self, point: tuple[str, float, int, float]) -> None:
        """A scalar ``(tag, value, step, wall_time)``, made an event when it is written: built in the
        training step, an event cost about 25 us of CPU there (its code cold after the step's own
        work), about 3 in a batch."""
        self.add_event(point)  # it waits with the events, in order

    def _write_pending(self, now: float | None = None) -> None:
        # Events wait here, in order, until one comes _WRITE_EVERY_S after the last write (or a
        # flush, at every validation), then go to the OS together (one write instead of one per
        # point; no fsync: that is flush()): a killed process keeps its points up to about a
        # second before the kill, so TensorBoard shows how far it got.
        for event in self._pending:
            if type(event) is tuple:  # a point: the same bytes as add_scalar's event, made in half the time
                tag, value, step, wall_time = event
                event = Event(step=step, wall_time=wall_time)
                event.summary.value.add(tag=tag, simple_value=value)
            self._writer.write_event(event)
        self._pending = []
        self._writer._py_recordio_writer._writer.flush()  # tensorboardX keeps its file object private
        self._written_at = time.monotonic() if now is None else now

    def hand_over(self) -> None:
        """The waiting events to the OS (no fsync)."""
        if not self._closed and self._pending:
            self._write_pending()

    def flush(self) -> None:
        if not self._closed:
            self._write_pending()
            self._writer.flush()  # RecordWriter.flush: flush + fsync

    def close(self) -> None:
        if not self._closed:
            self._write_pending()
            self._writer.close()
            self._closed = True


class SyncFileWriter(FileWriter):  # type: ignore[misc]
    def __init__(self, logdir: str, filename_suffix: str) -> None:
        # Not FileWriter.__init__: it would open a queued writer with its thread and file.
        self.event_writer = SyncEventFileWriter(logdir, filename_suffix)
        self._default_metadata: dict[str, Any] = {}


class DurableSummaryWriter(SummaryWriter):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._opening = True  # no file until the first point: a start that trains nothing makes none
        super().__init__(*args, **kwargs)
        self._opening = False

    def _get_file_writer(self) -> Any:
        # As tensorboardX 2.6.5's, with the synchronous FileWriter above.
        if self._opening:
            return None
        if getattr(self, "all_writers", None) is None or getattr(self, "file_writer", None) is None:
            self.file_writer = SyncFileWriter(self.logdir, self._filename_suffix)
            if self.purge_step is not None:
                self.file_writer.add_event(Event(step=self.purge_step, file_version="brain.Event:2"))
                self.file_writer.add_event(
                    Event(step=self.purge_step, session_log=SessionLog(status=SessionLog.START))
                )
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
        return self.file_writer

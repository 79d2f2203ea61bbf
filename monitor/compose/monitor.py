"""Monitor: the attached handlers of one run, its start and end, and its record (``run.json``)."""
from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar, TensorboardLogger

from monitor.compose.resume import ResumePlan, repair_history, tidy_for_resume
from monitor.core._position import run_iteration
from monitor.core.objective import Objective
from monitor.core.status import RunStatus, StopReason, reason_value
from monitor.diagnosis import diagnose, steps_after
from monitor.handlers.best import BestTracker
from monitor.handlers.cadence import CheckpointCadence
from monitor.handlers.checkpoint import finish_best_shards, release_held, restore_best_weights
from monitor.handlers.console_log import ConsoleLog
from monitor.handlers.data import DataOrder
from monitor.handlers.diagnosis import LiveDiagnosis
from monitor.handlers.history import HistoryRecorder
from monitor.handlers.loss import TrainLoss
from monitor.handlers.lr import LearningRates
from monitor.handlers.signals import GracefulStop
from monitor.handlers.step import StepWork
from monitor.handlers.stopping import EarlyStoppingHandler
from monitor.parts.base import Part
from monitor.runtime.distributed import is_main_process, leave_together
from monitor.runtime.shard_folders import shard_folders_of
from monitor.runtime.versions import library_versions
from monitor.store.history import rows_digest
from monitor.store.layout import RunPaths, parse_checkpoint_name
from monitor.store.lock import RunLock
from monitor.store.record import RunRecord, write_record
from monitor.store.writer import OrderedWriter

__all__ = ["Monitor", "RunFiles", "Handlers"]

logger = logging.getLogger(__name__)

# Ignite 0.5.5's error when trainer.run(max_epochs=N) is below the epoch a resume restored (raised
# before any event, so before this run recorded or changed anything).
_MAX_EPOCHS_TOO_SMALL = re.compile(r"max_epochs should be greater than or equal to the start epoch .*: (\d+) vs")


@dataclass
class RunFiles:
    """The run's folder and what writes into it: its names, ``run.json``, the lock, the writer, and the
    configuration recorded in each segment."""

    paths: RunPaths
    record: RunRecord
    lock: RunLock
    writer: OrderedWriter
    config: Mapping[str, Any]


@dataclass
class Handlers:
    """The handlers :func:`~monitor.attach_monitoring` attached that the run's start and end use: the
    ones every run has, then the ones a setting may leave out (``None``)."""

    objective: Objective
    best: BestTracker
    history: HistoryRecorder
    train_loss: TrainLoss
    best_checkpoint: Checkpoint
    last_checkpoint: Checkpoint
    cadence: CheckpointCadence = field(default_factory=lambda: CheckpointCadence(Events.EPOCH_COMPLETED))
    step: StepWork | None = None
    early_stopping: EarlyStoppingHandler | None = None
    tensorboard: TensorboardLogger | None = None
    progress_bar: ProgressBar | None = None
    graceful_stop: GracefulStop | None = None
    learning_rates: LearningRates | None = None
    data_order: DataOrder | None = None
    live_diagnosis: LiveDiagnosis | None = None
    console_log: ConsoleLog | None = None


_HANDLER_FIELDS = frozenset(Handlers.__dataclass_fields__)


class Monitor:
    """What :func:`~monitor.attach_monitoring` attached: plain Ignite handler objects, plus the run record.

    Built in one step from the attached handlers; :meth:`attach` registers its own handlers on the
    trainer (start, end, failure, and ``run.json`` after each epoch's last checkpoint), as Ignite's
    ``ProgressBar.attach`` does. ``_why_it_ended`` is the one place that decides the stop reason.

    Attributes: ``best`` (:class:`~monitor.handlers.BestTracker`), ``early_stopping``, ``best_checkpoint`` and
    ``last_checkpoint`` (Ignite ``Checkpoint``), ``history`` (:class:`~monitor.handlers.HistoryRecorder`),
    ``train_loss``, ``tensorboard`` (Ignite ``TensorboardLogger``), ``progress_bar``,
    ``graceful_stop``, ``plan`` (:class:`~monitor.compose.resume.ResumePlan`); ``status``, ``stop_reason``
    and ``error`` once training ended.

    Use it as a context manager around ``trainer.run`` so that files are closed and a failure
    outside the engines is recorded too.

    Examples:
        .. code-block:: python

            run = attach_monitoring(trainer, evaluator, val_loader, run_dir="reports/mlp", ...)
            with run:
                trainer.run(train_loader, max_epochs=100)
            run.status, run.stop_reason, run.best.best_epoch
    """

    if TYPE_CHECKING:  # the handlers' fields, read through to self.handlers (one copy: the Handlers')
        objective: Objective
        best: BestTracker
        history: HistoryRecorder
        train_loss: TrainLoss
        best_checkpoint: Checkpoint
        last_checkpoint: Checkpoint
        cadence: CheckpointCadence
        step: StepWork | None
        early_stopping: EarlyStoppingHandler | None
        tensorboard: TensorboardLogger | None
        progress_bar: ProgressBar | None
        graceful_stop: GracefulStop | None
        learning_rates: LearningRates | None
        data_order: DataOrder | None
        live_diagnosis: LiveDiagnosis | None
        console_log: ConsoleLog | None

    def __getattr__(self, name: str) -> Any:
        handlers = self.__dict__.get("handlers")
        if handlers is not None and name in _HANDLER_FIELDS:
            return getattr(handlers, name)
        raise AttributeError(f"'Monitor' object has no attribute {name!r}")

    def __init__(
        self,
        trainer: Engine,
        *,
        files: RunFiles,
        plan: ResumePlan,
        handlers: Handlers,
        parts: Sequence[Part] = (),
        restore_best: torch.nn.Module | None = None,
    ) -> None:
        self.trainer = trainer
        self.plan = plan
        self.parts = list(parts)  # the optional parts (attach_monitoring(parts=...)), in the last checkpoint
        self.restore_best = restore_best  # the model that gets the best weights at the end, or None
        self.paths, self.record, self.lock, self.writer = files.paths, files.record, files.lock, files.writer
        self.config = dict(files.config)
        self.handlers = handlers  # read through as run.best, run.history... (see __getattr__)
        if plan.state is not None:
            self.cadence.saved_iteration = plan.from_iteration  # that checkpoint is on disk already
        self._decided_stop = plan.decided_stop  # None once a larger max_epochs or patience lifts it
        self._position = (trainer.state.epoch, trainer.state.iteration)  # as restored
        self._nothing_to_train = False  # a finished run asked to go no further
        self.status = RunStatus.RUNNING
        self.stop_reason: StopReason | None = None
        self.error: str | None = None
        self._terminated = False  # trainer.terminate() was called during this segment
        self._started = False  # the trainer started this segment (before that, nothing is recorded)
        self._completed = False  # it ended through COMPLETED: every rank agreed (no failure path)
        self._closed = False

    # -- what the plan says ---------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.paths.root

    @property
    def is_finished(self) -> bool:
        """Whether the resumed run had already ended and recorded it, so that it trains nothing (known at
        attach, or, for a run that may go on, once ``trainer.run`` asked for no more epochs than it has)."""
        return self.plan.is_finished or self._nothing_to_train

    @property
    def decided_stop(self) -> StopReason | None:
        """The resumed run had decided to stop but not recorded it yet."""
        return self._decided_stop

    @property
    def resumed_from_epoch(self) -> int | None:
        return self.plan.from_epoch if self.plan.state is not None else None

    def flush(self) -> None:
        """Wait until every checkpoint and record handed to the background writer is on disk."""
        self.writer.flush()

    # -- the trainer's events ---------------------------------------------------------------------
    def attach(self, trainer: Engine) -> None:
        """Register the run's own handlers on ``trainer``: start, end, failure, and the checkpoint
        cadence (after the handlers of each epoch and validation, so a save follows their work)."""
        if self.plan.is_finished:
            trainer.add_event_handler(Events.STARTED, self._train_nothing)
            return
        if self.plan.decided_stop is not None:  # before the segment starts: it may not start at all
            trainer.add_event_handler(Events.STARTED, self._go_on_or_stop)
        trainer.add_event_handler(Events.STARTED, self._on_started)
        if self.plan.decided_stop is not None:
            trainer.add_event_handler(Events.STARTED, self._stop_as_decided)
        trainer.add_event_handler(Events.TERMINATE, self._on_terminate)
        trainer.add_event_handler(Events.COMPLETED, self._on_completed)
        trainer.add_event_handler(Events.EXCEPTION_RAISED, self._on_exception)
        saver, cadence = self.last_checkpoint.save_handler, self.cadence
        self.cadence.attach(
            trainer, self.save_checkpoint,
            # A save's cost: the training thread's stall (the state gathered and copied, a sharded model's shards
            # to the CPU; the write too on a foreground writer) and the write behind training (the file, and the
            # wait for a sharded model's shards folder before it).
            cost_s=lambda: cadence.last_stall_s + float(getattr(saver, "last_background_s", 0.0)),
            mid_epoch=lambda: self.data_order is None or bool(self.data_order.replayable),
            step=self.step,
        )

    def save_checkpoint(self, engine: Engine) -> None:
        """Write the held best files, the last checkpoint at ``engine``'s iteration, then ``run.json``
        (in this order, through the writer: each names only files written before it)."""
        release_held(self.best_checkpoint)
        if self.tensorboard is not None:
            self.tensorboard.writer.flush()  # its points up to here are durable before the checkpoint
        if is_main_process():  # the history rows too: the one fsync of history.csv, per checkpoint
            self.writer.submit(self.history.history.sync)
        self.last_checkpoint(engine)
        self._write_record()

    def _on_started(self, _: Engine) -> None:
        if self._nothing_to_train:
            return
        self._terminated, self._started = False, True
        tidy_for_resume(self.plan, paths=self.paths, history=self.history.history,
                        best_checkpoint=self.best_checkpoint, last_checkpoint=self.last_checkpoint)
        order = self.data_order
        layout = {} if order is None or order.layout is None else {"layout": order.layout}
        if order is not None and order.change is not None:
            layout["layout_change"] = order.change
        self.record.start_segment(self.plan.from_epoch, self.config, library_versions(), **layout)
        self.status, self.stop_reason, self.error = RunStatus.RUNNING, None, None
        self._write_record()
        # run.json on disk before the first history row (written at once): a run read while it
        # starts is never "history.csv but no run.json"
        self.writer.flush()

    def _go_on_or_stop(self, trainer: Engine) -> None:
        """A run that had reached its ``max_epochs`` goes on when ``trainer.run`` asks for more (as plain
        Ignite does); a finished run asked for no more trains nothing and changes no file."""
        epoch = self.plan.from_epoch
        more = trainer.state.epoch == epoch and (trainer.state.max_epochs or 0) > epoch
        stopping = self.early_stopping
        patience_left = stopping is None or stopping.patience is None or stopping.counter < stopping.patience
        reason = self._decided_stop
        if more and (reason is StopReason.MAX_EPOCHS or (reason is StopReason.PATIENCE_EXHAUSTED and patience_left)):
            logger.info("Run %s had stopped (%s) after %d epochs; continuing it to max_epochs=%d.",
                        self.run_dir, reason.value if reason else "-", epoch, trainer.state.max_epochs)
            self._decided_stop = None
            if stopping is not None:
                stopping.stop_reason = None  # its new patience has not run out
        elif self.plan.extends:
            self._nothing_to_train = True
            # Ignite started over (its state was done): the position the resume restored, as it was
            trainer.state.epoch, trainer.state.iteration = self._position
            self._train_nothing(trainer)

    def _train_nothing(self, trainer: Engine) -> None:
        self._started = True
        if is_main_process():  # a finished run's files stay as they are, but damage is repaired
            repair_history(self.plan, self.history.history, keep_later=True)
            self._repair_status()
        logger.info(
            "Run %s already finished (%s, %s); nothing to train. %s",
            self.run_dir, self.record.data.get("status"), self.record.data.get("stop_reason"),
            _how_to_continue(self.record.stop_reason, self.plan.from_epoch),
        )
        self.status = self.record.status or RunStatus.COMPLETED
        self.stop_reason = self.record.stop_reason
        trainer.terminate()
        if self.restore_best is not None:
            restore_best_weights(self.best_checkpoint, self.restore_best)

    def _repair_status(self) -> None:
        """A finished record whose status is not its stop reason's (an edit): the stop reason's, said."""
        reason, status = self.record.stop_reason, self.record.status
        if reason is None or status is None or reason.status is status:
            return
        logger.warning("run.json of %s says %r, but its stop reason %r means %r: corrected.", self.run_dir,
                       status.value, reason.value, reason.status.value)
        self.record.update(status=reason.status, stop_reason=reason)
        write_record(self.run_dir, self.record.text())

    def _stop_as_decided(self, trainer: Engine) -> None:
        if self._decided_stop is None or self._nothing_to_train:
            return
        # The last checkpoint says the run had stopped (early stopping, a NaN loss, max_epochs) but the
        # process died before run.json said so: train nothing more, just record the end. (Without this,
        # Ignite would train on, or, at max_epochs, restart from epoch 0.)
        reason = self._decided_stop.value
        logger.info("Run %s had stopped (%s) before it could record it; recording it now.", self.run_dir, reason)
        trainer.terminate()

    def _on_terminate(self, _: Engine) -> None:
        self._terminated = True

    def _on_completed(self, _: Engine) -> None:
        self._completed = True
        if self._nothing_to_train:
            self.status = self.record.status or RunStatus.COMPLETED
            self.stop_reason = self.record.stop_reason
            return
        self.stop_reason = self._why_it_ended()
        self._end(self.stop_reason.status)

    def _on_exception(self, _: Engine, error: BaseException) -> None:
        # Ignite swallows the exception once any EXCEPTION_RAISED handler exists; re-raise it.
        self._fail(error)
        raise error

    # -- how it ended -----------------------------------------------------------------------------
    def handler_stop_reason(self) -> StopReason | None:
        """The stop early stopping, the training-loss check or a part decided on, if one did."""
        if self.early_stopping is not None and self.early_stopping.stop_reason is not None:
            return self.early_stopping.stop_reason
        for part in self.parts:  # e.g. Recovery, out of attempts
            if part.stop_reason is not None:
                return part.stop_reason
        return self.train_loss.stop_reason

    def _why_it_ended(self, error: BaseException | None = None) -> StopReason:
        """The one place that decides why training ended, from the first that applies: an error, a
        stop decided before a resume, a signal, a handler's decision, another ``terminate()``, the end."""
        if error is not None:
            return StopReason.INTERRUPTED if isinstance(error, KeyboardInterrupt) else StopReason.FAILED
        if self._decided_stop is not None:
            return self._decided_stop
        if self.graceful_stop is not None and self.graceful_stop.reason is not None:
            return self.graceful_stop.reason  # a signal or the time limit
        return self.handler_stop_reason() or (StopReason.TERMINATED if self._terminated else StopReason.MAX_EPOCHS)

    def _fail(self, error: BaseException) -> None:
        if self.graceful_stop is not None:
            self.graceful_stop.uninstall()
        if self.status is not RunStatus.RUNNING or self.plan.is_finished or self._nothing_to_train:
            return
        self.stop_reason = self._why_it_ended(error)
        if self.stop_reason is StopReason.FAILED:
            self.error = "".join(traceback.format_exception_only(type(error), error)).strip()
        self._end(self.stop_reason.status, after_error=True)

    def _end(self, status: RunStatus, *, after_error: bool = False) -> None:
        if not after_error and not self.lock.is_lost():
            # The state as it ends is saved, so a resume (of an interruption, a time limit) loses nothing;
            # mid-epoch only where the data can be replayed.
            if self.cadence.can_save_at(self.trainer):
                self.cadence.save_now(self.trainer)
        elif not self.lock.is_lost():
            try:  # a failure still keeps the best weights found so far (but a sharded model's held shards)
                release_held(self.best_checkpoint, together=False)
            except Exception as e:  # the writer's own earlier error: the one that is raised
                logger.error("Could not write the held best checkpoints: %s", e)
        if not after_error:  # on every rank: the shards folders written behind training are committed
            finish_best_shards(self.best_checkpoint)  # (after a failure rank 0's writer waits for them)
            folders = shard_folders_of(self.last_checkpoint.to_save)
            if folders is not None:
                folders.close()
        # Every queued write lands first; a write error raised here fails the run (recorded below).
        self.writer.flush(raise_error=not after_error)
        if after_error and is_main_process() and not self.lock.is_lost():
            try:  # the rows of this segment, on disk whatever comes next
                self.history.history.sync()
            except OSError as e:
                logger.error("Could not fsync %s: %s", self.history.history.path, e)
        # The steps after the last validation (a NaN mid-epoch): read on every rank (it may all-reduce),
        # except after a failure, when the ranks are not known to be here together.
        tail = self._after_last_row() if not after_error or idist.get_world_size() == 1 else None
        self.status = status
        self.record.end_segment(status, self.stop_reason, self.error)
        if is_main_process():
            self._record_findings(tail)
        if self.lock.is_lost():
            logger.error("Run %s %s, but its folder was removed or replaced: nothing more is written there.",
                         self.run_dir, status.value)
            return
        try:
            self._write_record(now=True)
        except OSError as e:
            if not after_error:
                raise
            # Recording the failure must not hide the error that caused it (often the same full disk).
            logger.error(
                "Run %s %s (%s), and that could not be recorded: run.json still says 'running'. %s",
                self.run_dir, status.value, self.error or reason_value(self.stop_reason), e,
            )
        if self.tensorboard is not None:
            self.tensorboard.writer.flush()
        self._restore_best_weights(after_error)
        for part in self.parts:  # a tracker logs the outcome, now that it is recorded
            try:
                part.ended(self)
            except Exception as e:  # a part's report never changes how the run ended
                logger.error("Part %r could not report the end of the run: %s", part.key, e)
        best = (f"no best value of {self.objective.column}" if self.best.best_value is None else
                f"best {self.objective.column}={self.best.best_value:.6g} at epoch {self.best.best_epoch}")
        logger.info(
            "Run %s ended: %s (%s) after %d epochs; %s", self.run_dir, status.value,
            self.stop_reason.value if self.stop_reason else "-", self.history.history.last_epoch, best,
        )

    def _after_last_row(self) -> dict[str, Any] | None:
        """The training columns of the steps since the last history row, if some were trained."""
        state = self.trainer.state
        if run_iteration(state) <= int(self.history.last_row.get("iteration") or 0):
            return None
        try:
            return {"epoch": state.epoch, "iteration": run_iteration(state), **self.history.train_columns()}
        except Exception as e:  # the device is gone (a failure): the end is recorded without them
            logger.error("Could not read the training columns after the last validation: %s", e)
            return None

    def _record_findings(self, tail: dict[str, Any] | None) -> None:
        """What :func:`monitor.diagnosis.diagnose` finds in the whole history, into ``run.json``, with
        the steps after the last row (``after_last_row``), which a review diagnoses too."""
        try:
            rows = self.history.history.read_rows()
        except OSError as e:  # the history is unreadable (the disk): the end is recorded without them
            logger.error("Could not read %s to diagnose the run: %s", self.history.history.path, e)
            rows = []
        steps = steps_after(rows, tail)  # not a row of an earlier segment's (last_row is this segment's only)
        self._part_records()
        recoveries = self.record.data.get("recoveries") or ()  # Recovery's rollbacks: the rows do not show them
        kept = {name.epoch for _, file in self.best_checkpoint.state_dict()["_saved"]
                if (name := parse_checkpoint_name(file)) is not None}  # the best files on disk
        findings = diagnose(rows, objective_column=self.objective.column, mode=self.objective.mode, kept_epochs=kept,
                            stop_reason=reason_value(self.stop_reason), after_last_row=steps, recoveries=recoveries)
        self.record.update(findings=[f.to_dict() for f in findings], after_last_row=steps)
        if self.live_diagnosis is not None:  # seen only now: in the steps after the last validation
            for finding in findings:
                self.live_diagnosis.report(finding)

    def _restore_best_weights(self, after_error: bool) -> None:
        if self.restore_best is None:
            return
        if after_error and idist.get_world_size() > 1:
            # No collective on a failure path: the other ranks may be gone, or waiting in another
            # collective, and all would hang. The model keeps its last weights.
            logger.warning("Run failed on %d processes: best weights not restored.", idist.get_world_size())
            return
        try:
            restore_best_weights(self.best_checkpoint, self.restore_best)
        except Exception as e:
            if not after_error:
                raise
            logger.error("Could not restore the best weights: %s", e)

    # -- run.json -------------------------------------------------------------------------------
    def _part_records(self) -> None:
        """The fields the parts keep in ``run.json`` (Recovery: ``recoveries``), as they are now."""
        for part in self.parts:
            self.record.update(**dict(part.record()))

    def _write_record(self, _: Engine | None = None, *, now: bool = False) -> None:
        """Update ``run.json``: through the writer, after the files it names, or ``now`` (at the end)."""
        if not is_main_process():
            return
        checkpoint = self.best_checkpoint.last_checkpoint
        self.record.update(
            name=self.run_dir.name,
            epochs_completed=self.history.history.last_epoch,
            iterations_completed=self.history.history.last_iteration,
            epoch_length=self.trainer.state.epoch_length,
            max_epochs=self.trainer.state.max_epochs,
            best={
                "metric": self.objective.column,
                "mode": self.objective.mode,
                "value": self.best.best_value,
                "epoch": self.best.best_epoch,
                "checkpoint": None if checkpoint is None else str(Path(checkpoint).relative_to(self.run_dir)),
            },
            elapsed_s=round(self.history.elapsed_s, 3),
            # what history.csv holds now, for a review to check it against (store.history.rows_digest)
            history_rows={"count": len(self.history.history.written),
                          "crc32": rows_digest(self.history.history.written)},
        )
        self._part_records()
        text = self.record.text()  # the record as it is now, written now or a little later
        if now:
            write_record(self.run_dir, text)
        else:
            self.writer.submit(lambda: write_record(self.run_dir, text))

    # -- resource handling ------------------------------------------------------------------------
    def close(self) -> None:
        """Finish the background writes, close TensorBoard and release the run directory (idempotent)."""
        self.writer.close()
        if self.writer.error is not None and self.status is RunStatus.RUNNING:
            # Training ended without the engine seeing the write error (e.g. run() was never called
            # again): record it as the failure it is.
            self._fail(self.writer.error)
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.handlers.tensorboard = None
        if self.learning_rates is not None:
            self.learning_rates.remove()
        self.lock.release()
        if self.console_log is not None:
            self.console_log.remove()
        if idist.get_world_size() > 1 and (self._completed or self.plan.is_finished) and not self._closed:
            # Every rank leaves together, and none exits while gloo still holds its tensors (see
            # leave_together): after any end all ranks agreed on (finished, interrupted, time limit).
            # Never on a failure path, where another rank may be gone.
            leave_together()
        self._closed = True

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self._started:
            self._fail(exc)
        self.close()
        if exc is not None and not self._started:
            # trainer.run refused before training started: nothing was recorded, no file was changed.
            ignite_says = _MAX_EPOCHS_TOO_SMALL.search(str(exc))
            if isinstance(exc, ValueError) and ignite_says is not None and self.plan.state is not None:
                epoch = self.plan.from_epoch
                raise ValueError(
                    f"Cannot resume {str(self.run_dir)!r} at epoch {epoch} with max_epochs={ignite_says.group(1)}: "
                    f"it has trained {epoch} epochs already. Pass max_epochs >= {epoch} to trainer.run; the run "
                    "folder was not changed."
                ) from exc


def _how_to_continue(reason: StopReason | None, epoch: int) -> str:
    """What it would take to train a finished run further, in words."""
    if reason is StopReason.MAX_EPOCHS:
        return f"To continue it, run it with resume=True and max_epochs above {epoch}."
    if reason is StopReason.PATIENCE_EXHAUSTED:
        return (f"To continue it, resume with a larger patience (early_stopping=EarlyStopping(patience=...)) "
                f"or early_stopping=None, and max_epochs above {epoch}.")
    if reason is StopReason.TARGET_REACHED:
        return f"To continue it, resume with another target (or none) and max_epochs above {epoch}."
    return ("Its last state is the one that stopped it; to train further, start a new run_dir from its best "
            "checkpoint (model.load_state_dict(torch.load(best checkpoint)), see reports/README.md).")

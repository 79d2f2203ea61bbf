"""attach_monitoring / Monitor: compose the handlers in a fixed order; run.json; resume."""
from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar, TensorboardLogger

from monitor._checks import positive_int
from monitor.distributed import is_main_process, leave_together, on_main_process
from monitor.handlers.best import BestTracker, attach_best_tracker
from monitor.handlers.checkpoint import attach_best_checkpoint, attach_last_checkpoint, restore_best_weights
from monitor.handlers.history import HistoryRecorder, attach_history
from monitor.handlers.loss import TrainLoss, attach_train_loss
from monitor.handlers.progress import attach_epoch_log, attach_progress_bar
from monitor.handlers.rng import RNGState
from monitor.handlers.signals import GracefulStop, attach_graceful_stop
from monitor.handlers.stopping import EarlyStopping, attach_early_stopping, check_early_stopping_args
from monitor.handlers.tensorboard import attach_tensorboard
from monitor.handlers.validation import attach_validation
from monitor.lock import RunLock
from monitor.objective import Objective
from monitor.record import library_versions, now_iso, read_record, record_text, write_record
from monitor.resume import read_resume_state, restore, start_over
from monitor.rundir import RunPaths, prepare_run_dir
from monitor.status import RunStatus, StopReason
from monitor.writer import OrderedWriter

__all__ = ["Monitor", "attach_monitoring"]

logger = logging.getLogger(__name__)

# Keys monitor adds to the last checkpoint; ``to_save`` may not use them.
_OWN_KEYS = ("trainer", "best", "early_stopping", "best_checkpoint", "train_loss", "history", "rng", "checkpointer")


class Monitor:
    """What :func:`attach_monitoring` attached: plain Ignite handler objects, plus the run record.

    Attributes: ``best`` (:class:`BestTracker`), ``early_stopping``, ``best_checkpoint`` and
    ``last_checkpoint`` (Ignite ``Checkpoint``), ``history`` (:class:`HistoryRecorder`),
    ``train_loss``, ``tensorboard`` (Ignite ``TensorboardLogger``), ``progress_bar``;
    ``status`` and ``stop_reason`` once training ended.

    Use it as a context manager around ``trainer.run`` so that files are closed and a failure
    outside the engines is recorded too.
    """

    def __init__(
        self,
        trainer: Engine,
        paths: RunPaths,
        objective: Objective,
        config: dict[str, Any],
        lock: RunLock,
        *,
        background_writes: bool = True,
    ) -> None:
        self.trainer = trainer
        self.lock = lock
        self.paths = paths
        self.objective = objective
        self.config = config
        self.status = RunStatus.RUNNING
        self.stop_reason: StopReason | None = None
        self.error: str | None = None
        self.is_finished = False  # resumed a run that had already ended and recorded it
        self.decided_stop: StopReason | None = None  # resumed a run that had decided to stop, unrecorded
        self.resumed_from_epoch: int | None = None
        self.best: BestTracker
        self.early_stopping: EarlyStopping | None = None
        self.best_checkpoint: Checkpoint
        self.last_checkpoint: Checkpoint
        self.history: HistoryRecorder
        self.train_loss: TrainLoss
        self.tensorboard: TensorboardLogger | None = None
        self.progress_bar: ProgressBar | None = None
        self.graceful_stop: GracefulStop | None = None
        record: dict[str, Any] | None = on_main_process(lambda: read_record(paths.root))
        self._record: dict[str, Any] = record or {}
        self._terminated = False
        self._closed = False
        self._restore_best: Any = None
        # Checkpoints and run.json are written in order, in the background unless told otherwise.
        self.writer = OrderedWriter(background=background_writes)

    @property
    def run_dir(self) -> Path:
        return self.paths.root

    def flush(self) -> None:
        """Wait until every checkpoint and record handed to the background writer is on disk."""
        self.writer.flush()

    # -- run.json -------------------------------------------------------------------------------
    def _write_record(self, *, now: bool = False) -> None:
        """Update ``run.json``: through the writer, after the files it names, or ``now`` (at the end)."""
        if not is_main_process():
            return
        best = self.best
        checkpoint = self.best_checkpoint.last_checkpoint
        self._record.update(
            name=self.run_dir.name,
            status=self.status.value,
            stop_reason=None if self.stop_reason is None else self.stop_reason.value,
            error=self.error,
            epochs_completed=self.history.history.last_epoch,
            iterations_completed=self.history.history.last_iteration,
            max_epochs=self.trainer.state.max_epochs,
            best={
                "metric": self.objective.column,
                "mode": self.objective.mode,
                "value": best.best_value,
                "epoch": best.best_epoch,
                "checkpoint": None if checkpoint is None else str(Path(checkpoint).relative_to(self.run_dir)),
            },
            elapsed_s=round(self.history.elapsed_s, 3),
        )
        if now:
            write_record(self.run_dir, self._record)
        else:
            text = record_text(self._record)  # the record as it is now, written a little later
            self.writer.submit(lambda: write_record(self.run_dir, text))

    def _on_started(self, _: Engine) -> None:
        self._terminated = False
        from_epoch = self.trainer.state.epoch if self.resumed_from_epoch is None else self.resumed_from_epoch
        segment = {"started": now_iso(), "from_epoch": from_epoch}
        self._record.setdefault("started", segment["started"])
        self._record.setdefault("segments", []).append(segment)
        self._record.update(self.config, versions=library_versions())
        self.status, self.stop_reason, self.error = RunStatus.RUNNING, None, None
        self._write_record()

    def handler_stop_reason(self) -> StopReason | None:
        """The stop early stopping or the training-loss check decided on, if either did."""
        if self.early_stopping is not None and self.early_stopping.stop_reason is not None:
            return self.early_stopping.stop_reason
        return self.train_loss.stop_reason

    def _on_terminate(self, _: Engine) -> None:
        self._terminated = True

    def _on_completed(self, _: Engine) -> None:
        interrupted = self.graceful_stop is not None and self.graceful_stop.received is not None
        reason = (
            self.decided_stop
            or (StopReason.INTERRUPTED if interrupted else None)
            or self.handler_stop_reason()
            or (StopReason.TERMINATED if self._terminated else StopReason.MAX_EPOCHS)
        )
        self.stop_reason = reason
        self._end(reason.status)

    def _on_exception(self, _: Engine, error: BaseException) -> None:
        # Ignite swallows the exception once any EXCEPTION_RAISED handler exists; re-raise it.
        self._fail(error)
        raise error

    def _fail(self, error: BaseException) -> None:
        if self.graceful_stop is not None:
            self.graceful_stop.uninstall()
        if self.status is not RunStatus.RUNNING or self.is_finished:
            return
        if isinstance(error, KeyboardInterrupt):
            self.stop_reason = StopReason.INTERRUPTED
        else:
            self.stop_reason = StopReason.FAILED
            self.error = "".join(traceback.format_exception_only(type(error), error)).strip()
        self._end(self.stop_reason.status, after_error=True)

    def _end(self, status: RunStatus, *, after_error: bool = False) -> None:
        # Every queued write lands first; a write error raised here fails the run (recorded below).
        self.writer.flush(raise_error=not after_error)
        self.status = status
        if self._record.get("segments"):
            self._record["segments"][-1].update(ended=now_iso(), status=status.value)
        try:
            self._write_record(now=True)
        except OSError as e:
            if not after_error:
                raise
            # Recording the failure must not hide the error that caused it (often the same full disk).
            logger.error("Could not record status %s in %s: %s", status.value, self.paths.record, e)
        if self.tensorboard is not None:
            self.tensorboard.writer.flush()
        if self._restore_best is not None and after_error and idist.get_world_size() > 1:
            # No collective on a failure path: the other ranks may be gone, or waiting in another
            # collective, and all would hang. The model keeps its last weights.
            logger.warning("Run failed on %d processes: best weights not restored.", idist.get_world_size())
        elif self._restore_best is not None:
            try:
                self._restore_best()
            except Exception as e:
                if not after_error:
                    raise
                logger.error("Could not restore the best weights: %s", e)
        best = "-" if self.best.best_value is None else f"{self.best.best_value:.6g}"
        logger.info(
            "Run %s ended: %s (%s) after %d epochs; best %s=%s at epoch %s",
            self.run_dir, status.value, self.stop_reason.value if self.stop_reason else "-",
            self.history.history.last_epoch, self.objective.column, best, self.best.best_epoch,
        )

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
            self.tensorboard = None
        self.lock.release()
        if idist.get_world_size() > 1 and (self.status.is_finished or self.is_finished) and not self._closed:
            # Every rank leaves together, and none exits while gloo still holds its tensors (see
            # leave_together). Never on a failure path, where another rank may be gone.
            leave_together()
        self._closed = True

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._fail(exc)
        self.close()


def _check_to_save(to_save: Mapping[str, Any]) -> None:
    if not isinstance(to_save, Mapping) or "model" not in to_save:
        raise ValueError(
            f"Argument to_save should be a mapping with at least a 'model' entry, got {to_save!r}."
        )
    if not isinstance(to_save["model"], torch.nn.Module):
        got = type(to_save["model"]).__name__
        raise TypeError(f"Argument to_save['model'] should be a torch.nn.Module, got {got}.")
    for key, obj in to_save.items():
        if key in _OWN_KEYS:
            raise ValueError(f"Argument to_save should not use the key {key!r}; monitor reserves {list(_OWN_KEYS)}.")
        if not hasattr(obj, "state_dict") or not hasattr(obj, "load_state_dict"):
            raise TypeError(f"Argument to_save[{key!r}] should have state_dict/load_state_dict, got {obj!r}.")


def attach_monitoring(
    trainer: Engine,
    evaluator: Engine,
    val_loader: Iterable[Any],
    *,
    run_dir: str | Path,
    objective: Objective,
    to_save: Mapping[str, Any],
    patience: int | None = 10,
    baseline: float | None = None,
    target: float | None = None,
    divergence: float | None = None,
    n_saved: int = 3,
    restore_best: bool = True,
    log_every: int = 10,
    validate_on: Any = Events.EPOCH_COMPLETED,
    resume: bool = False,
    overwrite: bool = False,
    hparams: Mapping[str, Any] | None = None,
    seed: int | None = None,
    tqdm_kwargs: Mapping[str, Any] | None = None,
    background_writes: bool = True,
) -> Monitor:
    """Wire validation, early stopping, best and last checkpoints, history, TensorBoard and progress.

    On ``evaluator`` ``COMPLETED``, in this order: best tracking, the ``history.csv`` row, the epoch
    log line, TensorBoard, the best checkpoint, early stopping. On ``trainer`` ``EPOCH_COMPLETED``, after
    validation: the last (resume) checkpoint and ``run.json``. Everything stays plain Ignite.

    Args:
        trainer, evaluator: the engines (e.g. from :func:`build_trainer` / :func:`build_evaluator`).
        val_loader: validation batches, run through ``evaluator`` on ``validate_on``.
        run_dir: folder of the run (``reports/<name>``); see ``reports/README.md``.
        objective: the metric and mode that define "better" everywhere.
        to_save: stateful objects for checkpoints; ``"model"`` is required; add ``"optimizer"``,
            ``"scheduler"``... The first optimizer found gives the ``lr`` column.
        patience: validations without improvement before stopping; ``None`` disables early stopping.
        baseline, target, divergence: see :class:`EarlyStopping`.
        n_saved: best checkpoints kept. Default 3.
        restore_best: load the best weights into the model when training ends. Default True.
        log_every: iterations between training-loss points (TensorBoard, NaN check); the progress bar
            redraws by time (at most every 0.5 s).
        validate_on: trainer event running validation. Default ``Events.EPOCH_COMPLETED``.
        resume: continue the run in ``run_dir`` from its last checkpoint (a new run if there is none).
        overwrite: replace a run already in ``run_dir``.
        hparams, seed: recorded in ``run.json``; the library never seeds.
        tqdm_kwargs: passed to the progress bar (``file=``, ``disable=``...).
        background_writes: write checkpoints and ``run.json`` on a background thread, in order
            (default). Training then waits only for a copy of the state (a 50M-parameter save
            blocks 0.49x a plain ``torch.save``), but that thread's Python work competes for the
            GIL: on epochs of a few tens of ms with a tiny model, ``False`` is 2-3 ms per epoch faster.

    Returns:
        The :class:`Monitor` holding the attached handlers.

    Examples:
        .. code-block:: python

            run = attach_monitoring(trainer, evaluator, val_loader, run_dir="reports/mlp",
                                    objective=Objective("loss", mode="min"),
                                    to_save={"model": model, "optimizer": optimizer})
            with run:
                trainer.run(train_loader, max_epochs=1000)
    """
    if not isinstance(trainer, Engine) or not isinstance(evaluator, Engine):
        raise TypeError(
            f"Arguments trainer and evaluator should be ignite Engines, got {type(trainer).__name__} "
            f"and {type(evaluator).__name__}."
        )
    if not isinstance(objective, Objective):
        raise TypeError(f"Argument objective should be a monitor.Objective, got {objective!r}.")
    _check_to_save(to_save)
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"Argument patience should be a positive integer or None, got {patience!r}.")
    positive_int("n_saved", n_saved)
    positive_int("log_every", log_every)
    if patience is not None:  # before anything touches the disk
        check_early_stopping_args(objective, patience, baseline=baseline, target=target, divergence=divergence)
    # Rank 0 checks and locks the folder; its verdict (or error) reaches every rank.
    lock = RunLock(run_dir)
    on_main_process(lambda: str(prepare_run_dir(run_dir, resume=resume, overwrite=overwrite, lock=lock).root))
    paths = RunPaths(run_dir)
    try:
        config = {
            "objective": objective.to_dict(),
            "early_stopping": None if patience is None else
            {"patience": patience, "baseline": baseline, "target": target, "divergence": divergence},
            "n_saved": n_saved,
            "hparams": dict(hparams or {}),
            "seed": seed,
        }
        run = Monitor(trainer, paths, objective, config, lock, background_writes=background_writes)
        required = {*to_save, *_OWN_KEYS} - ({"early_stopping"} if patience is None else set())
        resume_state = read_resume_state(run, required) if resume else None
        optimizer = next((o for o in to_save.values() if isinstance(o, torch.optim.Optimizer)), None)

        run.train_loss = attach_train_loss(trainer, check_every=log_every)
        attach_validation(trainer, evaluator, val_loader, event=validate_on)
        run.best = attach_best_tracker(evaluator, trainer, objective)
        run.history = attach_history(
            evaluator, trainer, run.best, paths.history, train_loss=run.train_loss, optimizer=optimizer
        )
        main = is_main_process()
        if main:
            attach_epoch_log(evaluator, trainer, run.history)
        if main and not run.is_finished:
            # On resume, points at and after the first step to redo are hidden (all of them when
            # there is no checkpoint and the run starts over).
            purge = None if not resume else 0 if resume_state is None else int(resume_state["trainer"]["iteration"]) + 1
            run.tensorboard = attach_tensorboard(
                trainer, evaluator, paths.tensorboard, optimizer=optimizer, log_every=log_every, purge_step=purge
            )
        run.best_checkpoint = attach_best_checkpoint(
            evaluator, trainer, run.best, {"model": to_save["model"]}, paths.checkpoints, n_saved=n_saved,
            writer=run.writer,
        )
        if patience is not None:
            run.early_stopping = attach_early_stopping(
                evaluator, trainer, objective, patience, baseline=baseline, target=target, divergence=divergence
            )
        state_objects: dict[str, Any] = {
            **to_save, "trainer": trainer, "best": run.best, "best_checkpoint": run.best_checkpoint,
            "train_loss": run.train_loss, "history": run.history, "rng": RNGState(),
        }
        if run.early_stopping is not None:
            state_objects["early_stopping"] = run.early_stopping
        run.last_checkpoint = attach_last_checkpoint(trainer, state_objects, paths.checkpoints, writer=run.writer)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: run._write_record())
        if resume_state is not None:
            restore(run, state_objects, resume_state)
        elif resume:
            start_over(run)
        if restore_best:
            model = to_save["model"]
            run._restore_best = lambda: restore_best_weights(run.best_checkpoint, model)
        if run.is_finished:
            trainer.add_event_handler(Events.STARTED, _train_nothing(run))
        else:
            trainer.add_event_handler(Events.STARTED, run._on_started)
            if run.decided_stop is not None:
                trainer.add_event_handler(Events.STARTED, _record_decided_stop(run))
            trainer.add_event_handler(Events.TERMINATE, run._on_terminate)
            trainer.add_event_handler(Events.COMPLETED, run._on_completed)
            trainer.add_event_handler(Events.EXCEPTION_RAISED, run._on_exception)
            run.graceful_stop = attach_graceful_stop(trainer)
            if main:
                run.progress_bar = attach_progress_bar(trainer, **dict(tqdm_kwargs or {}))
        return run
    except BaseException:
        lock.release()
        raise


def _train_nothing(run: Monitor) -> Any:
    def stop(trainer: Engine) -> None:
        logger.info(
            "Run %s already finished (%s, %s); nothing to train.",
            run.run_dir, run._record.get("status"), run._record.get("stop_reason"),
        )
        run.status = RunStatus(run._record["status"])
        reason = run._record.get("stop_reason")
        run.stop_reason = None if reason is None else StopReason(reason)
        trainer.terminate()
        if run._restore_best is not None:
            run._restore_best()

    return stop


def _record_decided_stop(run: Monitor) -> Any:
    # The last checkpoint says the run had stopped (early stopping, a NaN loss, max_epochs) but the
    # process died before run.json said so: train nothing more, just record the end. (Without this,
    # Ignite would train on, or, at max_epochs, restart from epoch 0.)
    def stop(trainer: Engine) -> None:
        logger.info("Run %s had stopped (%s) before it could record it; recording it now.",
                    run.run_dir, run.decided_stop.value if run.decided_stop else "-")
        trainer.terminate()

    return stop


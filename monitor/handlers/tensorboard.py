"""TensorBoard scalars through Ignite's TensorboardLogger, over tensorboardX's writer made durable (tb_writer.py)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from ignite.handlers.tensorboard_logger import OutputHandler

from monitor.core._position import run_iteration
from monitor.handlers.best import BestTracker
from monitor.handlers.loss import TrainLoss, loss_from_output
from monitor.handlers.lr import LearningRates, learning_rates
from monitor.handlers.step import StepWork, step_for
from monitor.store.history import is_evidence_column

__all__ = ["DurableTensorboardLogger", "attach_tensorboard"]


class DurableTensorboardLogger(TensorboardLogger):
    """Ignite's ``TensorboardLogger`` over a writer whose ``flush()`` puts every point on disk.

    Examples:
        .. code-block:: python

            tb = DurableTensorboardLogger(run_dir / "tb")
            tb.attach(trainer, OutputHandler(tag="train", output_transform=...), Events.ITERATION_COMPLETED)
            tb.writer.flush()   # durable: a kill after this loses nothing written before
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        # Not TensorboardLogger.__init__, which builds tensorboardX's queued SummaryWriter.
        from monitor.handlers.tb_writer import DurableSummaryWriter  # tensorboardX, loaded when a logger is made

        # tensorboardX names event files by time (seconds) and host: a resume within the same second
        # would reopen, and truncate, the previous segment's file. A nanosecond suffix keeps them
        # apart and in write order (TensorBoard reads a folder's files sorted by name).
        self.writer = DurableSummaryWriter(
            logdir=str(log_dir), purge_step=purge_step, filename_suffix=f".{time.time_ns()}"
        )


class TrainLossPoints:
    """Write the step's loss as ``train/loss`` at step = the trainer's iteration, every ``log_every`` steps:
    the same event as Ignite's ``OutputHandler`` through tensorboardX's ``add_scalar`` writes, handed to
    the writer as a tuple it makes the event of when it writes
    (:meth:`~monitor.handlers.tb_writer.SyncEventFileWriter.add_point`). That path lacked only speed:
    its checks and summary builder cost about 45 us a point on the training thread, a call here about 17.

    Once the event file is open, ``inline`` is the writer's list of waiting events: a
    :class:`~monitor.handlers.step.StepWork` appends a step's number loss to it itself (no call), and
    has it handed to the OS (:meth:`hand_over`) once ``due_at`` comes, within a second as the writer
    does with what it is given (see :class:`~monitor.handlers.step.PointSink`).

    Examples:
        .. code-block:: python

            points = TrainLossPoints(tb_logger)
            step.points = points          # a StepWork's: train/loss every log_every steps
    """

    tag = "train/loss"

    def __init__(self, tb_logger: TensorboardLogger, read: Callable[[Any], float] = float) -> None:
        self._tb_logger, self._read = tb_logger, read
        self.inline: list[Any] | None = None
        self._writer: Any = None  # the event writer whose list inline is
        self.offset = 0  # the trainer's iteration to the run's (run_iteration), read at each epoch's start
        self.wall_offset = time.time() - time.monotonic()  # the step's clock to the wall's
        self.due_at = math.inf

    def started(self, engine: Engine) -> None:
        self.offset = run_iteration(engine.state) - engine.state.iteration
        self.wall_offset = time.time() - time.monotonic()

    def __call__(self, engine: Engine) -> None:
        output: Any = engine.state.output
        loss = output["loss"] if type(output) is dict and "loss" in output else loss_from_output(output)
        value = loss if type(loss) is float else self._read(loss)  # (build_trainer's on the CPU: a float)
        summary_writer = self._tb_logger.writer  # tensorboardX's way to its FileWriter, without a call if open
        writer = (summary_writer.file_writer or summary_writer._get_file_writer()).event_writer
        writer.add_event((self.tag, value, run_iteration(engine.state), time.time()))  # see add_point
        if self.inline is None and not writer.closed:  # the file is open: the next points may join its list
            self._writer, self.inline, self.due_at = writer, writer.waiting, writer.due_at

    def hand_over(self, now: float) -> None:
        """The waiting points to the OS; the next time due about a second from ``now``."""
        writer = self._writer
        if writer.closed:  # (closed while training goes on: the points go through add_event, which drops them)
            self.inline, self.due_at = None, math.inf
            writer.waiting.clear()
            return
        writer.hand_over(now)
        self.due_at = writer.due_at
        self.wall_offset = time.time() - now


def _row_tag(column: str) -> str | None:
    """The TensorBoard tag of a history column it does not log otherwise (``train/loss`` and
    ``val/*`` come from Ignite's handlers, ``lr`` above)."""
    if column in ("samples_per_s", "data_wait_frac"):
        return f"perf/{column}"
    if column.startswith("train_") and column != "train_loss" and not is_evidence_column(column):
        return f"train/{column[len('train_'):]}"  # (the diagnosis's evidence stays in history.csv)
    return None


def attach_tensorboard(
    trainer: Engine,
    evaluator: Engine,
    log_dir: str | Path,
    *,
    optimizer: torch.optim.Optimizer | LearningRates | None = None,
    log_every: int | None = None,
    purge_step: int | None = None,
    row: Callable[[], Mapping[str, Any]] | None = None,
    hparams: Mapping[str, Any] | None = None,
    best: BestTracker | None = None,
    step: StepWork | None = None,
    train_loss: TrainLoss | None = None,
) -> DurableTensorboardLogger:
    """Write ``train/loss`` every ``log_every`` iterations and ``val/<metric>`` and ``lr`` after each
    validation run, all at step = the trainer's iteration (one step unit, so ``purge_step`` works).

    Args:
        trainer: engine whose output holds the loss; its iteration is the step.
        evaluator: engine whose ``state.metrics`` are logged on ``COMPLETED``.
        log_dir: folder for the event files.
        optimizer: source of ``lr`` (optional; a :class:`~monitor.handlers.lr.LearningRates` gives the
            rate each epoch trained with).
        log_every: iterations between training-loss points (default 10; with ``step``, its ``log_every``).
        purge_step: on resume, the first step to write again; TensorBoard hides older points at and
            after it. Default None.
        row: the history row of this validation (optional): its other training columns go to
            ``train/<name>`` and ``samples_per_s``/``data_wait_frac`` to ``perf/<name>``.
        hparams: the run's hyper-parameters (optional), written with ``best``'s objective in the
            form TensorBoard's HParams dashboard reads (see :func:`~monitor.handlers.tensorboard.write_hparams`).
        best: the tracker whose new best values go to ``hparams/best_<column>`` (optional).
        step: the :class:`~monitor.handlers.step.StepWork` that writes ``train/loss`` as part of its one
            handler (default: one of its own).
        train_loss: the :class:`~monitor.handlers.loss.TrainLoss` whose check, just before, read the
            step's loss: ``train/loss`` takes that value instead of reading the tensor again (a torch
            call after the step's own work: about 35 us of CPU a point). Default None: read here.

    Examples:
        .. code-block:: python

            tb = attach_tensorboard(trainer, evaluator, run_dir / "tb", optimizer=optimizer)
            ...
            tb.close()
    """
    step = step_for(trainer, step, log_every, "log_every")
    tb_logger = DurableTensorboardLogger(log_dir, purge_step=purge_step)

    def trainer_step(*_: Any) -> int:
        return run_iteration(trainer.state)

    if step.points is not None:
        raise ValueError("Argument step already writes a train/loss point: one TensorBoard logger a trainer.")
    step.points = TrainLossPoints(tb_logger, float if train_loss is None else train_loss.as_number)
    trainer.add_event_handler(Events.EPOCH_STARTED, step.points.started)
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    # Ignite's OutputHandler picks and names the metrics (val/<name>, a vector's val/<name>/<i>); they
    # are written below with the rest of the validation's points, in one event.
    val_metrics = OutputHandler(tag="val", metric_names="all")

    hparams_due = hparams is not None

    def log_validation(_: Engine) -> None:
        nonlocal hparams_due
        if hparams_due:  # with the first points, not at attach: a start that trains nothing writes no file
            hparams_due = False
            write_hparams(tb_logger, hparams or {}, [] if best is None else [_best_tag(best)])
        # One event for all of the validation's points (val/*, lr, the best, the row's train/* and
        # perf/*), instead of one add_scalar each (an event, a summary and two Python CRCs a point:
        # 0.6 ms per validation on a fast loop). Ignite's OptimizerParamsHandler has no
        # global_step_transform: from the evaluator it would log at the evaluator's own epoch
        # (always 1), so lr is written here at the trainer's step.
        points = [(tag, float(value)) for tag, value in
                  val_metrics._setup_output_metrics_state_attrs(evaluator, key_tuple=False).items()]
        points += [(name, float(value)) for name, value in learning_rates(optimizer).items()]
        if best is not None and best.is_best and best.best_value is not None:
            points.append((_best_tag(best), float(best.best_value)))
        for name, value in (row() if row is not None else {}).items():
            tag = _row_tag(name)
            if tag is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                points.append((tag, float(value)))
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value) for tag, value in points])
        file_writer = tb_logger.writer._get_file_writer()  # tensorboardX's own way to its FileWriter
        file_writer.add_event(Event(summary=summary, step=trainer_step(), wall_time=time.time()))
        # To the OS now (a kill keeps them); durable (fsync) with the next last checkpoint, which
        # flushes first: a resume hides every point after its checkpoint anyway (purge_step).
        file_writer.event_writer.hand_over()

    evaluator.add_event_handler(Events.COMPLETED, log_validation)
    return tb_logger


def _best_tag(best: BestTracker) -> str:
    return f"hparams/best_{best.objective.column}"


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, (bool, int, float, str)):
        return value
    return "None" if value is None else str(value)  # lists, dicts...: as text, one choice each


def write_hparams(tb_logger: TensorboardLogger, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
    """Write ``hparams`` and the names of their ``metrics`` (scalar tags of this run) as TensorBoard's
    HParams plugin reads them, into this run's own event file (tensorboardX's ``add_hparams`` would
    make a sub-run of its own, apart from the scalars, with a queued writer).

    Examples:
        .. code-block:: python

            write_hparams(tb, {"lr": 0.01, "hidden": [100, 100]}, ["hparams/best_val_loss"])
    """
    from tensorboardX.summary import hparams as hparams_summaries

    values = {str(k): _hparam_value(v) for k, v in hparams.items()}
    experiment, session_start, session_end = hparams_summaries(values, {tag: 0.0 for tag in metrics})
    file_writer = tb_logger.writer._get_file_writer()  # tensorboardX's own way to its FileWriter
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)

"""HistoryRecorder: one row per validation run -> ``history.csv``."""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.base.mixins import Serializable
from ignite.engine import Engine, Events
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric

from monitor.core._position import run_iteration
from monitor.handlers.best import BestTracker
from monitor.handlers.loss import TrainLoss
from monitor.handlers.lr import LearningRates, learning_rates
from monitor.handlers.outputs import Throughput, TrainOutputs
from monitor.runtime.distributed import is_main_process
from monitor.store.faults import crash_point
from monitor.store.history import History

__all__ = ["HistoryRecorder", "attach_history", "learning_rates"]  # learning_rates: moved to handlers.lr


_MAX_ELEMENTS = 64  # a metric with more values (e.g. a confusion matrix) stays in TensorBoard only


def _cells(column: str, value: Any) -> dict[str, Any]:
    """The history cells of one metric: one, or one per element of a 1-d tensor (``val_precision_0``...)."""
    if isinstance(value, torch.Tensor):
        if value.numel() == 1:
            return {column: float(value)}
        if value.dim() == 1 and value.numel() <= _MAX_ELEMENTS:
            return {f"{column}_{i}": float(v) for i, v in enumerate(value.tolist())}
        return {}
    if isinstance(value, (int, float, str, bool)) or value is None:
        return {column: value}
    return {}  # a dict: Ignite also puts each of its items among the metrics, under its own key


def _epoch_metrics_now(trainer: Engine) -> dict[str, Any]:
    """The trainer's epoch-wise metrics computed now, over the epoch so far.

    Ignite's ``Metric`` writes ``trainer.state.metrics`` in its own ``EPOCH_COMPLETED`` handler: one
    attached after monitoring, or read by a validation within the epoch, would give the row the
    previous epoch's value. Computing them here gives each row its own epoch's (so far)."""
    values = {}
    for handler, args, _ in trainer._event_handlers.get(Events.EPOCH_COMPLETED, []):  # (no public listing)
        metric = getattr(handler, "__self__", None)
        if isinstance(metric, Metric) and getattr(handler, "__name__", None) == "completed" and len(args) > 1:
            try:
                values[str(args[-1])] = metric.compute()
            except NotComputableError:  # no step yet in this epoch: no value, rather than the last epoch's
                values[str(args[-1])] = None
    return values


class HistoryRecorder(Serializable):
    """Append one row to ``history.csv`` after each validation run.

    Row: ``epoch, iteration, elapsed_s, epoch_s, samples_per_s, data_wait_frac, lr, train_loss, train_loss_spike,
    train_loss_start, train_<output or trainer metric>..., val_<metric>..., is_best``. ``elapsed_s`` is the training
    wall time summed over every segment of a resumed run.

    Args:
        history: the :class:`~monitor.store.History` to append to.
        trainer: engine whose ``epoch``/``iteration`` label the row.
        best: the tracker whose ``is_best`` fills the column of that name.
        train_loss: source of the epoch's mean training loss (optional).
        optimizer: source of the learning rate (optional): a :class:`~monitor.handlers.lr.LearningRates`
            (the rate each epoch trained with) or an optimizer (its rate when the row is written).
        train_outputs: source of the other scalars of the trainer's output (optional).
        throughput: source of ``samples_per_s`` and ``data_wait_frac`` (optional).
        columns: more sources of columns (the parts' ``columns``), merged in before ``is_best``.

    Metrics attached to the trainer (``trainer.state.metrics``) become ``train_<name>`` columns.

    Examples:
        .. code-block:: python

            recorder = HistoryRecorder(History(run_dir / "history.csv"), trainer=trainer, best=best)
            trainer.add_event_handler(Events.EPOCH_STARTED, recorder.epoch_started)
            evaluator.add_event_handler(Events.COMPLETED, recorder)   # attached to the *evaluator*
    """

    _state_dict_all_req_keys = ("elapsed_s",)

    def __init__(
        self,
        history: History,
        trainer: Engine,
        best: BestTracker,
        *,
        train_loss: TrainLoss | None = None,
        optimizer: torch.optim.Optimizer | LearningRates | None = None,
        train_outputs: TrainOutputs | None = None,
        throughput: Throughput | None = None,
        columns: Sequence[Callable[[], Mapping[str, Any]]] = (),
    ) -> None:
        self.history = history
        self.columns = list(columns)
        self.train_outputs = train_outputs
        self.throughput = throughput
        self.trainer = trainer
        self.best = best
        self.train_loss = train_loss
        self.optimizer = optimizer
        self._elapsed_before = 0.0  # from earlier segments (restored on resume)
        self._segment_start: float | None = None
        self._epoch_start: float | None = None
        self.last_row: dict[str, Any] = {}

    @property
    def elapsed_s(self) -> float:
        """Training wall time so far, all segments."""
        if self._segment_start is None:
            return self._elapsed_before
        return self._elapsed_before + time.perf_counter() - self._segment_start

    def segment_started(self, _: Engine) -> None:
        self._segment_start = time.perf_counter()

    def epoch_started(self, _: Engine) -> None:
        self._epoch_start = time.perf_counter()

    def __call__(self, evaluator: Engine) -> None:
        now = time.perf_counter()
        row: dict[str, Any] = {
            "epoch": self.trainer.state.epoch,
            "iteration": run_iteration(self.trainer.state),
            "elapsed_s": round(self.elapsed_s, 6),
            "epoch_s": None if self._epoch_start is None else round(now - self._epoch_start, 6),
            **(self.throughput.values() if self.throughput is not None else {}),
            **learning_rates(self.optimizer),
        }
        row.update(self.train_columns())
        for name, value in evaluator.state.metrics.items():
            row.update(_cells(f"val_{name}", value))
        for columns in self.columns:
            row.update(columns())
        row["is_best"] = self.best.is_best
        if is_main_process():  # one writer: rank 0
            self.history.append(row)
        self.last_row = row
        crash_point("after_history_row")

    def train_columns(self) -> dict[str, Any]:
        """The training columns of the epoch so far: ``train_loss`` (and its ``train_loss_spike`` and
        ``train_loss_start``, the diagnosis's evidence),
        the step's other outputs and the trainer's metrics, as ``train_<name>``."""
        row: dict[str, Any] = {}
        if self.train_loss is not None:
            row["train_loss"] = self.train_loss.running_mean()  # the epoch so far (all of it at its end)
            row["train_loss_spike"] = self.train_loss.spike
            row["train_loss_start"] = self.train_loss.start
        if self.train_outputs is not None:
            row.update(self.train_outputs.values())
        for name, value in {**self.trainer.state.metrics, **_epoch_metrics_now(self.trainer)}.items():
            for column, cell in _cells(f"train_{name}", value).items():
                row.setdefault(column, cell)  # the step's own output and train_loss come first
        return row

    def state_dict(self) -> OrderedDict[str, Any]:
        # The rows as written so far: a resume checks the file against them (and repairs it from them).
        return OrderedDict(elapsed_s=self.elapsed_s, rows=[dict(row) for row in self.history.written])

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._elapsed_before = float(state_dict["elapsed_s"])
        if state_dict.get("rows") is not None:  # the rows as written (a resume makes the file hold them again)
            self.history.written = [dict(row) for row in state_dict["rows"]]

        if self._segment_start is not None:
            self._segment_start = time.perf_counter()


def attach_history(
    evaluator: Engine,
    trainer: Engine,
    best: BestTracker,
    path: str | Path,
    *,
    train_loss: TrainLoss | None = None,
    optimizer: torch.optim.Optimizer | LearningRates | None = None,
    train_outputs: TrainOutputs | None = None,
    throughput: Throughput | None = None,
    columns: Sequence[Callable[[], Mapping[str, Any]]] = (),
) -> HistoryRecorder:
    """Attach a :class:`HistoryRecorder` writing ``path``: rows on ``evaluator`` ``COMPLETED``,
    clocks on ``trainer`` ``STARTED``/``EPOCH_STARTED``."""
    recorder = HistoryRecorder(History(path), trainer, best, train_loss=train_loss, optimizer=optimizer,
                               train_outputs=train_outputs, throughput=throughput, columns=columns)
    trainer.add_event_handler(Events.STARTED, recorder.segment_started)
    trainer.add_event_handler(Events.EPOCH_STARTED, recorder.epoch_started)
    evaluator.add_event_handler(Events.COMPLETED, recorder)
    return recorder

"""monitor: an event-driven training-monitoring engine on PyTorch-Ignite."""
from monitor.distributed import UnpaddedDistributedSampler, validation_loader
from monitor.engines import build_evaluator, build_trainer
from monitor.handlers import (
    BestTracker,
    DurableDiskSaver,
    EarlyStopping,
    HistoryRecorder,
    TrainLoss,
    attach_best_checkpoint,
    attach_best_tracker,
    attach_early_stopping,
    attach_history,
    attach_last_checkpoint,
    attach_progress_bar,
    attach_tensorboard,
    attach_train_loss,
    attach_validation,
)
from monitor.history import History
from monitor.objective import Objective
from monitor.report import Run, RunDirectoryError, compare, load_run, plot_runs, read_scalars, to_html
from monitor.run import Monitor, attach_monitoring
from monitor.rundir import CheckpointError
from monitor.status import RunStatus, StopReason

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "build_trainer",
    "build_evaluator",
    "validation_loader",
    "UnpaddedDistributedSampler",
    "Objective",
    "History",
    "Monitor",
    "attach_monitoring",
    "RunStatus",
    "StopReason",
    "CheckpointError",
    "Run",
    "RunDirectoryError",
    "load_run",
    "compare",
    "plot_runs",
    "read_scalars",
    "to_html",
    "BestTracker",
    "DurableDiskSaver",
    "EarlyStopping",
    "HistoryRecorder",
    "TrainLoss",
    "attach_best_checkpoint",
    "attach_best_tracker",
    "attach_early_stopping",
    "attach_history",
    "attach_last_checkpoint",
    "attach_progress_bar",
    "attach_tensorboard",
    "attach_train_loss",
    "attach_validation",
]

"""monitor: an event-driven training-monitoring engine on PyTorch-Ignite.

The public names are imported on first use, from the table below, so that reviewing runs
(``monitor.report``, the ``monitor`` command) loads neither torch nor Ignite.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it. Static: nothing is discovered at run time.
_EXPORTS = {
    "build_trainer": "monitor.engines",
    "build_evaluator": "monitor.engines",
    "validation_loader": "monitor.distributed",
    "UnpaddedDistributedSampler": "monitor.distributed",
    "Objective": "monitor.objective",
    "History": "monitor.history",
    "Monitor": "monitor.lifecycle",
    "attach_monitoring": "monitor.run",
    "RunStatus": "monitor.status",
    "StopReason": "monitor.status",
    "CheckpointError": "monitor.checkpoint_io",
    "RunDirectoryBusy": "monitor.lock",
    "RunDirectoryLost": "monitor.lock",
    "Run": "monitor.report.load",
    "RunDirectoryError": "monitor.report.load",
    "load_run": "monitor.report.load",
    "diagnose": "monitor.report.load",
    "Finding": "monitor.diagnosis",
    "compare": "monitor.report.summary",
    "plot_runs": "monitor.report.plots",
    "read_scalars": "monitor.report.events",
    "to_html": "monitor.report.html",
    "BestTracker": "monitor.handlers.best",
    "DurableDiskSaver": "monitor.handlers.checkpoint",
    "EarlyStopping": "monitor.handlers.stopping",
    "HistoryRecorder": "monitor.handlers.history",
    "TrainLoss": "monitor.handlers.loss",
    "attach_best_checkpoint": "monitor.handlers.checkpoint",
    "attach_best_tracker": "monitor.handlers.best",
    "attach_early_stopping": "monitor.handlers.stopping",
    "attach_history": "monitor.handlers.history",
    "attach_last_checkpoint": "monitor.handlers.checkpoint",
    "attach_progress_bar": "monitor.handlers.progress",
    "attach_tensorboard": "monitor.handlers.tensorboard",
    "attach_train_loss": "monitor.handlers.loss",
    "attach_validation": "monitor.handlers.validation",
    "LROnPlateau": "monitor.handlers.plateau",
    "attach_grad_norm": "monitor.handlers.outputs",
    "attach_lr_on_plateau": "monitor.handlers.plateau",
}
# Submodules reachable as attributes (``monitor.manifest.Manifest``) without importing them first.
_SUBMODULES = (
    "checkpoint_io", "diagnosis", "distributed", "engines", "handlers", "history", "layout", "lifecycle", "lock",
    "manifest", "objective", "record", "report", "resume", "run", "rundir", "status", "writer",
)

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
    "RunDirectoryBusy",
    "RunDirectoryLost",
    "Run",
    "RunDirectoryError",
    "load_run",
    "diagnose",
    "Finding",
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
    "LROnPlateau",
    "attach_lr_on_plateau",
    "attach_grad_norm",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"monitor.{name}")
    else:
        raise AttributeError(f"module 'monitor' has no attribute {name!r}")
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from monitor.checkpoint_io import CheckpointError
    from monitor.diagnosis import Finding
    from monitor.distributed import UnpaddedDistributedSampler, validation_loader
    from monitor.engines import build_evaluator, build_trainer
    from monitor.handlers.best import BestTracker, attach_best_tracker
    from monitor.handlers.checkpoint import DurableDiskSaver, attach_best_checkpoint, attach_last_checkpoint
    from monitor.handlers.history import HistoryRecorder, attach_history
    from monitor.handlers.loss import TrainLoss, attach_train_loss
    from monitor.handlers.outputs import attach_grad_norm
    from monitor.handlers.plateau import LROnPlateau, attach_lr_on_plateau
    from monitor.handlers.progress import attach_progress_bar
    from monitor.handlers.stopping import EarlyStopping, attach_early_stopping
    from monitor.handlers.tensorboard import attach_tensorboard
    from monitor.handlers.validation import attach_validation
    from monitor.history import History
    from monitor.lifecycle import Monitor
    from monitor.lock import RunDirectoryBusy, RunDirectoryLost
    from monitor.objective import Objective
    from monitor.report.events import read_scalars
    from monitor.report.html import to_html
    from monitor.report.load import Run, RunDirectoryError, diagnose, load_run
    from monitor.report.plots import plot_runs
    from monitor.report.summary import compare
    from monitor.run import attach_monitoring
    from monitor.status import RunStatus, StopReason

"""monitor: an event-driven training-monitoring engine on PyTorch-Ignite.

The public names are imported on first use, from the table below, so that reviewing runs
(``monitor.review``, the ``monitor`` command) loads neither torch nor Ignite.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from monitor.core.version import VERSION as __version__

# Public name -> the module that defines it. Static: nothing is discovered at run time.
_EXPORTS = {
    "build_trainer": "monitor.runtime.engines",
    "build_evaluator": "monitor.runtime.engines",
    "validation_loader": "monitor.runtime.distributed",
    "UnpaddedDistributedSampler": "monitor.runtime.distributed",
    "Objective": "monitor.core.objective",
    "History": "monitor.store.history",
    "Monitor": "monitor.compose.monitor",
    "attach_monitoring": "monitor.compose.attach",
    "RunStatus": "monitor.core.status",
    "StopReason": "monitor.core.status",
    "CheckpointError": "monitor.runtime.checkpoint_io",
    "RunDirectoryBusy": "monitor.store.lock",
    "RunDirectoryLost": "monitor.store.lock",
    "Run": "monitor.review.load",
    "RunDirectoryError": "monitor.review.load",
    "load_run": "monitor.review.load",
    "diagnose": "monitor.review.load",
    "Finding": "monitor.diagnosis",
    "compare": "monitor.review.summary",
    "plot_runs": "monitor.review.plots",
    "read_scalars": "monitor.review.events",
    "to_html": "monitor.review.html",
    "BestTracker": "monitor.handlers.best",
    "DurableDiskSaver": "monitor.handlers.checkpoint",
    "EarlyStopping": "monitor.compose.settings",
    "Checkpoints": "monitor.compose.settings",
    "Console": "monitor.compose.settings",
    "Record": "monitor.compose.settings",
    "Part": "monitor.parts.base",
    "PartContext": "monitor.parts.base",
    "GradNorm": "monitor.parts.grad_norm",
    "EarlyStoppingHandler": "monitor.handlers.stopping",
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
    "LROnPlateau": "monitor.parts.plateau",
    "attach_grad_norm": "monitor.parts.grad_norm",
    "attach_lr_on_plateau": "monitor.parts.plateau",
    "Recovery": "monitor.parts.recovery",
    "SkipStep": "monitor.runtime.skip",
    "MLflow": "monitor.parts.tracking",
    "Tracker": "monitor.parts.tracking",
    "OptunaPruning": "monitor.parts.sweep",
}
# Submodules reachable as attributes (``monitor.store.manifest.Manifest``) without importing them first.
_SUBMODULES = ("compose", "core", "diagnosis", "handlers", "parts", "review", "runtime", "store")

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
    "Checkpoints",
    "Console",
    "Record",
    "Part",
    "PartContext",
    "GradNorm",
    "EarlyStoppingHandler",
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
    "Recovery",
    "SkipStep",
    "MLflow",
    "Tracker",
    "OptunaPruning",
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
    from monitor.compose.attach import attach_monitoring
    from monitor.compose.monitor import Monitor
    from monitor.compose.settings import Checkpoints, Console, EarlyStopping, Record
    from monitor.core.objective import Objective
    from monitor.core.status import RunStatus, StopReason
    from monitor.diagnosis import Finding
    from monitor.handlers.best import BestTracker, attach_best_tracker
    from monitor.handlers.checkpoint import DurableDiskSaver, attach_best_checkpoint, attach_last_checkpoint
    from monitor.handlers.history import HistoryRecorder, attach_history
    from monitor.handlers.loss import TrainLoss, attach_train_loss
    from monitor.handlers.progress import attach_progress_bar
    from monitor.handlers.stopping import EarlyStoppingHandler, attach_early_stopping
    from monitor.handlers.tensorboard import attach_tensorboard
    from monitor.handlers.validation import attach_validation
    from monitor.parts.base import Part, PartContext
    from monitor.parts.grad_norm import GradNorm, attach_grad_norm
    from monitor.parts.plateau import LROnPlateau, attach_lr_on_plateau
    from monitor.parts.recovery import Recovery
    from monitor.parts.sweep import OptunaPruning
    from monitor.parts.tracking import MLflow, Tracker
    from monitor.review.events import read_scalars
    from monitor.review.html import to_html
    from monitor.review.load import Run, RunDirectoryError, diagnose, load_run
    from monitor.review.plots import plot_runs
    from monitor.review.summary import compare
    from monitor.runtime.checkpoint_io import CheckpointError
    from monitor.runtime.distributed import UnpaddedDistributedSampler, validation_loader
    from monitor.runtime.engines import build_evaluator, build_trainer
    from monitor.runtime.skip import SkipStep
    from monitor.store.history import History
    from monitor.store.lock import RunDirectoryBusy, RunDirectoryLost

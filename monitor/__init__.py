"""monitor: an event-driven training-monitoring engine on PyTorch-Ignite.

The top level holds what a run needs: ``attach_monitoring`` with its settings, ``build_trainer`` and
``build_evaluator``, ``Objective``, the parts (``Part`` and the shipped ones), ``load_run`` and
``compare``, and the errors. The rest lives in its layer: the handlers one by one in
``monitor.handlers``, the review in ``monitor.review``, the distributed helpers in ``monitor.runtime``.
The names are imported on first use, from the table below, so that reviewing runs
(``monitor.review``, the ``monitor`` command) loads neither torch nor Ignite.

Examples:
    .. code-block:: python

        import monitor
        run = monitor.attach_monitoring(trainer, evaluator, val_loader, run_dir="reports/mlp",
                                        objective=monitor.Objective("loss", mode="min"),
                                        to_save={"model": model, "optimizer": optimizer})
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from monitor.core.version import VERSION as __version__

# Public name -> the module that defines it. Static: nothing is discovered at run time.
_EXPORTS = {
    "attach_monitoring": "monitor.compose.attach",
    "build_trainer": "monitor.runtime.engines",
    "build_evaluator": "monitor.runtime.engines",
    "Objective": "monitor.core.objective",
    "EarlyStopping": "monitor.compose.settings",
    "Checkpoints": "monitor.compose.settings",
    "Console": "monitor.compose.settings",
    "Record": "monitor.compose.settings",
    "Part": "monitor.parts.base",
    "GradNorm": "monitor.parts.grad_norm",
    "LROnPlateau": "monitor.parts.plateau",
    "Recovery": "monitor.parts.recovery",
    "SkipStep": "monitor.runtime.skip",
    "MLflow": "monitor.parts.tracking",
    "Tracker": "monitor.parts.tracking",
    "OptunaPruning": "monitor.parts.sweep",
    "load_run": "monitor.review.load",
    "compare": "monitor.review.summary",
    "CheckpointError": "monitor.runtime.checkpoint_io",
    "RunDirectoryBusy": "monitor.store.lock",
    "RunDirectoryLost": "monitor.store.lock",
}
# Names that left the top level (pre-1.0) -> their home: asking for one says where it went.
_MOVED = {
    "validation_loader": "monitor.runtime",
    "UnpaddedDistributedSampler": "monitor.runtime",
    "History": "monitor.store",
    "Monitor": "monitor.compose",
    "RunStatus": "monitor.core",
    "StopReason": "monitor.core",
    "Run": "monitor.review",
    "RunDirectoryError": "monitor.review",
    "plot_runs": "monitor.review",
    "read_scalars": "monitor.review",
    "to_html": "monitor.review",
    "Finding": "monitor.diagnosis",
    "BestTracker": "monitor.handlers",
    "DurableDiskSaver": "monitor.handlers",
    "EarlyStoppingHandler": "monitor.handlers",
    "HistoryRecorder": "monitor.handlers",
    "TrainLoss": "monitor.handlers",
    "attach_best_checkpoint": "monitor.handlers",
    "attach_best_tracker": "monitor.handlers",
    "attach_early_stopping": "monitor.handlers",
    "attach_history": "monitor.handlers",
    "attach_last_checkpoint": "monitor.handlers",
    "attach_progress_bar": "monitor.handlers",
    "attach_tensorboard": "monitor.handlers",
    "attach_train_loss": "monitor.handlers",
    "attach_validation": "monitor.handlers",
    "attach_lr_on_plateau": "monitor.parts",
    "attach_grad_norm": "monitor.parts",
    "PartContext": "monitor.parts",
    "diagnose": "monitor.load_run(path).findings (a run's) or monitor.diagnosis.diagnose (history rows')",
}
# Submodules reachable as attributes (``monitor.store.manifest.Manifest``) without importing them first.
_SUBMODULES = ("compose", "core", "diagnosis", "handlers", "parts", "review", "runtime", "store")

__all__ = [
    "__version__",
    "attach_monitoring",
    "build_trainer",
    "build_evaluator",
    "Objective",
    "EarlyStopping",
    "Checkpoints",
    "Console",
    "Record",
    "Part",
    "GradNorm",
    "LROnPlateau",
    "Recovery",
    "SkipStep",
    "MLflow",
    "Tracker",
    "OptunaPruning",
    "load_run",
    "compare",
    "CheckpointError",
    "RunDirectoryBusy",
    "RunDirectoryLost",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"monitor.{name}")
    elif name in _MOVED:
        home = _MOVED[name]
        where = f"{home}.{name}" if home.startswith("monitor.") and " " not in home else home
        raise AttributeError(f"monitor.{name} has moved: use {where} (the top level keeps what a run needs; "
                             f"see help(monitor)).")
    else:
        raise AttributeError(f"module 'monitor' has no attribute {name!r}")
    globals()[name] = value  # once imported, an ordinary attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})


if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from monitor.compose.attach import attach_monitoring
    from monitor.compose.settings import Checkpoints, Console, EarlyStopping, Record
    from monitor.core.objective import Objective
    from monitor.parts.base import Part
    from monitor.parts.grad_norm import GradNorm
    from monitor.parts.plateau import LROnPlateau
    from monitor.parts.recovery import Recovery
    from monitor.parts.sweep import OptunaPruning
    from monitor.parts.tracking import MLflow, Tracker
    from monitor.review.load import load_run
    from monitor.review.summary import compare
    from monitor.runtime.checkpoint_io import CheckpointError
    from monitor.runtime.engines import build_evaluator, build_trainer
    from monitor.runtime.skip import SkipStep
    from monitor.store.lock import RunDirectoryBusy, RunDirectoryLost

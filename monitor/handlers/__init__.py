"""Handlers: one file per concern, each with an ``attach_*`` returning what it attached."""
from monitor.handlers.best import BestTracker, attach_best_tracker
from monitor.handlers.checkpoint import (
    DurableDiskSaver,
    attach_best_checkpoint,
    attach_last_checkpoint,
    attach_restore_best,
)
from monitor.handlers.history import HistoryRecorder, attach_history
from monitor.handlers.loss import TrainLoss, attach_train_loss
from monitor.handlers.lr import LearningRates
from monitor.handlers.progress import attach_epoch_log, attach_progress_bar
from monitor.handlers.rng import RNGState
from monitor.handlers.stopping import EarlyStoppingHandler, attach_early_stopping
from monitor.handlers.tensorboard import attach_tensorboard
from monitor.handlers.validation import attach_validation

__all__ = [
    "BestTracker",
    "DurableDiskSaver",
    "EarlyStoppingHandler",
    "HistoryRecorder",
    "LearningRates",
    "RNGState",
    "TrainLoss",
    "attach_best_checkpoint",
    "attach_best_tracker",
    "attach_early_stopping",
    "attach_epoch_log",
    "attach_history",
    "attach_last_checkpoint",
    "attach_progress_bar",
    "attach_restore_best",
    "attach_tensorboard",
    "attach_train_loss",
    "attach_validation",
]

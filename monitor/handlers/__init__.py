"""Handlers: one file per concern. What attaches to an engine has an ``attach_*`` returning what it
attached (or an ``attach`` method: :class:`~monitor.handlers.step.StepWork`,
:class:`~monitor.handlers.cadence.CheckpointCadence`); what only holds state for the last checkpoint
(:class:`~monitor.handlers.rng.RNGState`, :class:`~monitor.handlers.lr.LearningRates`, an optimizer
hook) and the support modules (``tb_writer``, ``console_log``) have none.
"""
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

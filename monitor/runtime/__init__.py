"""torch and Ignite below the handlers: engines (build_trainer, build_evaluator), ignite.distributed
helpers, and reading checkpoint files (load, verify, find, fit)."""
from monitor.runtime.checkpoint_io import CheckpointError
from monitor.runtime.distributed import UnpaddedDistributedSampler, validation_loader
from monitor.runtime.engines import build_evaluator, build_trainer
from monitor.runtime.skip import SkipStep

__all__ = ["CheckpointError", "SkipStep", "UnpaddedDistributedSampler", "build_evaluator", "build_trainer",
           "validation_loader"]

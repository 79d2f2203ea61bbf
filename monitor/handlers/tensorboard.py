"""TensorBoard scalars through Ignite's TensorboardLogger (tensorboardX); the only module importing it."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import TensorboardLogger
from ignite.handlers.tensorboard_logger import OutputHandler

from monitor._checks import positive_int
from monitor.handlers.history import learning_rates
from monitor.handlers.loss import loss_from_output

__all__ = ["attach_tensorboard"]


def _require_tensorboardx() -> None:
    try:
        import tensorboardX  # noqa: F401
    except ImportError as e:
        raise ModuleNotFoundError("attach_tensorboard requires tensorboardX: pip install tensorboardX") from e


def attach_tensorboard(
    trainer: Engine,
    evaluator: Engine,
    log_dir: str | Path,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    log_every: int = 10,
    purge_step: int | None = None,
) -> TensorboardLogger:
    """Write ``train/loss`` every ``log_every`` iterations and ``val/<metric>`` and ``lr`` after each
    validation run, all at step = the trainer's iteration (one step unit, so ``purge_step`` works).

    Args:
        trainer: engine whose output holds the loss; its iteration is the step.
        evaluator: engine whose ``state.metrics`` are logged on ``COMPLETED``.
        log_dir: folder for the event files.
        optimizer: source of ``lr`` (optional).
        log_every: iterations between training-loss points. Default 10.
        purge_step: on resume, the first step to write again; TensorBoard hides older points at and
            after it. Default None.

    Examples:
        .. code-block:: python

            tb = attach_tensorboard(trainer, evaluator, run_dir / "tb", optimizer=optimizer)
            ...
            tb.close()
    """
    _require_tensorboardx()
    positive_int("log_every", log_every)
    # tensorboardX names event files by time (seconds) and host: a resume within the same second
    # would reopen, and truncate, the previous segment's file. A nanosecond suffix keeps them apart
    # and in write order (TensorBoard reads a folder's files sorted by name).
    tb_logger = TensorboardLogger(log_dir=str(log_dir), purge_step=purge_step, filename_suffix=f".{time.time_ns()}")

    def trainer_step(*_: Any) -> int:
        return trainer.state.iteration

    tb_logger.attach(
        trainer,
        OutputHandler(tag="train", output_transform=lambda out: {"loss": loss_from_output(out)}),
        Events.ITERATION_COMPLETED(every=log_every),
    )
    tb_logger.attach(
        evaluator,
        OutputHandler(tag="val", metric_names="all", global_step_transform=trainer_step),
        Events.COMPLETED,
    )

    def log_lr_and_flush(_: Engine) -> None:
        # Ignite's OptimizerParamsHandler has no global_step_transform: from the evaluator it would
        # log at the evaluator's own epoch (always 1), so lr is written here at the trainer's step.
        for name, value in learning_rates(optimizer).items():
            tb_logger.writer.add_scalar(name, value, trainer_step())
        tb_logger.writer.flush()

    evaluator.add_event_handler(Events.COMPLETED, log_lr_and_flush)
    return tb_logger

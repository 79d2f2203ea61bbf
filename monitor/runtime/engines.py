"""build_trainer / build_evaluator: thin over Ignite's ``create_supervised_*``; plain Engines out."""
from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, create_supervised_evaluator, create_supervised_trainer
from ignite.metrics import Metric

from monitor.runtime.sharded import is_sharded
from monitor.runtime.skip import SkippingOptimizer, SkipStep, judged_loss

__all__ = ["build_trainer", "build_evaluator", "StepRates", "step_rates"]


def _loss_output(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> dict[str, torch.Tensor | float]:
    return {"loss": _step_loss(loss)}


class StepRates:
    """build_trainer's ``output_transform`` where each step is one ``optimizer.step()``: ``{"loss": loss}``,
    and ``rates``, the learning rates that step used (``None`` before the first), read here, right after
    ``optimizer.step()`` read them, while ``wanted`` (a count of readers).
    :class:`~monitor.handlers.lr.LearningRates` takes them from here instead of a hook in the
    optimizer's step, a call that cost about 2 us of CPU a step (its code and data out of the caches
    after the step's work; ``benchmarks/bench_step_pieces.py``).

    Examples:
        .. code-block:: python

            trainer = build_trainer(model, optimizer, loss_fn)
            rates = step_rates(trainer, optimizer)
            rates.wanted += 1
            trainer.run(loader, max_epochs=1)
            rates.rates                              # [0.01]: the last step's
    """

    __slots__ = ("optimizer", "rates", "wanted")

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.rates: list[Any] | None = None
        self.wanted = 0  # a trainer nobody monitors reads none

    def __call__(self, x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> dict[str, torch.Tensor | float]:
        if self.wanted:
            groups = self.optimizer.param_groups  # (looked up each step: load_state_dict replaces the list)
            self.rates = [groups[0]["lr"]] if len(groups) == 1 else [group["lr"] for group in groups]
        return {"loss": loss.item() if loss.is_cpu else loss.detach()}  # _step_loss, without its call


_STEP_RATES: weakref.WeakKeyDictionary[Engine, StepRates] = weakref.WeakKeyDictionary()


def step_rates(trainer: Engine, optimizer: torch.optim.Optimizer) -> StepRates | None:
    """The rates ``trainer`` reads after each of its steps of ``optimizer``, if :func:`build_trainer` made
    it so (each step one ``optimizer.step()``: no gradient accumulation, no ``GradScaler``, apex or
    ``SkipStep`` that may pass a step over); else ``None``.

    Examples:
        .. code-block:: python

            step_rates(build_trainer(model, optimizer, loss_fn), optimizer)   # a StepRates
            step_rates(Engine(my_step), optimizer)                            # None
    """
    found = _STEP_RATES.get(trainer)
    return found if found is not None and found.optimizer is optimizer else None


def _step_loss(loss: torch.Tensor) -> torch.Tensor | float:
    # On the CPU the loss is read here, as Ignite's own trainer returns it: in the step, just after
    # backward, a read costs less than the detached copy (about 2.5 against 4.5 us of CPU, measured
    # in place), and a handler that reads it later finds torch's code out of the caches (about 3 us a
    # tensor). On a device it stays a tensor: no host sync per step.
    return loss.item() if loss.is_cpu else loss.detach()


def _skipped_output(skip: SkipStep) -> Callable[[Any, Any, Any, torch.Tensor], dict[str, Any]]:
    def output(x: Any, y: Any, y_pred: Any, loss: torch.Tensor) -> dict[str, Any]:
        return {"loss": _step_loss(loss), "skipped": float(skip.last)}  # the train_skipped column: the share skipped
    return output


def build_trainer(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | torch.nn.Module,
    *,
    device: str | torch.device | None = None,
    skip_step: SkipStep | None = None,
    **kwargs: Any,
) -> Engine:
    """A supervised training ``Engine`` whose ``state.output`` is ``{"loss": loss}``: a float on the CPU
    (as Ignite's own trainer gives), the detached tensor on another device (no host sync per step).

    Under ``ignite.distributed`` with several processes, the model is wrapped with
    ``idist.auto_model`` (DDP) and the optimizer with ``idist.auto_optim`` for the training step; a
    model sharded with FSDP2 (``fully_shard``) is trained as it is (FSDP2 reduces the gradients).

    Args:
        model: the model to train.
        optimizer: its optimizer.
        loss_fn: ``loss_fn(y_pred, y)`` returning a scalar tensor.
        device: where batches go (``None``: leave them where they are).
        skip_step: a :class:`~monitor.SkipStep`: a step whose loss is non-finite or far above the
            last ones is not applied (its share of each epoch is the ``train_skipped`` column; its
            state is in monitor's last checkpoint, as ``trainer.state.skip_step``). Default None.
        kwargs: passed to :func:`ignite.engine.create_supervised_trainer` (``prepare_batch``,
            ``amp_mode``, ``gradient_accumulation_steps``, ...); not ``output_transform``.

    Examples:
        .. code-block:: python

            trainer = build_trainer(model, optimizer, torch.nn.CrossEntropyLoss())
            trainer.run(train_loader, max_epochs=10)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"Argument optimizer should be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    if not callable(loss_fn):
        raise TypeError(f"Argument loss_fn should be callable, got {loss_fn!r}.")
    if skip_step is not None and not isinstance(skip_step, SkipStep):
        raise TypeError(f"Argument skip_step should be a monitor.SkipStep or None, got {skip_step!r}.")
    if "output_transform" in kwargs:
        raise ValueError(
            "Argument output_transform is set by build_trainer (the output is {'loss': loss}); "
            "build the engine with ignite.engine.create_supervised_trainer to change it."
        )
    if idist.get_world_size() > 1:
        # Same script on 1 or N processes: DDP-wrap the model for the training step (gradients are
        # averaged across ranks); keep using the plain model everywhere else.
        if not isinstance(model, torch.nn.parallel.DistributedDataParallel) and not is_sharded(model):
            model = idist.auto_model(model)
        optimizer = idist.auto_optim(optimizer)
        device = idist.device() if device is None else device
    if skip_step is None:
        # each step one optimizer.step() that takes place: the rates it used are read in the step
        every_step = (kwargs.get("gradient_accumulation_steps", 1) == 1 and not kwargs.get("scaler")
                      and kwargs.get("amp_mode") != "apex")
        output = StepRates(optimizer) if every_step else _loss_output
        trainer = create_supervised_trainer(model, optimizer, loss_fn, device=device, output_transform=output,
                                            **kwargs)
        if isinstance(output, StepRates):
            _STEP_RATES[trainer] = output
        return trainer
    trainer = create_supervised_trainer(
        model, SkippingOptimizer(optimizer, skip_step), judged_loss(loss_fn, skip_step),  # type: ignore[arg-type]
        device=device, output_transform=_skipped_output(skip_step), **kwargs)
    trainer.state.skip_step = skip_step  # type: ignore[attr-defined]  # into the last checkpoint, as the scaler is
    return trainer


def build_evaluator(
    model: torch.nn.Module,
    metrics: Mapping[str, Metric],
    *,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> Engine:
    """An evaluation ``Engine`` computing ``metrics`` into ``state.metrics`` on each ``run``.

    Args:
        model: the model to evaluate (put in eval mode and run under ``torch.no_grad``).
        metrics: name -> :class:`ignite.metrics.Metric`, e.g. ``{"accuracy": Accuracy()}``.
        device: where batches go (``None``: leave them where they are).
        kwargs: passed to :func:`ignite.engine.create_supervised_evaluator`.

    Examples:
        .. code-block:: python

            evaluator = build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
            evaluator.run(val_loader).metrics     # {"accuracy": 0.93, "loss": 0.21}
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"Argument model should be a torch.nn.Module, got {type(model).__name__}.")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"Argument metrics should be a non-empty mapping of name -> Metric, got {metrics!r}.")
    for name, metric in metrics.items():
        if not isinstance(name, str) or not isinstance(metric, Metric):
            raise TypeError(
                f"Argument metrics should map str -> ignite.metrics.Metric, got {name!r}: {type(metric).__name__}."
            )
    if idist.get_world_size() > 1 and device is None:
        device = idist.device()
    return create_supervised_evaluator(model, metrics=dict(metrics), device=device, **kwargs)

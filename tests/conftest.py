"""Shared test helpers: stub engines, scripted metrics, and a tiny real training setup."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from ignite.engine import Engine
from ignite.metrics import Accuracy, Loss, Metric
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

os.environ.setdefault("TQDM_DISABLE", "1")


def stub_engine() -> Engine:
    """An Engine that does nothing, whose state we set by hand (as Ignite's own handler tests do)."""
    return Engine(lambda engine, batch: None)


def drive(
    handler: Any, values: Sequence[float], metric: str = "loss", trainer: Engine | None = None, start: int = 1
) -> int:
    """Call ``handler(evaluator)`` once per value as epochs ``start``, ``start + 1``, ...; return the
    epoch that stopped the trainer (0 if none)."""
    trainer = trainer or handler.trainer
    evaluator = stub_engine()
    for epoch, value in enumerate(values, start=start):
        trainer.state.epoch = epoch
        trainer.state.iteration = 10 * epoch
        evaluator.state.metrics = {metric: value, "other": 1.0}
        handler(evaluator)
        if trainer.should_terminate:
            return epoch
    return 0


class ScriptedMetric(Metric):
    """A metric whose value at the n-th validation run is ``values[n-1]`` (a real Ignite Metric)."""

    def __init__(self, values: Sequence[float]) -> None:
        self.values = list(values)
        self.calls = 0
        super().__init__()

    def reset(self) -> None:
        pass

    def update(self, output: Any) -> None:
        pass

    def compute(self) -> float:
        self.calls += 1
        return self.values[min(self.calls, len(self.values)) - 1]


class EpochMetric(ScriptedMetric):
    """A metric whose value is ``values[trainer epoch - 1]``: the same in a resumed process, where a
    :class:`ScriptedMetric` would count its calls from 1 again."""

    def __init__(self, values: Sequence[float], trainer: Engine) -> None:
        self.trainer = trainer
        super().__init__(values)

    def compute(self) -> float:
        return self.values[self.trainer.state.epoch - 1]


def tiny_problem(seed: int = 0, n: int = 96) -> tuple[DataLoader, DataLoader]:
    """A small noisy two-class problem; 4 train batches, 2 val batches."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = ((x[:, 0] + 0.5 * torch.randn(n, generator=g)) > 0).long()
    train = TensorDataset(x[:64], y[:64])
    val = TensorDataset(x[64:], y[64:])
    return (
        DataLoader(train, batch_size=16, shuffle=True),  # global RNG: what a resume must replay
        DataLoader(val, batch_size=16),
    )


def own_step_trainer(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Any) -> Engine:
    """A trainer of a user's own step function (not build_trainer's): one optimizer step a batch."""

    def train_step(engine: Engine, batch: Any) -> float:
        optimizer.zero_grad()
        loss = loss_fn(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return float(loss.item())

    return Engine(train_step)


def tiny_setup(seed: int = 0, lr: float = 0.1) -> dict[str, Any]:
    """Model, optimizer, engines (through monitor.build_*) and loaders for end-to-end tests."""
    import monitor

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    train_loader, val_loader = tiny_problem(seed)
    trainer = monitor.build_trainer(model, optimizer, loss_fn)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    return dict(
        model=model, optimizer=optimizer, loss_fn=loss_fn, trainer=trainer, evaluator=evaluator,
        train_loader=train_loader, val_loader=val_loader,
    )


@pytest.fixture
def tiny() -> dict[str, Any]:
    return tiny_setup()

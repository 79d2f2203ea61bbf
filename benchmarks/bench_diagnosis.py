"""Diagnosis on a labelled suite of small runs made offline: recall per kind, false alarms on healthy
runs, and advice that points the wrong way, per half of the suite.

    .venv/bin/python benchmarks/bench_diagnosis.py [--workdir DIR] [--seed-shift N] [--only TEXT] [--half A|B]

Each run is a real monitored training on data made here or shipped by scikit-learn (its 8x8 digits;
nothing is downloaded), produced by the usual cause of its problem: a rate far too high or too low,
a bad initialisation, bad data, a bad architecture, a slow loader. The healthy runs are the recipes
people use: fine-tuning from weights trained inside the bench (classification and regression, SGD
and Adam), warm-up + cosine, OneCycle, cyclic rates, warm restarts, label smoothing, AdamW, heavy-
tailed regression noise, class imbalance, validation within epochs, batches of 4 to 8.

Each case is labelled with the kind it must show and the kinds it may show besides (a divergence
that ends in NaN may show both); every other problem counts as a false alarm. A ``note`` (a pattern
the run itself explains) is shown, never counted as an alarm. A *contradiction* is advice that points
the wrong way: raising the rate while the training loss rose, or lowering it while it did not move.

The recipes are split in two fixed halves. The thresholds in :mod:`monitor.diagnosis` were set on
half A only; half B is held out, and ``--seed-shift N`` runs both on other data and other initial
weights (every seed moved by ``N``).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from binary_classification import make_data, make_model  # noqa: E402

import monitor  # noqa: E402
from monitor.diagnosis.rules import KINDS, RATE_FACTOR  # noqa: E402
from monitor.store.layout import BEST_PREFIX, checkpoint_files, parse_checkpoint_name  # noqa: E402


@dataclass
class Case:
    name: str
    expected: str | None  # the kind it must show (None: healthy)
    make: Callable[[], dict[str, Any]]
    allowed: set[str] = field(default_factory=set)  # kinds it may show besides
    half: str = "A"  # "A": thresholds were set on it; "B": held out


SEED_SHIFT = 0  # --seed-shift: the same recipes on other data and other initial weights
GRAD_NORM = False  # --grad-norm: every run with attach_grad_norm (the gradient rules read every run)


def split(x: torch.Tensor, y: torch.Tensor) -> tuple[TensorDataset, TensorDataset]:
    cut = int(0.7 * len(x))
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


def two_class(n: int, features: int, seed: int, label_noise: float = 0.0, positive: float = 0.5,
              zero_inputs: bool = False, constant_feature: bool = False) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed + SEED_SHIFT)
    x = torch.randn(n, features, generator=g)
    shift = float(torch.distributions.Normal(0, 1).icdf(torch.tensor(1 - positive))) * (3 + 0.25) ** 0.5
    y = ((x[:, :3].sum(1) + 0.5 * torch.randn(n, generator=g)) > shift).long()
    flip = torch.rand(n, generator=g) < label_noise
    y[flip] = 1 - y[flip]
    if constant_feature:  # standardised by a preprocessing that divides by each feature's spread: 0/0
        x[:, 0] = 1.0
        x = (x - x.mean(0)) / x.std(0)
    return split(x * 0 if zero_inputs else x, y)


def digits(seed: int, n: int | None = None, label_noise: float = 0.0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 8x8 digits (1797 images, 10 classes; shipped with the package), ``label_noise``
    of the labels replaced by random ones."""
    from sklearn.datasets import load_digits

    data = load_digits()
    g = torch.Generator().manual_seed(seed + SEED_SHIFT)
    order = torch.randperm(len(data.target), generator=g)[:n]
    x = torch.tensor(data.data, dtype=torch.float32)[order] / 16
    y = torch.tensor(data.target)[order]
    noisy = torch.rand(len(y), generator=g) < label_noise
    y[noisy] = torch.randint(0, 10, (int(noisy.sum()),), generator=g)
    return split(x, y)


def regression(n: int, features: int, seed: int, heavy: bool = False) -> tuple[TensorDataset, TensorDataset]:
    """y = x @ w + noise: Gaussian, or heavy-tailed (Student's t, 2 degrees of freedom)."""
    g = torch.Generator().manual_seed(seed + SEED_SHIFT)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, 1, generator=g)
    if heavy:
        noise = 0.3 * torch.randn(n, 1, generator=g) / (torch.randn(n, 2, generator=g).pow(2).mean(1, keepdim=True)
                                                          .sqrt())
    else:
        noise = 0.1 * torch.randn(n, 1, generator=g)
    return split(x, x @ w + noise)


class SlowDataset(Dataset):
    def __init__(self, data: Dataset, delay_s: float) -> None:
        self.data, self.delay_s = data, delay_s

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        time.sleep(self.delay_s)
        return self.data[i]


def slow_collate(delay_s: float) -> Callable[[list[Any]], Any]:
    from torch.utils.data import default_collate

    def collate(batch: list[Any]) -> Any:
        time.sleep(delay_s)
        return default_collate(batch)
    return collate


def setup(model: nn.Module, train: Dataset, val: Dataset, *, lr: float, epochs: int, batch: int = 64,
          momentum: float = 0.9, weight_decay: float = 0.0, patience: int | None = 10, grad_norm: bool = False,
          seed: int = 0, nan_at: int | None = None, optimizer: str = "sgd", loss: nn.Module | None = None,
          regression: bool = False, collate: Callable[[list[Any]], Any] | None = None,
          validate_every: int | None = None) -> dict[str, Any]:
    torch.manual_seed(seed + SEED_SHIFT)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                                     weight_decay=weight_decay)
    else:
        opt = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optimizer](
            model.parameters(), lr=lr, weight_decay=weight_decay)
    base = loss or (nn.MSELoss() if regression else nn.CrossEntropyLoss())

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return base(out, y)

    trainer = monitor.build_trainer(model, opt, loss_fn)
    if nan_at is not None:  # a poisoned batch from then on (log of 0 in a user's loss, a corrupt sample)
        def poison(engine: Any) -> None:
            if engine.state.epoch >= nan_at:
                engine.state.batch = (engine.state.batch[0] * float("nan"), engine.state.batch[1])
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, poison)
    if grad_norm or GRAD_NORM:
        monitor.parts.attach_grad_norm(trainer, model)
    metrics = {"loss": Loss(nn.MSELoss() if regression else nn.CrossEntropyLoss())}
    if not regression:
        metrics["accuracy"] = Accuracy()
    evaluator = monitor.build_evaluator(model, metrics)
    return dict(model=model, optimizer=opt, trainer=trainer, evaluator=evaluator, epochs=epochs,
                train=DataLoader(train, batch_size=batch, shuffle=True, collate_fn=collate),
                val=DataLoader(val, batch_size=256), patience=patience,
                validate_on=Events.ITERATION_COMPLETED(every=validate_every) if validate_every else
                Events.EPOCH_COMPLETED)


def mlp(features: int, hidden: int = 100, depth: int = 2, act: type[nn.Module] = nn.ReLU, out: int = 2) -> nn.Module:
    layers: list[nn.Module] = []
    width = features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, out))


def cnn() -> nn.Module:
    """A small CNN for the 8x8 digits."""
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 16, 10))


def pretrained(model: nn.Module, data: Dataset, *, lr: float, epochs: int, regression: bool = False,
               adam: bool = False) -> nn.Module:
    """``model`` trained first (a plain loop, unmonitored): the start of a fine-tuning run."""
    g = torch.Generator().manual_seed(1234 + SEED_SHIFT)
    opt = (torch.optim.Adam(model.parameters(), lr=lr) if adam else
           torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    loss = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    for _ in range(epochs):
        for x, y in DataLoader(data, batch_size=32, shuffle=True, generator=g):
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
    return model


def scaled(model: nn.Module, factor: float, bias: float | None = None) -> nn.Module:
    """``model`` with every weight scaled by ``factor`` (and every bias set to ``bias``): a bad init."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(factor)
                if bias is not None:
                    m.bias.fill_(bias)
    return model


def case_study(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed + SEED_SHIFT)
    train, val = make_data(seed + SEED_SHIFT)
    return setup(make_model(), train, val, lr=0.01, epochs=200, seed=seed)


def dropout_mlp(features: int, hidden: int, p: float) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Dropout(p), nn.Linear(hidden, 2))


def per_step(s: dict[str, Any], make: Callable[[torch.optim.Optimizer, int], Any]) -> dict[str, Any]:
    """A scheduler stepped after every iteration, made from the optimizer and the run's step count."""
    steps = s["epochs"] * len(s["train"])
    schedule = make(s["optimizer"], steps)
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED, lambda _: schedule.step())
    s["scheduler"] = schedule  # in to_save: monitor refuses a torch scheduler left out of it
    return s


def warm_restarts(s: dict[str, Any], period: int) -> dict[str, Any]:
    """Cosine annealing with warm restarts every ``period`` epochs (the rate jumps back up on purpose)."""
    schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(s["optimizer"], T_0=period)
    s["trainer"].add_event_handler(Events.EPOCH_COMPLETED, lambda _: schedule.step())
    s["scheduler"] = schedule
    return s


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> Any:
    warm = max(1, steps // 10)
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=warm),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - warm)], milestones=[warm])


def one_cycle(max_lr: float) -> Callable[[torch.optim.Optimizer, int], Any]:
    return lambda optimizer, steps: torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=steps + 1)


def cyclic(base: float, peak: float, half_cycle: int) -> Callable[[torch.optim.Optimizer, int], Any]:
    return lambda optimizer, steps: torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=base, max_lr=peak, step_size_up=half_cycle)


def growing_lr(s: dict[str, Any], factor: float = 2.0) -> dict[str, Any]:
    def grow(_: Any) -> None:
        for group in s["optimizer"].param_groups:
            group["lr"] *= factor
    s["trainer"].add_event_handler(Events.EPOCH_COMPLETED, grow)
    return s


def growing_weights(s: dict[str, Any], factor: float) -> dict[str, Any]:
    """The weights multiplied by ``factor`` after each step: weight decay of the wrong sign, as a
    custom update that gets it wrong would do."""
    def grow(_: Any) -> None:
        with torch.no_grad():
            for p in s["model"].parameters():
                p.mul_(factor)
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED, grow)
    return s


class _Curriculum(Dataset[Any]):
    """A training set that serves its ``easy`` indices (cycled) until ``epoch`` reaches ``switch``, then all
    of its samples: the training loss rises at the switch for a good reason, while the validation loss
    (on all the data) improves."""

    def __init__(self, data: TensorDataset, switch: int, easy: list[int]) -> None:
        self.data, self.switch, self.easy, self.epoch = data, switch, easy, 1

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        return self.data[self.easy[i % len(self.easy)] if self.epoch < self.switch else i]


def curriculum(seed: int) -> dict[str, Any]:
    """A healthy run on the clearest samples for 3 epochs (right side of the margin, far from it), then on
    all of them (15% of the labels noisy)."""
    train, val = two_class(3000, 20, seed, label_noise=0.15)
    x, y = train.tensors
    score = x[:, :3].sum(1)
    clear = ((score > 0).long() == y) & (score.abs() > 1.5)
    data = _Curriculum(train, 4, [int(i) for i in torch.nonzero(clear).flatten()])
    s = setup(mlp(20, 256), data, val, lr=0.02, epochs=30)
    s["trainer"].add_event_handler(Events.EPOCH_STARTED, lambda e: setattr(data, "epoch", e.state.epoch))
    return s


class _Mixup(nn.Module):
    """Mixup switched on at epoch ``switch``: from then on each batch's inputs are mixed with a shuffled copy
    of themselves (a Beta(1, 1) share) and the loss alike. The training loss rises at the switch for a good
    reason (soft targets), while the validation loss goes on improving."""

    def __init__(self, switch: int) -> None:
        super().__init__()
        self.switch, self.mix = switch, None
        self.inner = nn.CrossEntropyLoss()

    def batch(self, engine: Any) -> None:
        self.mix = None
        if engine.state.epoch >= self.switch:
            x, y = engine.state.batch
            share, order = float(torch.distributions.Beta(1.0, 1.0).sample()), torch.randperm(len(x))
            engine.state.batch = (share * x + (1 - share) * x[order], y)
            self.mix = (share, order)

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.mix is None:
            return self.inner(out, y)  # type: ignore[no-any-return]
        share, order = self.mix
        return share * self.inner(out, y) + (1 - share) * self.inner(out, y[order])  # type: ignore[no-any-return]


def mixup(seed: int) -> dict[str, Any]:
    """A healthy digits MLP with mixup switched on at epoch 5."""
    mix = _Mixup(5)
    s = setup(mlp(64, 100, out=10), *digits(seed), lr=0.02, epochs=25, batch=32, loss=mix)
    s["trainer"].add_event_handler(Events.GET_BATCH_COMPLETED, mix.batch)
    return s


class RNN(nn.Module):
    """A ReLU RNN reading ``steps`` x ``features`` sequences (flattened), classifying from its last state."""

    def __init__(self, features: int, steps: int, hidden: int = 64) -> None:
        super().__init__()
        self.features, self.steps = features, steps
        self.rnn = nn.RNN(features, hidden, nonlinearity="relu", batch_first=True)
        self.head = nn.Linear(hidden, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.view(len(x), self.steps, self.features))
        return self.head(out[:, -1])  # type: ignore[no-any-return]


def sequences(n: int, steps: int, features: int, seed: int) -> tuple[TensorDataset, TensorDataset]:
    """Sequences whose label is the sign of their first feature's sum over time."""
    g = torch.Generator().manual_seed(seed + SEED_SHIFT)
    x = torch.randn(n, steps, features, generator=g)
    y = (x[:, :, 0].sum(1) > 0).long()
    return split(x.flatten(1), y)


def digits_mlp_trained(seed: int) -> nn.Module:
    return pretrained(mlp(64, 100, out=10), digits(seed)[0], lr=0.1, epochs=8)


def regression_mlp_trained(seed: int, heavy: bool = False) -> nn.Module:
    return pretrained(mlp(20, 64, out=1), regression(3000, 20, seed, heavy)[0], lr=1e-3, epochs=20, regression=True,
                      adam=True)


UNSTABLE = {"divergence", "nonfinite", "oscillation", "overfitting"}  # what a run blown up may show besides

CASES = [
    # healthy (half A): the case study and well-set runs, some from trained weights
    *[Case(f"healthy case study seed {s}", None, lambda s=s: case_study(s), half="AB"[s % 2]) for s in (0, 1, 2)],
    Case("healthy logistic regression", None, lambda: setup(
        nn.Linear(20, 2), *two_class(3000, 20, 3), lr=0.05, epochs=60)),
    Case("healthy logistic regression on 30% noisy labels", None, lambda: setup(
        nn.Linear(20, 2), *two_class(3000, 20, 46, label_noise=0.3), lr=0.05, epochs=30)),
    Case("healthy MLP on 35% noisy labels", None, lambda: setup(
        mlp(20, 64), *two_class(3000, 20, 47, label_noise=0.35), lr=0.01, epochs=30), half="B"),
    Case("healthy MLP with weight decay", None, lambda: setup(
        mlp(20, 64), *two_class(4000, 20, 4), lr=0.02, epochs=80, weight_decay=1e-3), half="B"),
    Case("healthy deep ReLU MLP", None, lambda: setup(
        mlp(20, 64, depth=4), *two_class(4000, 20, 5), lr=0.01, epochs=80, grad_norm=True)),
    Case("healthy small batches", None, lambda: setup(
        mlp(20, 32), *two_class(2000, 20, 6), lr=0.005, epochs=40, batch=16), half="B"),
    Case("healthy batches of 4", None, lambda: setup(
        mlp(20, 32), *two_class(1000, 20, 7), lr=0.002, epochs=20, batch=4)),
    Case("healthy dropout MLP", None, lambda: setup(
        dropout_mlp(20, 128, 0.3), *two_class(3000, 20, 8), lr=0.01, epochs=60), half="B"),
    Case("healthy warm restarts", None, lambda: warm_restarts(setup(
        mlp(20, 32), *two_class(4000, 20, 9), lr=0.05, epochs=24, weight_decay=1e-3, patience=None), period=6)),
    Case("healthy fine-tuned digits MLP SGD", None, lambda: setup(
        digits_mlp_trained(11), *digits(11), lr=0.01, epochs=15)),
    Case("healthy fine-tuned digits MLP batches of 8", None, lambda: setup(
        digits_mlp_trained(12), *digits(12), lr=0.005, epochs=10, batch=8), half="B"),
    Case("healthy converged digits MLP fine-tuned at SGD 1e-4", None, lambda: setup(
        pretrained(mlp(64, 100, out=10), digits(11)[0], lr=0.1, epochs=30), *digits(11), lr=1e-4, epochs=12)),
    Case("healthy fine-tuned digits MLP Adam", None, lambda: setup(
        digits_mlp_trained(13), *digits(13), lr=1e-4, epochs=15, batch=16, optimizer="adam")),
    Case("healthy fine-tuned regression Adam", None, lambda: setup(
        regression_mlp_trained(14), *regression(3000, 20, 14), lr=1e-4, epochs=15, batch=32, optimizer="adam",
        regression=True), half="B"),
    Case("healthy fine-tuned heavy-tailed regression SGD", None, lambda: setup(
        regression_mlp_trained(15, heavy=True), *regression(3000, 20, 15, heavy=True), lr=1e-3, epochs=15,
        batch=32, regression=True)),
    Case("healthy digits CNN warm-up + cosine", None, lambda: per_step(setup(
        cnn(), *digits(16), lr=0.05, epochs=15, batch=32, patience=None), warmup_cosine), half="B"),
    Case("healthy digits MLP OneCycle", None, lambda: per_step(setup(
        mlp(64, 100, out=10), *digits(17), lr=0.01, epochs=15, batch=32, patience=None), one_cycle(0.3))),
    Case("healthy digits CNN OneCycle 0.3 (swings at the peak)", None, lambda: per_step(setup(
        cnn(), *digits(17), lr=0.01, epochs=15, batch=32, patience=None), one_cycle(0.3))),
    Case("healthy cyclic rates", None, lambda: per_step(setup(
        mlp(20, 64), *two_class(3000, 20, 18), lr=0.001, epochs=30, patience=None), cyclic(0.001, 0.05, 66)),
        half="B"),
    Case("healthy label smoothing + AdamW", None, lambda: setup(
        mlp(64, 100, out=10), *digits(19), lr=1e-3, epochs=20, batch=32, optimizer="adamw", weight_decay=0.05,
        loss=nn.CrossEntropyLoss(label_smoothing=0.1))),
    Case("healthy heavy-tailed regression", None, lambda: setup(
        mlp(20, 64, out=1), *regression(3000, 20, 21, heavy=True), lr=0.005, epochs=30, batch=32,
        regression=True), half="B"),
    Case("healthy class imbalance 9:1", None, lambda: setup(
        mlp(20, 64), *two_class(4000, 20, 22, positive=0.1), lr=0.01, epochs=40)),
    Case("healthy validation within epochs", None, lambda: setup(
        mlp(20, 64), *two_class(6000, 20, 23), lr=0.01, epochs=8, batch=32, validate_every=22), half="B"),
    # Healthy runs whose training loss rises for a good reason (issue #28): the objective improves.
    Case("healthy curriculum: clear samples for 3 epochs, then all", None, lambda: curriculum(11)),
    Case("healthy curriculum, seed 12", None, lambda: curriculum(12), half="B"),
    Case("healthy mixup switched on at epoch 5", None, lambda: mixup(13)),
    Case("healthy mixup switched on at epoch 5, seed 14", None, lambda: mixup(14), half="B"),
    Case("healthy AdamW weight decay batches of 8", None, lambda: setup(
        mlp(64, 64, out=10), *digits(24), lr=3e-4, epochs=8, batch=8, optimizer="adamw", weight_decay=0.01)),
    # overfitting: a large model on little data (noisy labels, or just too few) without regularisation
    *[Case(f"overfitting large MLP seed {s}", "overfitting", lambda s=s: setup(
        mlp(50, 512, depth=3), *two_class(300, 50, 10 + s, label_noise=0.2), lr=0.05, epochs=150,
        patience=None, seed=s), half="AB"[s]) for s in (0, 1)],
    Case("overfitting wide MLP on 56 clean samples", "overfitting", lambda: setup(
        mlp(20, 512, depth=3), *two_class(80, 20, 25), lr=0.02, epochs=200, batch=16, patience=None)),
    Case("overfitting Adam wide MLP on noisy labels", "overfitting", lambda: setup(
        mlp(50, 512, depth=3), *two_class(300, 50, 26, label_noise=0.2), lr=1e-3, epochs=150, patience=None,
        optimizer="adam"), half="B"),
    # divergence: a rate far too high, from scratch and from trained weights; a bad init
    *[Case(f"divergence lr {lr}", "divergence", lambda lr=lr: setup(
        mlp(20, 64), *two_class(3000, 20, 20), lr=lr, epochs=30, patience=None), allowed={"nonfinite"},
        half=h) for lr, h in ((1.5, "A"), (2.0, "B"))],
    Case("divergence fine-tuned digits at lr 1", "divergence", lambda: setup(
        digits_mlp_trained(26), *digits(26), lr=1.0, epochs=15, patience=None), allowed={"nonfinite"}),
    Case("divergence digits Adam lr 0.5", "divergence", lambda: setup(
        mlp(64, 100, out=10), *digits(27), lr=0.5, epochs=15, optimizer="adam", patience=None),
        allowed={"nonfinite"}, half="B"),
    # trouble in the first epoch (issue #28): nothing healthy on disk before it
    Case("divergence fine-tuned digits at lr 3 (epoch 1)", "divergence", lambda: setup(
        digits_mlp_trained(28), *digits(28), lr=3.0, epochs=10, patience=None),
        allowed={"nonfinite", "exploding_gradients"}),
    Case("divergence ReLU MLP killed by Adam at lr 0.3 (epoch 1)", "divergence", lambda: setup(
        mlp(20, 64, depth=3), *two_class(3000, 20, 43), lr=0.3, epochs=15, patience=None, optimizer="adam"),
        allowed={"nonfinite", "oscillation", "exploding_gradients"}, half="B"),
    Case("exploding gradients ReLU RNN without clipping (epoch 1)", "exploding_gradients", lambda: setup(
        RNN(4, 30), *sequences(2000, 30, 4, 29), lr=0.08, epochs=10, patience=None, grad_norm=True),
        allowed=UNSTABLE),
    Case("exploding gradients ReLU RNN lr 0.1, seed 30 (epoch 1)", "exploding_gradients", lambda: setup(
        RNN(4, 30), *sequences(2000, 30, 4, 30), lr=0.1, epochs=10, patience=None, grad_norm=True),
        allowed=UNSTABLE, half="B"),
    # nonfinite: a poisoned batch (NaN) from some epoch on; a linear regression whose rate overflows it; 0/0 in
    # the preprocessing
    *[Case(f"nonfinite from epoch {e}", "nonfinite", lambda e=e: setup(
        mlp(20, 32), *two_class(2000, 20, 30), lr=0.01, epochs=20, nan_at=e), half=h)
      for e, h in ((3, "A"), (8, "B"))],
    Case("nonfinite linear regression at lr 0.5 (overflows)", "nonfinite", lambda: setup(
        nn.Linear(20, 1), *regression(3000, 20, 31, heavy=True), lr=0.5, epochs=15, batch=8, regression=True),
        allowed={"divergence", "exploding_gradients"}),
    Case("nonfinite constant feature standardised (0/0)", "nonfinite", lambda: setup(
        mlp(20, 32), *two_class(2000, 20, 32, constant_feature=True), lr=0.01, epochs=10), half="B"),
    # plateau: a rate far too low; random labels on a linear model; dead ReLUs
    *[Case(f"plateau lr {lr}", "plateau", lambda lr=lr: setup(
        mlp(20, 64), *two_class(3000, 20, 40), lr=lr, epochs=25, momentum=0.0), half=h)
      for lr, h in ((1e-6, "A"), (1e-7, "B"))],
    Case("plateau inputs zeroed by the preprocessing", "plateau", lambda: setup(
        mlp(20, 64), *two_class(3000, 20, 41, zero_inputs=True), lr=0.01, epochs=15)),
    Case("plateau dead ReLUs", "plateau", lambda: setup(
        scaled(mlp(20, 64, depth=3), 1.0, bias=-5.0), *two_class(3000, 20, 42), lr=0.01, epochs=15), half="B"),
    # not learning: random labels (a linear model, an MLP); the loss at the constant prediction's level
    Case("not learning: random labels on a linear model", "not_learning", lambda: setup(
        nn.Linear(20, 2), *two_class(3000, 20, 44, label_noise=0.5), lr=0.01, epochs=15), allowed={"plateau"}),
    Case("not learning: random labels on an MLP", "not_learning", lambda: setup(
        mlp(20, 64), *two_class(3000, 20, 45, label_noise=0.5), lr=0.01, epochs=15), allowed={"plateau"},
        half="B"),
    # oscillation: a rate too high to settle, but not enough to diverge; momentum too high
    *[Case(f"oscillation lr {lr}", "oscillation", lambda lr=lr: setup(
        nn.Linear(20, 2), *two_class(600, 20, 50), lr=lr, epochs=40, batch=420, momentum=0.95, patience=None),
        allowed={"divergence", "nonfinite", "overfitting"}, half=h) for lr, h in ((5.0, "A"), (10.0, "B"))],
    Case("oscillation MLP lr 0.3", "oscillation", lambda: setup(
        mlp(20, 64), *two_class(3000, 20, 50), lr=0.3, epochs=30, patience=None), allowed={"overfitting"}),
    Case("oscillation digits CNN OneCycle 0.5, batches of 16 (dies at the peak)", "oscillation", lambda: per_step(
        setup(cnn(), *digits(17), lr=0.01, epochs=15, batch=16, patience=None), one_cycle(0.5)),
        allowed={"divergence", "nonfinite"}),
    Case("oscillation digits SGD lr 0.3 momentum 0.99", "oscillation", lambda: setup(
        mlp(64, 100, out=10), *digits(51), lr=0.3, momentum=0.99, epochs=15, patience=None),
        allowed={"divergence", "nonfinite"}, half="B"),
    # data_bound: a slow dataset, a slow collate, in front of a small model
    *[Case(f"data bound {d * 1e3:g} ms/sample", "data_bound", lambda d=d: setup(
        mlp(20, 32), SlowDataset(two_class(600, 20, 60)[0], d), two_class(600, 20, 60)[1], lr=0.01, epochs=4,
        batch=32), half=h) for d, h in ((0.001, "A"), (0.002, "B"))],
    Case("data bound slow collate 30 ms/batch", "data_bound", lambda: setup(
        mlp(20, 32), *two_class(600, 20, 61), lr=0.01, epochs=4, batch=32, collate=slow_collate(0.03))),
    Case("data bound 3 ms/sample, batches of 8", "data_bound", lambda: setup(
        mlp(20, 32), SlowDataset(two_class(400, 20, 62)[0], 0.003), two_class(400, 20, 62)[1], lr=0.01,
        epochs=3, batch=8), half="B"),
    # exploding gradients: the rate doubling every epoch on a deep net; weights that grow (a wrong update)
    *[Case(f"exploding gradients lr x2 per epoch, depth {d}", "exploding_gradients", lambda d=d: growing_lr(setup(
        mlp(20, 64, depth=d), *two_class(3000, 20, 70), lr=0.005, epochs=20, patience=None, grad_norm=True)),
        allowed=UNSTABLE, half=h) for d, h in ((4, "A"), (6, "B"))],
    Case("exploding gradients weights growing 0.4% a step", "exploding_gradients", lambda: growing_weights(setup(
        mlp(20, 64, depth=4), *two_class(3000, 20, 71), lr=0.01, epochs=20, patience=None, grad_norm=True), 1.004),
        allowed=UNSTABLE),
    Case("exploding gradients weights growing 0.3% a step, depth 6", "exploding_gradients", lambda: growing_weights(
        setup(mlp(20, 64, depth=6), *two_class(3000, 20, 72), lr=0.01, epochs=20, patience=None, grad_norm=True),
        1.003), allowed=UNSTABLE, half="B"),
    # vanishing gradients: a deep sigmoid net; a deep tanh net with tiny initial weights
    *[Case(f"vanishing gradients sigmoid depth {d}", "vanishing_gradients", lambda d=d: setup(
        mlp(20, 32, depth=d, act=nn.Sigmoid), *two_class(3000, 20, 80), lr=0.01, epochs=15, grad_norm=True,
        momentum=0.0), allowed={"plateau"}, half=h) for d, h in ((10, "A"), (14, "B"))],
    Case("vanishing gradients tanh depth 8 tiny init", "vanishing_gradients", lambda: setup(
        scaled(mlp(20, 32, depth=8, act=nn.Tanh), 0.05), *two_class(3000, 20, 81), lr=0.01, epochs=15,
        grad_norm=True, momentum=0.0), allowed={"plateau"}),
    Case("vanishing gradients sigmoid depth 12 Adam", "vanishing_gradients", lambda: setup(
        mlp(20, 32, depth=12, act=nn.Sigmoid), *two_class(3000, 20, 82), lr=1e-4, epochs=12, grad_norm=True,
        optimizer="adam"), allowed={"plateau"}, half="B"),
]


@dataclass
class Result:
    case: Case
    problems: list[str]  # the kinds found as problems
    notes: list[str]  # the kinds found as notes
    contradictions: list[str]  # advice that points the wrong way
    spike: float | None  # the run's highest train_loss_spike
    bad_rollbacks: list[str]  # rollback advice naming a checkpoint not on disk, or not from before the trouble
    early_grad: float | None  # the highest step's gradient norm of the first 3 validations over the first step's


def contradictions(findings: list[Any], train_loss: list[float]) -> list[str]:
    """Advice that raises the rate while the training loss rose (10% above its first value, or not
    finite), or lowers it while the loss did not move (within 1% of its first value throughout)."""
    first = train_loss[0] if train_loss else math.nan
    rose = any(not math.isfinite(v) or v >= 1.1 * first for v in train_loss[1:])
    still = bool(train_loss) and all(math.isfinite(v) and abs(v - first) <= 0.01 * abs(first) for v in train_loss)
    wrong = []
    for finding in findings:
        factor = RATE_FACTOR[finding.kind]
        if factor is not None and finding.is_problem and ((factor > 1 and rose) or (factor < 1 and still)):
            wrong.append(f"{finding.kind} advises {'raising' if factor > 1 else 'lowering'} the rate")
    return wrong


def bad_rollbacks(findings: list[Any], kept: set[int]) -> list[str]:
    """Rollback advice naming an epoch whose best checkpoint is not on disk or is not from before the trouble."""
    import re

    wrong = []
    for finding in findings:
        named = re.search(r"Roll back to epoch (\d+)", finding.advice)
        if named and (int(named[1]) not in kept or int(named[1]) >= (finding.epoch or 0)):
            wrong.append(f"{finding.kind} at epoch {finding.epoch} names epoch {named[1]} (kept: {sorted(kept)})")
    return wrong


def to_save(s: dict[str, Any]) -> dict[str, Any]:
    """The run's state for its checkpoints: the model, the optimizer and a torch scheduler if it has one."""
    return {"model": s["model"], "optimizer": s["optimizer"], **({"scheduler": s["scheduler"]} if "scheduler" in s
                                                                else {})}


def run_case(case: Case, workdir: Path) -> Result:
    torch.manual_seed(zlib.crc32(case.name.encode()) + SEED_SHIFT)  # the model's weights: each case its own
    s = case.make()
    run = monitor.attach_monitoring(
        s["trainer"], s["evaluator"], s["val"], run_dir=workdir / case.name.replace(" ", "_").replace("/", "_per_"),
        objective=monitor.Objective("loss", mode="min"), overwrite=True, to_save=to_save(s),
        early_stopping=None if s["patience"] is None else monitor.EarlyStopping(patience=s["patience"]),
        checkpoints=monitor.Checkpoints(restore_best=False), console=monitor.Console(tqdm_kwargs={"disable": True}),
        validate_on=s["validate_on"],
    )
    with run:
        s["trainer"].run(s["train"], max_epochs=s["epochs"])
    review = monitor.load_run(run.run_dir)
    spikes = review.history.get("train_loss_spike")
    findings = review.findings
    losses = [float(v) for v in review.history["train_loss"]] if "train_loss" in review.history else []
    kept = {name.epoch for path in checkpoint_files(run.run_dir / "checkpoints", BEST_PREFIX)
            if (name := parse_checkpoint_name(path.name)) is not None}
    early = None
    if {"train_grad_norm_max", "train_grad_norm_start"} <= set(review.history.columns):
        early = float(review.history["train_grad_norm_max"][:3].max() / review.history["train_grad_norm_start"][0])
    return Result(case, [f.kind for f in findings if f.is_problem], [f.kind for f in findings if not f.is_problem],
                  contradictions(findings, losses), None if spikes is None else float(spikes.max()),
                  bad_rollbacks(findings, kept), early)


def table(results: list[Result], title: str) -> None:
    print(f"\n  {title}")
    print(f"  {'kind':22s} {'runs':>5s} {'recall':>7s} {'precision':>10s}")
    for kind in (k for k in KINDS if k != "recovered"):  # (a rollback's note: no run of the suite has one)
        labelled = [r for r in results if r.case.expected == kind]
        flagged = [r for r in results if kind in r.problems]
        hits = sum(kind in r.problems for r in labelled)
        true = sum(1 for r in flagged if r.case.expected == kind or kind in r.case.allowed)
        recall = hits / len(labelled) if labelled else float("nan")
        precision = true / len(flagged) if flagged else float("nan")
        print(f"  {kind:22s} {len(labelled):5d} {recall:7.2f} {precision:10.2f}")
    healthy = [r for r in results if r.case.expected is None]
    alarms = sum(len(r.problems) for r in healthy)
    notes = sum(len(r.notes) for r in results)
    wrong = sum(len(r.contradictions) for r in results)
    missing = sum(len(r.bad_rollbacks) for r in results)
    print(f"  healthy runs: {len(healthy)}, false alarms on them: {alarms}; notes: {notes}; "
          f"contradictions: {wrong}; rollback advice naming a missing or later checkpoint: {missing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--half", choices=("A", "B"), default=None, help="run one half of the suite only")
    parser.add_argument("--seed-shift", type=int, default=0, help="move every seed by this (held-out runs)")
    parser.add_argument("--grad-norm", action="store_true", help="every run with attach_grad_norm (the gradient "
                        "rules on every healthy run; on a broken one, a gradient finding is its mechanism)")
    args = parser.parse_args()
    global SEED_SHIFT, GRAD_NORM
    SEED_SHIFT, GRAD_NORM = args.seed_shift, args.grad_norm
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_diagnosis-"))
    healthy = sum(c.expected is None for c in CASES)
    print(f"  {len(CASES)} runs, {healthy} healthy; seed shift {SEED_SHIFT}")
    results = []
    for case in CASES:
        if (args.only and args.only not in case.name) or (args.half and case.half != args.half):
            continue
        if GRAD_NORM and case.expected is not None:  # the gradients of a broken run show its mechanism too
            case.allowed = case.allowed | {"exploding_gradients", "vanishing_gradients"}
        r = run_case(case, workdir)
        results.append(r)
        false = [k for k in r.problems if k != case.expected and k not in case.allowed]
        ok = (case.expected is None or case.expected in r.problems) and not false and not r.contradictions \
            and not r.bad_rollbacks
        shown = "-" if r.spike is None else f"{r.spike:.3g}"
        grad = "" if r.early_grad is None else f" grad {r.early_grad:.3g}"
        notes = f"  notes {', '.join(r.notes)}" if r.notes else ""
        wrong = f"  CONTRADICTION {'; '.join(r.contradictions)}" if r.contradictions else ""
        wrong += f"  MISSING CHECKPOINT {'; '.join(r.bad_rollbacks)}" if r.bad_rollbacks else ""
        print(f"  {'ok ' if ok else 'BAD'} {case.half} {case.name:50s} spike {shown:>8s}{grad}  expected "
              f"{case.expected or 'nothing':20s} found {', '.join(r.problems) or '-'}{notes}{wrong}", flush=True)
    for half, title in (("A", "half A (thresholds set on it)"), ("B", "half B (held out)")):
        chosen = [r for r in results if r.case.half == half]
        if chosen:
            table(chosen, title)


if __name__ == "__main__":
    main()

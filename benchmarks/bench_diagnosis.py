"""Diagnosis on a labelled suite of small runs made offline: precision and recall per kind, and the
false alarms on healthy runs.

    .venv/bin/python benchmarks/bench_diagnosis.py [--workdir DIR] [--seed-shift N]

Each run is a real monitored training (synthetic data made here; nothing is downloaded), produced by
the usual cause of its problem: a learning rate far too high or too low, a large model on little
noisy data without regularisation, a slow data loader, a deep sigmoid network, a bad initialisation.
Each is labelled with the kind it must show and the kinds it may show besides (a divergence that
ends in NaN may show both); every other finding counts as a false alarm.

The thresholds in :mod:`monitor.diagnosis` were set on this suite as it runs by default. ``--seed-shift
N`` runs the same recipes on other data and other initial weights (every seed moved by ``N``): runs
the thresholds were not set on, the check that they were not fitted to the cases.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from binary_classification import make_data, make_model  # noqa: E402

import monitor  # noqa: E402
from monitor.diagnosis.rules import KINDS  # noqa: E402


@dataclass
class Case:
    name: str
    expected: str | None  # the kind it must show (None: healthy)
    make: Callable[[], dict[str, Any]]
    allowed: set[str] = field(default_factory=set)  # kinds it may show besides


SEED_SHIFT = 0  # --seed-shift: the same recipes on other data and other initial weights


def two_class(n: int, features: int, seed: int, label_noise: float = 0.0) -> tuple[TensorDataset, TensorDataset]:
    g = torch.Generator().manual_seed(seed + SEED_SHIFT)
    x = torch.randn(n, features, generator=g)
    y = ((x[:, :3].sum(1) + 0.5 * torch.randn(n, generator=g)) > 0).long()
    flip = torch.rand(n, generator=g) < label_noise
    y[flip] = 1 - y[flip]
    cut = int(0.7 * n)
    return TensorDataset(x[:cut], y[:cut]), TensorDataset(x[cut:], y[cut:])


class SlowDataset(Dataset):
    def __init__(self, data: Dataset, delay_s: float) -> None:
        self.data, self.delay_s = data, delay_s

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        time.sleep(self.delay_s)
        return self.data[i]


def setup(model: nn.Module, train: Dataset, val: Dataset, *, lr: float, epochs: int, batch: int = 64,
          momentum: float = 0.9, weight_decay: float = 0.0, patience: int | None = 10, grad_norm: bool = False,
          seed: int = 0, nan_at: int | None = None) -> dict[str, Any]:
    torch.manual_seed(seed + SEED_SHIFT)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    base = nn.CrossEntropyLoss()

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return base(out, y)

    trainer = monitor.build_trainer(model, optimizer, loss_fn)
    if nan_at is not None:  # a poisoned batch from then on (log of 0 in a user's loss, a corrupt sample)
        from ignite.engine import Events

        def poison(engine: Any) -> None:
            if engine.state.epoch >= nan_at:
                engine.state.batch = (engine.state.batch[0] * float("nan"), engine.state.batch[1])
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, poison)
    if grad_norm:
        monitor.attach_grad_norm(trainer, model)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(base)})
    return dict(model=model, optimizer=optimizer, trainer=trainer, evaluator=evaluator, epochs=epochs,
                train=DataLoader(train, batch_size=batch, shuffle=True), val=DataLoader(val, batch_size=256),
                patience=patience)


def mlp(features: int, hidden: int = 100, depth: int = 2, act: type[nn.Module] = nn.ReLU) -> nn.Module:
    layers: list[nn.Module] = []
    width = features
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), act()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, 2))


def case_study(seed: int) -> dict[str, Any]:
    torch.manual_seed(seed + SEED_SHIFT)
    train, val = make_data(seed + SEED_SHIFT)
    return setup(make_model(), train, val, lr=0.01, epochs=200, seed=seed)


def dropout_mlp(features: int, hidden: int, p: float) -> nn.Module:
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(p), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Dropout(p), nn.Linear(hidden, 2))


def warm_restarts(s: dict[str, Any], period: int) -> dict[str, Any]:
    """Cosine annealing with warm restarts every ``period`` epochs (the rate jumps back up on purpose)."""
    from ignite.engine import Events

    schedule = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(s["optimizer"], T_0=period)
    s["trainer"].add_event_handler(Events.EPOCH_COMPLETED, lambda _: schedule.step())
    return s


def growing_lr(s: dict[str, Any]) -> dict[str, Any]:
    from ignite.engine import Events

    def double(_: Any) -> None:
        for group in s["optimizer"].param_groups:
            group["lr"] *= 2
    s["trainer"].add_event_handler(Events.EPOCH_COMPLETED, double)
    return s


CASES = [
    # healthy: the case study and other well-set runs
    *[Case(f"healthy case study seed {s}", None, lambda s=s: case_study(s)) for s in (0, 1, 2)],
    Case("healthy logistic regression", None, lambda: setup(
        nn.Linear(20, 2), *two_class(3000, 20, 3), lr=0.05, epochs=60)),
    Case("healthy MLP with weight decay", None, lambda: setup(
        mlp(20, 64), *two_class(4000, 20, 4), lr=0.02, epochs=80, weight_decay=1e-3)),
    Case("healthy deep ReLU MLP", None, lambda: setup(
        mlp(20, 64, depth=4), *two_class(4000, 20, 5), lr=0.01, epochs=80, grad_norm=True)),
    Case("healthy small batches", None, lambda: setup(
        mlp(20, 32), *two_class(2000, 20, 6), lr=0.005, epochs=40, batch=16)),
    Case("healthy batches of 4", None, lambda: setup(
        mlp(20, 32), *two_class(1000, 20, 7), lr=0.002, epochs=20, batch=4)),
    Case("healthy dropout MLP", None, lambda: setup(
        dropout_mlp(20, 128, 0.3), *two_class(3000, 20, 8), lr=0.01, epochs=60)),
    Case("healthy warm restarts", None, lambda: warm_restarts(setup(
        mlp(20, 32), *two_class(4000, 20, 9), lr=0.05, epochs=24, weight_decay=1e-3, patience=None), period=6)),
    # overfitting: a large model on little data with label noise, no regularisation, no early stop
    *[Case(f"overfitting large MLP seed {s}", "overfitting", lambda s=s: setup(
        mlp(50, 512, depth=3), *two_class(300, 50, 10 + s, label_noise=0.2), lr=0.05, epochs=150,
        patience=None, seed=s)) for s in (0, 1)],
    # divergence: a learning rate far too high
    *[Case(f"divergence lr {lr}", "divergence", lambda lr=lr: setup(
        mlp(20, 64), *two_class(3000, 20, 20), lr=lr, epochs=30, patience=None), allowed={"nonfinite"})
      for lr in (1.5, 2.0)],
    # nonfinite: a poisoned batch (NaN) from some epoch on
    *[Case(f"nonfinite from epoch {e}", "nonfinite", lambda e=e: setup(
        mlp(20, 32), *two_class(2000, 20, 30), lr=0.01, epochs=20, nan_at=e)) for e in (3, 8)],
    # plateau: a learning rate far too low
    *[Case(f"plateau lr {lr}", "plateau", lambda lr=lr: setup(
        mlp(20, 64), *two_class(3000, 20, 40), lr=lr, epochs=25, momentum=0.0)) for lr in (1e-6, 1e-7)],
    # oscillation: a rate too high to settle, but not enough to diverge
    *[Case(f"oscillation lr {lr}", "oscillation", lambda lr=lr: setup(
        nn.Linear(20, 2), *two_class(600, 20, 50), lr=lr, epochs=40, batch=420, momentum=0.95, patience=None),
        allowed={"divergence", "nonfinite", "overfitting"}) for lr in (5.0, 10.0)],
    Case("oscillation MLP lr 0.3", "oscillation", lambda: setup(
        mlp(20, 64), *two_class(3000, 20, 50), lr=0.3, epochs=30, patience=None), allowed={"overfitting"}),
    # data_bound: a slow loader in front of a small model
    *[Case(f"data bound {d * 1e3:g} ms/sample", "data_bound", lambda d=d: setup(
        mlp(20, 32), SlowDataset(two_class(600, 20, 60)[0], d), two_class(600, 20, 60)[1], lr=0.01, epochs=4,
        batch=32)) for d in (0.001, 0.002)],
    # exploding gradients: a schedule set the wrong way (the rate doubles every epoch) on a deep net
    *[Case(f"exploding gradients lr x2 per epoch, depth {d}", "exploding_gradients", lambda d=d: growing_lr(setup(
        mlp(20, 64, depth=d), *two_class(3000, 20, 70), lr=0.005, epochs=20, patience=None, grad_norm=True)),
        allowed={"divergence", "nonfinite", "oscillation", "overfitting"}) for d in (4, 6)],
    # vanishing gradients: a deep sigmoid net
    *[Case(f"vanishing gradients sigmoid depth {d}", "vanishing_gradients", lambda d=d: setup(
        mlp(20, 32, depth=d, act=nn.Sigmoid), *two_class(3000, 20, 80), lr=0.01, epochs=15, grad_norm=True,
        momentum=0.0), allowed={"plateau"}) for d in (10, 14)],
]


def run_case(case: Case, workdir: Path) -> tuple[list[str], float | None]:
    """The kinds found in the case's run, and its highest ``train_loss_spike``."""
    torch.manual_seed(zlib.crc32(case.name.encode()) + SEED_SHIFT)  # the model's weights: each case its own
    s = case.make()
    run = monitor.attach_monitoring(
        s["trainer"], s["evaluator"], s["val"], run_dir=workdir / case.name.replace(" ", "_").replace("/", "_per_"),
        objective=monitor.Objective("loss", mode="min"), to_save={"model": s["model"], "optimizer": s["optimizer"]},
        overwrite=True, early_stopping=None if s["patience"] is None else monitor.EarlyStopping(patience=s["patience"]),
        checkpoints=monitor.Checkpoints(restore_best=False), console=monitor.Console(tqdm_kwargs={"disable": True}),
    )
    with run:
        s["trainer"].run(s["train"], max_epochs=s["epochs"])
    review = monitor.load_run(run.run_dir)
    spikes = review.history.get("train_loss_spike")
    return [f.kind for f in review.findings], None if spikes is None else float(spikes.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--seed-shift", type=int, default=0, help="move every seed by this (held-out runs)")
    args = parser.parse_args()
    global SEED_SHIFT
    SEED_SHIFT = args.seed_shift
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_diagnosis-"))
    results = []
    for case in CASES:
        if args.only and args.only not in case.name:
            continue
        found, spike = run_case(case, workdir)
        results.append((case, found))
        false = [k for k in found if k != case.expected and k not in case.allowed]
        mark = "ok " if (case.expected is None or case.expected in found) and not false else "BAD"
        shown = "-" if spike is None else f"{spike:.3g}"
        print(f"  {mark} {case.name:48s} spike {shown:>7s}  expected {case.expected or 'nothing':20s} "
              f"found {', '.join(found) or '-'}", flush=True)
    print(f"\n  {'kind':22s} {'runs':>5s} {'recall':>7s} {'precision':>10s}")
    for kind in KINDS:
        labelled = [found for case, found in results if case.expected == kind]
        flagged = [(case, found) for case, found in results if kind in found]
        hits = sum(kind in found for found in labelled)
        true = sum(1 for case, _ in flagged if case.expected == kind or kind in case.allowed)
        recall = hits / len(labelled) if labelled else float("nan")
        precision = true / len(flagged) if flagged else float("nan")
        print(f"  {kind:22s} {len(labelled):5d} {recall:7.2f} {precision:10.2f}")
    healthy = [(case, found) for case, found in results if case.expected is None]
    alarms = sum(len(found) for _, found in healthy)
    print(f"\n  healthy runs: {len(healthy)}, false alarms on them: {alarms}")


if __name__ == "__main__":
    main()

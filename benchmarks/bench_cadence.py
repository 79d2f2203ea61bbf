"""Checkpoint cadence: what the default budget costs on long epochs, what a kill can lose, and what
the per-iteration check costs.

    .venv/bin/python benchmarks/bench_cadence.py [--repeats 5]

1. The cadence check, which runs every iteration: an Ignite engine with a no-op step, bare and with
   monitor's ``CheckpointCadence`` (the budget: a clock read per iteration; never due here).
2. A long-epoch workload: the case-study MLP at batch 8 (438 iterations per epoch), validated every
   100 iterations, 4 epochs. Variants, interleaved: no checkpoint until the end (the floor); the
   default budget with its interval scaled down from 10 minutes to ``--interval`` seconds, so that
   a short benchmark saves as a long run would (the 1% cap on the save cost is unchanged); the
   budget on a 12M-parameter model, whose saves cost enough for the cap to set the interval; and a
   checkpoint at every validation. For each: the per-iteration time as a ratio to the floor, the
   share of training time spent saving on the training thread (measured by the cadence), and the
   longest stretch of training between two saves, which is what a kill can cost at most.
3. The case study (55 iterations an epoch, 40 epochs, no early stopping): the default cadence, a
   save at every validation, and no checkpoint until the end, interleaved: seconds per epoch, the
   saves made and the saving share, and what a save at each epoch costs per epoch.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio_table  # noqa: E402

import monitor  # noqa: E402
from monitor.handlers.cadence import CheckpointCadence  # noqa: E402


def cadence_check(iterations: int, with_cadence: bool) -> float:
    """Seconds per iteration of a no-op engine, with or without the budget's check."""
    engine = Engine(lambda e, b: None)
    if with_cadence:
        CheckpointCadence(None).attach(engine, save=lambda _: None)
    started = time.perf_counter()
    engine.run(range(iterations), max_epochs=1)
    return (time.perf_counter() - started) / iterations


def long_epoch_run(workdir: Path, variant: str, interval_s: float, results: dict[str, Any]) -> float:
    """One monitored run of the long-epoch workload; returns seconds per iteration (training only)."""
    g = torch.Generator().manual_seed(0)
    features = 784
    x = torch.randn(5000, features, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    train = DataLoader(TensorDataset(x[:3500], y[:3500]), batch_size=8, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(TensorDataset(x[3500:], y[3500:]), batch_size=256)
    torch.manual_seed(0)
    hidden = 4000 if variant == "budget, 12M-parameter model" else 100
    model = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, 2000 if hidden > 100 else 100),
                          nn.ReLU(), nn.Linear(2000 if hidden > 100 else 100, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    trainer = monitor.build_trainer(model, optimizer, loss_fn)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    every = {
        "no checkpoint until the end": 10.0**9,
        "every validation (100 iterations)": Events.ITERATION_COMPLETED(every=100),
    }.get(variant)
    run = monitor.attach_monitoring(
        trainer, evaluator, val, run_dir=Path(tempfile.mkdtemp(dir=workdir)) / "run",
        objective=monitor.Objective("loss", mode="min"), to_save={"model": model, "optimizer": optimizer},
        validate_on=Events.ITERATION_COMPLETED(every=100), early_stopping=None,
        checkpoints=monitor.Checkpoints(restore_best=False, every=every),
        console=monitor.Console(tqdm_kwargs={"file": open(os.devnull, "w")}),
    )
    if every is None:
        run.cadence.budget_interval_s = interval_s  # the default budget, its 10 minutes scaled down
    saves: list[float] = []
    times: dict[str, float] = {}
    trainer.add_event_handler(Events.STARTED, lambda _: times.setdefault("start", time.perf_counter()))

    def note_save(_: Engine) -> None:
        if run.cadence.saves > len(saves):
            saves.append(time.perf_counter())
    trainer.add_event_handler(Events.ITERATION_COMPLETED, note_save)
    trainer.add_event_handler(Events.COMPLETED, lambda e: times.setdefault("end", time.perf_counter()))
    with run:
        trainer.run(train, max_epochs=4)
    training_s = times["end"] - times["start"]
    marks = [times["start"], *saves, times["end"]]
    result = results.setdefault(variant, {"share": [], "gap": [], "saves": [], "interval": []})
    result["share"].append(run.cadence.saving_s / training_s)
    result["gap"].append(max(b - a for a, b in zip(marks, marks[1:], strict=False)))
    result["saves"].append(run.cadence.saves)
    result["interval"].append(run.cadence.interval() if every is None else float("nan"))
    return training_s / trainer.state.iteration


def case_study_run(workdir: Path, variant: str, results: dict[str, Any]) -> float:
    """One run of the case study (40 epochs); returns seconds per epoch of training."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    from binary_classification import make_data, make_model

    train, val = make_data(0)
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    trainer = monitor.build_trainer(model, optimizer, loss_fn)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    every = {"no checkpoint until the end": 10.0**9, "a save at every validation": Events.EPOCH_COMPLETED}.get(variant)
    run = monitor.attach_monitoring(
        trainer, evaluator, DataLoader(val, batch_size=256), run_dir=Path(tempfile.mkdtemp(dir=workdir)) / "run",
        objective=monitor.Objective("loss", mode="min"), to_save={"model": model, "optimizer": optimizer},
        early_stopping=None, checkpoints=monitor.Checkpoints(restore_best=False, every=every),
        console=monitor.Console(tqdm_kwargs={"disable": True}),
    )
    times: dict[str, float] = {}
    trainer.add_event_handler(Events.STARTED, lambda _: times.setdefault("start", time.perf_counter()))
    trainer.add_event_handler(Events.COMPLETED, lambda _: times.setdefault("end", time.perf_counter()))
    with run:
        trainer.run(DataLoader(train, batch_size=64, shuffle=True), max_epochs=40)
    training_s = times["end"] - times["start"]
    result = results.setdefault(variant, {"share": [], "saves": []})
    result["share"].append(run.cadence.saving_s / training_s)
    result["saves"].append(run.cadence.saves)
    return training_s / 40


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--interval", type=float, default=0.25, help="the budget's interval, scaled down (s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench_cadence-"))
    print(f"torch {torch.__version__}, 1 thread; {args.repeats} interleaved repetitions")

    n = 200_000
    check = interleaved({
        "bare engine, no-op step": lambda: cadence_check(n, False),
        "with the cadence check": lambda: cadence_check(n, True),
    }, args.repeats)
    print(f"\n1. per-iteration cost of the cadence check ({n} iterations of a no-op step)")
    print(ratio_table(check, "bare engine, no-op step", unit="us", scale=1e6))
    extra = statistics.median(check["with the cadence check"]) - statistics.median(check["bare engine, no-op step"])
    print(f"  the check adds {extra * 1e6:.2f} us per iteration")

    results: dict[str, Any] = {}
    names = ["no checkpoint until the end", "default budget (interval scaled)", "every validation (100 iterations)",
             "budget, 12M-parameter model"]
    runs = {name: (lambda name=name: long_epoch_run(workdir, name, args.interval, results)) for name in names}
    per_iteration = interleaved(runs, args.repeats)
    print(f"\n2. long epochs: 438 iterations per epoch, validation every 100, 4 epochs; budget interval "
          f"scaled to {args.interval:g} s")
    print(ratio_table({k: v for k, v in per_iteration.items() if "12M" not in k},
                      "no checkpoint until the end", unit="ms"))
    print(f"\n  {'variant':36s} {'saves':>6s} {'saving share':>13s} {'longest gap s':>14s} {'budget interval s':>18s}")
    for name in names:
        r = results[name]
        print(f"  {name:36s} {statistics.median(r['saves']):6.0f} {statistics.median(r['share']) * 100:12.2f}% "
              f"{statistics.median(r['gap']):14.2f} {statistics.median(r['interval']):18.2f}")
    print("  (saving share: training-thread time in saves / training time; longest gap: training between two "
          "saves, the most a kill can lose)")

    case: dict[str, Any] = {}
    kinds = ["no checkpoint until the end", "default", "a save at every validation"]
    per_epoch = interleaved({k: (lambda k=k: case_study_run(workdir, k, case)) for k in kinds}, args.repeats)
    print("\n3. the case study: 55 iterations an epoch, validation each epoch, 40 epochs")
    print(ratio_table(per_epoch, "no checkpoint until the end", unit="ms"))
    floor = statistics.median(per_epoch["no checkpoint until the end"])
    for name in kinds:
        r = case[name]
        print(f"  {name:30s} saves {statistics.median(r['saves']):4.0f}  saving share "
              f"{statistics.median(r['share']) * 100:5.2f}%  per epoch vs the floor "
              f"{(statistics.median(per_epoch[name]) - floor) * 1e3:+.2f} ms")


if __name__ == "__main__":
    main()

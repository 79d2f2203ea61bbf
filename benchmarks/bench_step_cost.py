"""What monitor adds to a training step and to an epoch, in CPU time of the training thread.

    .venv/bin/python benchmarks/bench_step_cost.py [--rounds 7] [--steps 2000]   # epochs of 1000 and 3000 steps

Wall-clock ratios of whole loops cannot resolve a few microseconds a step on a shared machine (the
raw loop against itself varies by 0.8-1.5x). This measures instead the CPU time of the thread that
trains (``time.thread_time``: not the background writer's, not other processes'), read by a probe
at the start of every iteration in every variant. Per step: the median over 100-step windows (each
holds the work done every ``log_every`` steps; a window an interrupt hit is dropped by the median).
Per epoch: the median, over epoch ends, of the time from an epoch's last step to the next epoch's
first, less one step (the validation, the history row, the checkpoint). Work a step defers to the
epoch's end (TensorBoard's points, handed to the OS at each validation) lands there; so each variant
runs epochs of two lengths (``--steps`` / 2 and x 1.5), and how the epoch's end grows between them
splits it into what belongs to the steps (added to the per-step cost) and the fixed rest (per epoch).

Two workloads: a step that only returns a loss tensor (what is left is the engine's, the data
loader's and monitor's own work, so the difference is sharp), and a linear layer on 32 features,
batch 16 (a real, cheap step of a few hundred microseconds). Variants: Ignite's bare engine
(``build_trainer``, ``build_evaluator``, validation each epoch), run twice as "bare" and "bare
again" (their difference is the noise floor, printed beside), monitor at its default settings
(``attach_monitoring``; the checkpoint budget makes no save in so short a run), and monitor with a
last checkpoint every epoch (so each epoch pays for one), and monitor with ``parts=[Recovery()]``
(its per-step loss list, its judgement every ``log_every`` steps and its good copies, printed over
monitor's defaults; and its checks alone, with ``keep_every`` too large for a copy within an
epoch), interleaved in a rotating order, one thread; medians over ``--rounds``.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import monitor  # noqa: E402

FEATURES, BATCH = 32, 16


def loaders(steps: int) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH + 256, FEATURES, generator=g)
    y = (x[:, 0] > 0).long()
    train = TensorDataset(x[: steps * BATCH], y[: steps * BATCH])
    val = TensorDataset(x[steps * BATCH:], y[steps * BATCH:])
    return (DataLoader(train, batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)),
            DataLoader(val, batch_size=64))


WINDOW = 100  # steps per measured window (a multiple of log_every, so the periodic work is in each)


def costs(variant: str, steps: int, workdir: Path, *, empty: bool, epochs: int = 4) -> tuple[float, float]:
    """``variant``'s CPU time of the training thread per step and per epoch's own work (validation,
    history row, checkpoint): the median over ``WINDOW``-step windows within epochs (a window that an
    interrupt or a page fault hit is an outlier the median drops), and the median over epoch ends of
    the time from an epoch's last step's start to the next epoch's first, less one step. The first
    epoch warms up and is left out."""
    torch.manual_seed(0)
    model = nn.Linear(FEATURES, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    if empty:
        losses = [torch.tensor(1.0 / (i + 1)) for i in range(64)]
        trainer = Engine(lambda engine, batch: {"loss": losses[engine.state.iteration % 64]})
    else:
        trainer = monitor.build_trainer(model, optimizer, loss_fn)
    evaluator = monitor.build_evaluator(model, {"loss": Loss(loss_fn)})
    train_loader, val_loader = loaders(steps)
    marks: list[float] = []  # the CPU clock at the start of each iteration (a probe in both variants)
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: marks.append(time.thread_time()))
    if variant.startswith("monitor"):
        every = Events.EPOCH_COMPLETED if variant == "monitor, checkpoint every epoch" else None  # None: the budget
        run = monitor.attach_monitoring(
            trainer, evaluator, val_loader, run_dir=Path(tempfile.mkdtemp(dir=workdir)) / "run",
            objective=monitor.Objective("loss", mode="min"), to_save={"model": model, "optimizer": optimizer},
            early_stopping=None, checkpoints=monitor.Checkpoints(every=every, restore_best=False),
            parts=[monitor.Recovery()] if variant == "monitor, Recovery()" else
            [monitor.Recovery(keep_every=10**9)] if variant == "monitor, Recovery() checks" else [],
        )
        with run:
            trainer.run(train_loader, max_epochs=epochs + 1)
    else:
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(val_loader))
        trainer.run(train_loader, max_epochs=epochs + 1)
    windows = [(marks[i + WINDOW] - marks[i]) / WINDOW
               for e in range(1, epochs + 1) for i in range(e * steps, (e + 1) * steps - WINDOW, WINDOW)]
    per_step = statistics.median(windows)
    ends = [marks[e * steps] - marks[e * steps - 1] - per_step for e in range(2, epochs + 1)]
    return per_step, statistics.median(ends)


def measure(rounds: int, workdir: Path, *, empty: bool, steps: int) -> None:
    variants = ("bare", "bare again", "monitor", "monitor, checkpoint every epoch", "monitor, Recovery()",
                "monitor, Recovery() checks")
    short, long = steps // 2, steps * 3 // 2  # two epoch lengths: what is per step and what is per epoch
    found: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in variants[r % len(variants):] + variants[: r % len(variants)]:
            kind = "bare" if v.startswith("bare") else v
            per_step, end_short = costs(kind, short, workdir, empty=empty)
            _, end_long = costs(kind, long, workdir, empty=empty)
            found[v].append((per_step, end_short, end_long))
    what = "a step that only returns a loss" if empty else f"a linear model, batch {BATCH}"
    base_step = statistics.median(f[0] for f in found["bare"])
    print(f"\n{what}: epochs of {short} and {long} steps; the bare engine's step {base_step * 1e6:.1f} us of CPU")
    print(f"  A: per step, the median of 100-step windows within epochs. B: per epoch, from an epoch's last "
          f"step to the next one's first, less a step ({short}-step epochs).\n  B grows with the steps an epoch "
          "holds where a step defers work to the epoch's end (TensorBoard's points, handed to the OS at each "
          f"validation):\n  C = A + B's growth from {short} to {long} steps / {long - short} is all of a step's "
          f"work; D = B less {short} x that growth is what an epoch costs by itself.")
    print(f"  {'':34s} {'A: step (us)':>17s} {'B: epoch (ms)':>17s} {'C: step (us)':>17s} {'D: epoch (ms)':>17s}")
    print(f"  {'':34s}" + f" {'median':>7s} {'min..max':>9s}" * 4)
    for name, variant, base in (("monitor (defaults) over bare", "monitor", "bare"),
                                ("monitor, a checkpoint each epoch", "monitor, checkpoint every epoch", "bare"),
                                ("Recovery() over monitor (defaults)", "monitor, Recovery()", "monitor"),
                                ("  its checks alone (no copies)", "monitor, Recovery() checks", "monitor"),
                                ("bare again over bare (noise)", "bare again", "bare")):
        pairs = list(zip(found[variant], found[base], strict=True))
        step = [(a[0] - b[0]) * 1e6 for a, b in pairs]
        epoch = [(a[1] - b[1]) * 1e3 for a, b in pairs]
        growth = [((a[2] - a[1]) - (b[2] - b[1])) / (long - short) for a, b in pairs]
        all_step = [s + g * 1e6 for s, g in zip(step, growth, strict=True)]
        fixed = [e - short * g * 1e3 for e, g in zip(epoch, growth, strict=True)]
        cells = [step, epoch, all_step, fixed]
        print(f"  {name:34s}" + "".join(
            f" {statistics.median(c):7.2f} {min(c):4.1f}..{max(c):<4.1f}" for c in cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=2000, help="steps per epoch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench_step_cost-"))
    print(f"torch {torch.__version__}, 1 thread; {args.rounds} interleaved rounds; CPU time of the training thread")
    measure(args.rounds, workdir, empty=True, steps=args.steps)
    measure(args.rounds, workdir, empty=False, steps=args.steps)

if __name__ == "__main__":
    main()

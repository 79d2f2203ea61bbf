"""What monitor adds to a training step and to an epoch, in CPU time of the training thread.

    .venv/bin/python benchmarks/bench_step_cost.py [--rounds 7] [--steps 2000]   # epochs of 1000 and 3000 steps
    .venv/bin/python benchmarks/bench_step_cost.py --lockstep [--steps 2000] [--epochs 4]   # per step, side by side

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

Variants run one after the other are seconds apart, and on shared cores the machine's speed drifts
over seconds (the bare engine against itself: -98..51 us a step on a busy day). ``--lockstep`` runs
the bare engine twice and monitor's defaults in one process, taking turns every 100 steps, and
compares each window with the same window of the bare engine (per step only: the epoch's end is
left out, and with it what a step defers to it).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def build(variant: str, steps: int, workdir: Path, *, empty: bool, marks: list[float]
          ) -> tuple[Engine, DataLoader, contextlib.AbstractContextManager[Any]]:
    """``variant``'s trainer (a probe appending the CPU clock to ``marks`` at each iteration's start), its
    data, and the context it runs in (monitor's run, or nothing for the bare engine)."""
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
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda _: marks.append(time.thread_time()))
    if not variant.startswith("monitor"):
        trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run(val_loader))
        return trainer, train_loader, contextlib.nullcontext()
    every = Events.EPOCH_COMPLETED if variant == "monitor, checkpoint every epoch" else None  # None: the budget
    run = monitor.attach_monitoring(
        trainer, evaluator, val_loader, run_dir=Path(tempfile.mkdtemp(dir=workdir)) / "run",
        objective=monitor.Objective("loss", mode="min"), to_save={"model": model, "optimizer": optimizer},
        early_stopping=None, checkpoints=monitor.Checkpoints(every=every, restore_best=False),
        parts=[monitor.Recovery()] if variant == "monitor, Recovery()" else
        [monitor.Recovery(keep_every=10**9)] if variant == "monitor, Recovery() checks" else [],
    )
    return trainer, train_loader, run


def costs(variant: str, steps: int, workdir: Path, *, empty: bool, epochs: int = 4) -> tuple[float, float]:
    """``variant``'s CPU time of the training thread per step and per epoch's own work (validation,
    history row, checkpoint): the median over ``WINDOW``-step windows within epochs (a window that an
    interrupt or a page fault hit is an outlier the median drops), and the median over epoch ends of
    the time from an epoch's last step's start to the next epoch's first, less one step. The first
    epoch warms up and is left out."""
    marks: list[float] = []  # the CPU clock at the start of each iteration (a probe in both variants)
    trainer, train_loader, context = build(variant, steps, workdir, empty=empty, marks=marks)
    with context:
        trainer.run(train_loader, max_epochs=epochs + 1)
    windows = [(marks[i + WINDOW] - marks[i]) / WINDOW
               for e in range(1, epochs + 1) for i in range(e * steps, (e + 1) * steps - WINDOW, WINDOW)]
    per_step = statistics.median(windows)
    ends = [marks[e * steps] - marks[e * steps - 1] - per_step for e in range(2, epochs + 1)]
    return per_step, statistics.median(ends)


def lockstep(workdir: Path, *, empty: bool, steps: int, epochs: int = 4) -> None:
    """The bare engine, the bare engine again and monitor's defaults in one process, taking turns every
    ``WINDOW`` steps (Ignite's ``interrupt``, then ``run`` goes on): each window of one is timed beside
    the same window of the others, a fraction of a second apart, so the machine's speed, which drifts
    over seconds on shared cores, is the same for the three. Per step: the median over windows of the
    difference to the bare engine's same window (windows holding an epoch's end left out)."""
    variants = ("bare", "bare again", "monitor")
    runs: dict[str, tuple[Engine, DataLoader]] = {}
    spent: dict[str, list[float]] = {v: [] for v in variants}
    with contextlib.ExitStack() as stack:
        for v in variants:
            trainer, loader, context = build(v, steps, workdir, empty=empty, marks=[])
            trainer.add_event_handler(Events.ITERATION_COMPLETED,
                                      lambda engine: engine.state.iteration % WINDOW or engine.interrupt())
            stack.enter_context(context)
            runs[v] = (trainer, loader)
        for k in range((epochs + 1) * steps // WINDOW + 1):  # the last turn ends the runs
            for v in variants[k % 3:] + variants[:k % 3]:
                trainer, loader = runs[v]
                started = time.thread_time()
                trainer.run(loader, max_epochs=epochs + 1)
                spent[v].append(time.thread_time() - started)
    # window k: iterations k * WINDOW + 1 ... ; one that starts an epoch holds the previous epoch's end
    kept = [k for k in range(steps // WINDOW, (epochs + 1) * steps // WINDOW) if k * WINDOW % steps]
    what = "a step that only returns a loss" if empty else f"a linear model, batch {BATCH}"
    base = statistics.median(spent["bare"][k] for k in kept) / WINDOW
    print(f"\n{what}, lockstep ({len(kept)} windows of {WINDOW} steps, each variant's beside the others'): "
          f"the bare step {base * 1e6:.1f} us of CPU")
    for name, v in (("monitor (defaults) over bare", "monitor"), ("bare again over bare (noise)", "bare again")):
        added = [(spent[v][k] - spent["bare"][k]) / WINDOW * 1e6 for k in kept]
        quartiles = statistics.quantiles(added, n=4)
        low, high = median_interval(added)
        print(f"  {name:34s} {statistics.median(added):7.2f} us a step  (95% interval of the median {low:.2f} .. "
              f"{high:.2f}; quartiles {quartiles[0]:.2f} .. {quartiles[2]:.2f})")


def median_interval(values: list[float]) -> tuple[float, float]:
    """A 95% confidence interval of the median of ``values`` (the order statistics about n/2 +- 0.98 sqrt(n),
    which hold the median with that chance whatever the distribution)."""
    ordered, n = sorted(values), len(values)
    half = 0.98 * math.sqrt(n)
    return ordered[max(0, math.floor(n / 2 - half))], ordered[min(n - 1, math.ceil(n / 2 + half))]


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
    parser.add_argument("--lockstep", action="store_true",
                        help="per step only, the variants taking turns every 100 steps in one process")
    parser.add_argument("--epochs", type=int, default=4,
                        help="with --lockstep: epochs measured after a warm-up (more: a narrower interval)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench_step_cost-"))
    print(f"torch {torch.__version__}, 1 thread; {args.rounds} interleaved rounds; CPU time of the training thread")
    if args.lockstep:
        lockstep(workdir, empty=True, steps=args.steps, epochs=args.epochs)
        lockstep(workdir, empty=False, steps=args.steps, epochs=args.epochs)
        return
    measure(args.rounds, workdir, empty=True, steps=args.steps)
    measure(args.rounds, workdir, empty=False, steps=args.steps)

if __name__ == "__main__":
    main()

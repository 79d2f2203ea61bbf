"""What monitor adds to a training step, in machine instructions: a count no neighbour on the machine blurs.

    .venv/bin/python benchmarks/bench_step_instructions.py [--short 300] [--long 900]   # needs valgrind

``bench_step_cost.py`` measures CPU time, which on 2 shared cores varies from run to run by more
than the few microseconds in question (its bare engine against itself: +-4 us on a quiet day, +-100
on a busy one). This counts the instructions the process executes instead (valgrind's cachegrind,
``--cache-sim=no``), the same at every run of the same code. The bare engine and monitor (its
defaults, with the last checkpoint at each validation, as the defaults save unless a save passes the
1% budget) run twice each, with epochs of ``--short`` and ``--long`` steps: the difference, over the
steps it adds, is a step's instructions, with what an epoch does once cancelled out (the imports, the
validation, a save's fixed part) and what grows with the epoch counted in (the TensorBoard points
written at its end, the data order a save holds). Every thread is counted (the background writer's
too; ``bench_step_cost.py`` counts the training thread's). Instructions are not time (a cache miss
costs more than an add): the last column turns them into microseconds at the rate of the bare step
measured natively beside, as noisy as that timing.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
EPOCHS = 4  # as bench_step_cost.costs runs them: one warm-up epoch and EPOCHS more
MONITOR = "monitor, checkpoint every epoch"  # its variant whose work does not depend on the clock (see child)


def _bench_step_cost() -> Any:
    """``bench_step_cost``, imported, with its settings: one torch thread, monitor's warnings off."""
    import logging

    import torch

    sys.path.insert(0, str(HERE.parent))
    import bench_step_cost

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    return bench_step_cost


def child(kind: str, steps: int, empty: bool) -> None:
    """The variant's run, alone in this process (what valgrind counts)."""
    bench_step_cost = _bench_step_cost()
    from monitor.handlers import tb_writer

    # What depends on the clock is made to depend on the steps, as it does natively: TensorBoard's points
    # go to the OS at each validation only (natively each second, thousands of steps; under valgrind,
    # 50x slower, a hundred), and the last checkpoint is saved at each validation (by default too,
    # unless its cost passes the budget: a judgement of timings).
    tb_writer._WRITE_EVERY_S = float("inf")
    bench_step_cost.costs(kind, steps, Path(tempfile.mkdtemp(prefix="bench_step_instructions-")), empty=empty,
                          epochs=EPOCHS)


def instructions(kind: str, steps: int, empty: bool) -> int:
    """The instructions a whole run of the variant executes (valgrind's ``I refs``)."""
    out = Path(tempfile.mkdtemp(prefix="cachegrind-")) / "out"
    command = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}", sys.executable,
               str(HERE), "--child", kind, str(steps), "empty" if empty else "linear"]
    # One thread everywhere (OpenBLAS's own spin in the count otherwise) and one hash seed (dicts alike).
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    shutil.rmtree(out.parent, ignore_errors=True)
    return int(found.group(1).replace(",", ""))


def native_step_s(steps: int, empty: bool) -> float:
    """The bare engine's step here, natively: CPU time of the training thread, median of 3 runs."""
    bench_step_cost = _bench_step_cost()
    workdir = Path(tempfile.mkdtemp(prefix="bench_step_instructions-"))
    return statistics.median(bench_step_cost.costs("bare", steps, workdir, empty=empty)[0] for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short", type=int, default=300, help="steps per epoch of the shorter run")
    parser.add_argument("--long", type=int, default=900, help="steps per epoch of the longer run")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind runs at once (one a core)")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, steps, workload = args.child
        child(kind, int(steps), workload == "empty")
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench_step_instructions.py needs valgrind (apt install valgrind); bench_step_cost.py times instead.")
    if not 100 <= args.short < args.long:
        sys.exit(f"--short {args.short} and --long {args.long}: need 100 <= short < long (bench_step_cost's "
                 "windows are 100 steps)")
    runs = [(kind, steps, empty) for empty in (True, False) for kind in ("bare", MONITOR)
            for steps in (args.short, args.long)]
    started = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        counts = dict(zip(runs, pool.map(lambda run: instructions(*run), runs), strict=True))
    added = (EPOCHS + 1) * (args.long - args.short)  # the steps the longer run adds
    print(f"Instructions per training step (valgrind --tool=cachegrind; runs of epochs of {args.short} and "
          f"{args.long} steps, {time.perf_counter() - started:.0f} s)")
    print(f"  {'':28s} {'bare':>10s} {'monitor':>10s} {'added':>8s} {'share':>7s} {'bare step':>10s} "
          f"{'added, at bare rate':>20s}")
    for empty in (True, False):
        per = {kind: (counts[(kind, args.long, empty)] - counts[(kind, args.short, empty)]) / added
               for kind in ("bare", MONITOR)}
        step_s = native_step_s(args.short, empty)
        extra = per[MONITOR] - per["bare"]
        name = "a step that only returns a loss" if empty else "a linear model, batch 16"
        print(f"  {name:28s} {per['bare']:10.0f} {per[MONITOR]:10.0f} {extra:8.0f} {extra / per['bare']:7.1%} "
              f"{step_s * 1e6:8.1f}us {extra / per['bare'] * step_s * 1e6:18.1f}us")


if __name__ == "__main__":
    main()

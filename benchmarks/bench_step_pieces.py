"""Each piece of monitor's per-step work, timed where it runs: after the step's own work.

    .venv/bin/python benchmarks/bench_step_pieces.py [--steps 1000] [--epochs 5]

``bench_step_cost.py`` gives what monitor adds to a step as a whole, in a noise of several
microseconds on shared cores; this says which piece it is. Each work of the one step handler
(:class:`~monitor.handlers.step.StepWork`) and the learning-rate hook is wrapped in two reads of the
training thread's CPU clock (``time.thread_time``), in monitor's default run on ``bench_step_cost``'s
two workloads; what a call that does nothing costs the same way, timed beside, is subtracted (the
clock reads are system calls of about 1.5 us, more in place). A piece costs more here than in a tight
loop of itself (its code and data are out of the caches after the step's work): that is the cost the
step pays. A figure is good to about a microsecond; the total is not the handler's cost (Ignite's
dispatch and the handler's own frame are outside the pieces).
"""
from __future__ import annotations

import argparse
import collections
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import bench_step_cost  # noqa: E402

from monitor.handlers import lr  # noqa: E402
from monitor.handlers.step import StepWork  # noqa: E402

clock = time.thread_time
NOTHING = "(a call that does nothing: the probe's own cost)"


class Pieces:
    """CPU time and calls of each named piece."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()

    def timed(self, name: str, work: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            started = clock()
            result = work(*args)
            self.spent[name] += clock() - started
            self.calls[name] += 1
            return result
        return run


def _name(work: Any) -> str:
    return getattr(work, "__qualname__", None) or type(work).__name__


def probe(trainer: Engine, pieces: Pieces) -> None:
    """Wrap each work of ``trainer``'s StepWork (its lists as they are now) in the clock."""
    step = next(h for h, _, _ in trainer._event_handlers[Events.ITERATION_COMPLETED] if isinstance(h, StepWork))
    # (the loss appended inline and the cadence's clock read inline are the handler's own work: not pieces)
    for group in ("first", "outputs", "checks", "every_log", "last"):
        works = getattr(step, group)
        works[:] = [pieces.timed(f"{group}: {_name(w)}", w) for w in works]
    if step.loss is not None:  # (instance attributes in front of the methods the handler calls)
        step.loss.check = pieces.timed(f"loss: {_name(step.loss.check)}", step.loss.check)  # type: ignore[method-assign]
    if step.points is not None:
        step.points.hand_over = pieces.timed(  # type: ignore[method-assign]
            f"points: {_name(step.points.hand_over)}", step.points.hand_over)
    step.first.append(pieces.timed(NOTHING, lambda engine: None))  # the probe's own cost, in place


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    for empty in (True, False):
        pieces = Pieces()
        original_hook = lr.LearningRates._on_step
        lr.LearningRates._on_step = pieces.timed("optimizer pre-hook: LearningRates._on_step",  # type: ignore[method-assign]
                                                 original_hook)
        try:
            trainer, loader, run = bench_step_cost.build(
                "monitor", args.steps, Path(tempfile.mkdtemp(prefix="bench_step_pieces-")), empty=empty, marks=[])
            with run:
                trainer.add_event_handler(Events.STARTED, probe, pieces)
                trainer.run(loader, max_epochs=args.epochs)
        finally:
            lr.LearningRates._on_step = original_hook  # type: ignore[method-assign]
        steps = args.steps * args.epochs
        probe_cost = pieces.spent[NOTHING] / pieces.calls[NOTHING]
        what = "a step that only returns a loss" if empty else f"a linear model, batch {bench_step_cost.BATCH}"
        print(f"\n{what}: {steps} steps at monitor's defaults; CPU time of each piece where it runs, less "
              f"the probe's own ({probe_cost * 1e6:.2f} us a call, a call that does nothing timed beside)")
        print(f"  {'piece':58s} {'a call (us)':>12s} {'calls a step':>13s} {'a step (us)':>12s}")
        total = 0.0
        for name in pieces.spent:
            if name == NOTHING:
                continue
            per_call = pieces.spent[name] / pieces.calls[name] - probe_cost
            per_step = per_call * pieces.calls[name] / steps
            total += per_step
            print(f"  {name:58s} {per_call * 1e6:12.2f} {pieces.calls[name] / steps:13.2f} {per_step * 1e6:12.2f}")
        print(f"  {'all of them':58s} {'':12s} {'':13s} {total * 1e6:12.2f}")


if __name__ == "__main__":
    main()

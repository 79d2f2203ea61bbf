"""Recovery (issue #18) on the diagnosis suite: false rollbacks on healthy runs, broken runs brought
back, transient faults recovered to the clean run's best, and the share of the time the good copies take.

    .venv/bin/python benchmarks/bench_recovery.py [--workdir DIR] [--only TEXT] [--skip-healthy]

- **Healthy runs** (every healthy recipe of ``bench_diagnosis.py``: fine-tuned starts, schedules,
  heavy tails, batches of 4) with ``Recovery()`` at its defaults: the rollbacks (target 0: a false
  rollback costs the user work).
- **Broken runs** (the suite's divergence, nonfinite and exploding-gradient runs) with and without
  ``Recovery()``: how each ends (status, problems found at the end), its rollbacks, and its best
  objective beside the run without recovery.
- **Transient faults** injected into healthy recipes: one corrupted batch (its inputs x 1e4) and a
  forward pass that returns huge values once (the loss x 1e6): the best objective with recovery
  beside the clean run's (target: within 1%).
- **Cost**: the time spent keeping good copies as a share of each run's training time (target <= 1%).
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_diagnosis as suite  # noqa: E402

import monitor  # noqa: E402

BROKEN = ("divergence", "nonfinite", "exploding_gradients")
FAULT_RECIPES = ("healthy case study seed 0", "healthy logistic regression", "healthy fine-tuned digits MLP SGD")


def corrupt_batch(at: int) -> Callable[[dict[str, Any]], None]:
    """The inputs of the batch of iteration ``at`` times 1e4 (a corrupt sample, a unit error)."""
    def inject(s: dict[str, Any]) -> None:
        @s["trainer"].on(Events.GET_BATCH_COMPLETED)
        def corrupt(engine: Any) -> None:
            if engine.state.iteration + 1 == at:
                engine.state.batch = (engine.state.batch[0] * 1e4, engine.state.batch[1])
    return inject


def huge_forward(at: int) -> Callable[[dict[str, Any]], None]:
    """The model's output times 1e6 at iteration ``at``, once (an overflow in a layer)."""
    def inject(s: dict[str, Any]) -> None:
        model, trainer = s["model"], s["trainer"]

        def hook(_: Any, __: Any, output: torch.Tensor) -> torch.Tensor | None:
            if model.training and trainer.state.iteration == at:
                return output * 1e6
            return None
        model.register_forward_hook(hook)
    return inject


def run(case: suite.Case, workdir: Path, *, recovery: bool, fault: Callable[[dict[str, Any]], None] | None = None,
        tag: str = "") -> dict[str, Any]:
    torch.manual_seed(zlib.crc32(case.name.encode()))  # the model's weights: as the diagnosis bench's
    s = case.make()
    if fault is not None:
        fault(s)
    part = monitor.Recovery() if recovery else None
    name = (case.name + tag + ("-recovery" if recovery else "")).replace(" ", "_").replace("/", "_per_")
    watch = monitor.attach_monitoring(
        s["trainer"], s["evaluator"], s["val"], run_dir=workdir / name,
        objective=monitor.Objective("loss", mode="min"), to_save=suite.to_save(s),
        overwrite=True, early_stopping=None if s["patience"] is None else monitor.EarlyStopping(patience=s["patience"]),
        checkpoints=monitor.Checkpoints(restore_best=False), console=monitor.Console(tqdm_kwargs={"disable": True}),
        validate_on=s["validate_on"], parts=[] if part is None else [part],
    )
    with watch:
        s["trainer"].run(s["train"], max_epochs=s["epochs"])
    review = monitor.load_run(watch.run_dir)
    elapsed = float(review.record.get("elapsed_s") or 0.0)
    rollbacks = [e for e in review.record.get("recoveries") or () if not e.get("gave_up")]
    return {
        "status": review.status, "best": review.best.get("value"), "rollbacks": len(rollbacks),
        "problems": [f.kind for f in review.findings if f.is_problem],
        "share": None if part is None or not elapsed else part.cost_s / elapsed,
        "reasons": [e["reason"] for e in rollbacks],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--skip-healthy", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_recovery-"))
    chosen = [c for c in suite.CASES if not args.only or args.only in c.name]
    shares: list[float] = []

    if not args.skip_healthy:
        print("  healthy runs with Recovery(): rollbacks (target 0), best beside the run without it "
              "(target: within 1%)")
        false = off = 0
        for case in (c for c in chosen if c.expected is None):
            r, plain = run(case, workdir, recovery=True), run(case, workdir, recovery=False)
            false += r["rollbacks"]
            shares.append(r["share"])
            gap = _gap(r["best"], plain["best"])
            off += gap is None or gap > 0.01
            print(f"  {'ok ' if not r['rollbacks'] and gap is not None and gap <= 0.01 else 'BAD'} {case.name:58s} "
                  f"rollbacks {r['rollbacks']}  best {_value(plain['best'])} -> {_value(r['best'])} "
                  f"({_percent(gap)})  copies {100 * r['share']:.2f}% of the time", flush=True)
        print(f"  false rollbacks: {false}; best more than 1% worse than without Recovery: {off}")

    print("\n  broken runs: without -> with Recovery() (never worse: the best with it at most the best without)")
    healed = total = worse = 0
    for case in (c for c in chosen if c.expected in BROKEN):
        plain, fixed = run(case, workdir, recovery=False), run(case, workdir, recovery=True)
        shares.append(fixed["share"])
        total += 1
        ended_healthy = fixed["status"] in ("completed", "early_stopped") and not fixed["problems"]
        healed += ended_healthy
        gap = _gap(fixed["best"], plain["best"])
        hurt = gap is None and fixed["best"] is None and plain["best"] is not None or (gap is not None and gap > 0)
        worse += hurt
        verdict = "WORSE " if hurt else "healed" if ended_healthy else "not   "
        print(f"  {verdict} {case.name:52s} {plain['status']:>13s} best {_value(plain['best'])} -> "
              f"{fixed['status']:>13s} best {_value(fixed['best'])} ({_percent(gap)}), "
              f"rollbacks {fixed['rollbacks']} ({', '.join(dict.fromkeys(fixed['reasons'])) or '-'}), problems "
              f"{', '.join(fixed['problems']) or '-'}", flush=True)
    if total:
        print(f"  ended healthy: {healed} of {total}; best worse than without Recovery: {worse} of {total}")

    print("\n  transient faults: clean best -> with the fault and Recovery() (target: within 1%)")
    within = faults = 0
    for case in (c for c in chosen if c.name in FAULT_RECIPES):
        clean = run(case, workdir, recovery=False)
        for label, fault in (("one batch x 1e4 at iteration 150", corrupt_batch(150)),
                             ("forward x 1e6 once at iteration 150", huge_forward(150))):
            hit = run(case, workdir, recovery=True, fault=fault, tag=f"-{label[:12]}")
            unguarded = run(case, workdir, recovery=False, fault=fault, tag=f"-{label[:12]}")
            shares.append(hit["share"])
            gap = (hit["best"] - clean["best"]) / abs(clean["best"])
            faults += 1
            within += gap <= 0.01
            print(f"  {'ok ' if gap <= 0.01 else 'BAD'} {case.name:38s} {label:36s} clean {_value(clean['best'])} "
                  f"-> {_value(hit['best'])} ({100 * gap:+.2f}%), rollbacks {hit['rollbacks']}; without recovery "
                  f"{unguarded['status']} best {_value(unguarded['best'])}", flush=True)
    if faults:
        print(f"  recovered to within 1%: {within} of {faults}")
    measured = [s for s in shares if s is not None]
    if measured:
        print(f"\n  good copies, share of the training time: median {100 * statistics.median(measured):.2f}%, "
              f"highest {100 * max(measured):.2f}% over {len(measured)} runs")


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _gap(value: float | None, reference: float | None) -> float | None:
    """How much worse ``value`` is than ``reference`` (a loss: higher is worse), as a share of it."""
    if value is None or reference is None or reference == 0:
        return None
    return (value - reference) / abs(reference)


def _percent(gap: float | None) -> str:
    return "-" if gap is None else f"{100 * gap:+.2f}%"


if __name__ == "__main__":
    main()

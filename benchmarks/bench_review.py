"""Review speed: 1,000,000 TensorBoard scalars into pandas (monitor vs tbparse vs TensorBoard's
EventAccumulator, side by side), and comparing 100 runs of 1000 epochs.

    .venv/bin/python benchmarks/bench_review.py [--scalars 1000000]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from monitor import compare, load_run
from monitor.review import read_scalars


def write_events(folder: Path, n: int) -> None:
    from tensorboardX import SummaryWriter

    writer = SummaryWriter(str(folder), max_queue=100_000, flush_secs=3600)
    tags = ["train/loss", "val/loss", "val/accuracy", "lr"]
    for i in range(n):
        writer.add_scalar(tags[i % 4], i * 1e-6, i // 4)
    writer.close()


def timed(func) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    count = func()
    return time.perf_counter() - start, count


def with_event_accumulator(folder: Path) -> int:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    return sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])


def with_tbparse(folder: Path) -> int | None:
    try:
        from tbparse import SummaryReader
    except ImportError:
        return None
    return len(SummaryReader(str(folder)).scalars)


def make_runs(root: Path, runs: int, epochs: int) -> list[Path]:
    header = "epoch,iteration,elapsed_s,epoch_s,lr,train_loss,val_accuracy,val_loss,is_best\n"
    paths = []
    for i in range(runs):
        folder = root / f"run{i:03d}"
        folder.mkdir(parents=True)
        rows = "".join(f"{e},{e * 55},{e * 0.1},0.1,0.01,{1 / e},{0.5 + e / 4000},{1 / e + i / 1000},False\n"
                       for e in range(1, epochs + 1))
        (folder / "history.csv").write_text(header + rows)
        (folder / "run.json").write_text(json.dumps({
            "format": 1, "name": folder.name, "status": "completed", "epochs_completed": epochs, "elapsed_s": 10.0,
            "best": {"metric": "val_loss", "mode": "min", "value": 1 / epochs + i / 1000, "epoch": epochs},
            "hparams": {"lr": 0.01, "seed": i},
        }))
        paths.append(folder)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scalars", type=int, default=1_000_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_review-"))
    write_events(folder / "tb", args.scalars)
    results = {}
    for name, func in (
        ("monitor.review.read_scalars", lambda: len(read_scalars(folder / "tb"))),
        ("tbparse SummaryReader", lambda: with_tbparse(folder / "tb")),
        ("TensorBoard EventAccumulator", lambda: with_event_accumulator(folder / "tb")),
    ):
        seconds, count = timed(func)
        results[name] = (seconds, count)
    base = results["monitor.review.read_scalars"][0]
    print(f"reading {args.scalars:,} TensorBoard scalars into memory")
    print(f"  {'reader':32s} {'seconds':>8s} {'scalars/s':>12s} {'x slower than monitor':>22s}")
    for name, (seconds, count) in results.items():
        if count is None:
            print(f"  {name:32s} not installed (pip install tbparse)")
            continue
        assert count == args.scalars, (name, count)
        print(f"  {name:32s} {seconds:8.2f} {count / seconds:12,.0f} {seconds / base:22.1f}")
    paths = make_runs(folder / "runs", 100, 1000)
    seconds, _ = timed(lambda: len(compare(load_run(p) for p in paths)))
    print(f"\ncomparing 100 runs of 1000 epochs (load_run + compare): {seconds:.2f} s")


if __name__ == "__main__":
    main()

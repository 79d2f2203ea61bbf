"""Review speed: 1,000,000 TensorBoard scalars into pandas (monitor vs tbparse vs TensorBoard's
EventAccumulator, side by side), comparing 100 runs of 1000 epochs, and the HTML page of 1, 8 and
50 runs of a sweep (its size and the CPU time to build it, per run).

    .venv/bin/python benchmarks/bench_review.py [--scalars 1000000] [--pages-only]
    .venv/bin/python benchmarks/bench_review.py --pages-only --against /path/to/an/older/checkout
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
    """``runs`` finished runs of ``epochs`` rows, a sweep of lr (4 values) and seed."""
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
            "hparams": {"lr": [0.001, 0.003, 0.01, 0.03][i % 4], "seed": i},
        }))
        paths.append(folder)
    return paths


PAGE = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from monitor import load_run
from monitor.review import to_html
paths = sorted(Path(sys.argv[2]).iterdir())
to_html([load_run(paths[0])])  # imports and one page first: what is measured is a page's own work
for count in (1, 8, 50):
    best = None
    for _ in range(3):
        start = time.process_time()
        page = to_html([load_run(p) for p in paths[:count]], title="bench")
        best = min(best or 1e9, time.process_time() - start)
    print(f"  {count:3d} runs: {len(page.encode()) / 1024:8.0f} KB {best / count * 1000:10.1f} ms of CPU a run")
"""


def pages(root: Path, checkouts: list[Path]) -> None:
    """The HTML page of 1, 8 and 50 runs of 100 epochs, built by each checkout (a process of its own)."""
    import subprocess
    import sys

    make_runs(root, 50, 100)
    for checkout in checkouts:
        print(f"HTML page ({checkout}): size, and CPU to load the runs and build it, per run (best of 3)")
        subprocess.run([sys.executable, "-c", PAGE, str(checkout), str(root)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scalars", type=int, default=1_000_000)
    parser.add_argument("--pages-only", action="store_true", help="only the HTML page's size and build time")
    parser.add_argument("--against", type=Path, action="append", default=[],
                        help="an older checkout whose page is built beside this one's")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench_review-"))
    pages(folder / "sweep", [Path(__file__).resolve().parents[1], *args.against])
    if args.pages_only:
        return
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

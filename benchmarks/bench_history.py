"""History append cost at epoch 10, 1,000 and 10,000: it must stay flat (O(1) per epoch).

    .venv/bin/python benchmarks/bench_history.py
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from monitor.store import History

ROW = {"elapsed_s": 1.0, "epoch_s": 0.1, "lr": 0.01, "train_loss": 0.4, "val_accuracy": 0.8, "val_loss": 0.45,
       "is_best": False}


def main() -> None:
    history = History(Path(tempfile.mkdtemp(prefix="bench_history-")) / "history.csv")
    checkpoints, samples = {10, 1_000, 10_000}, {}
    for epoch in range(1, 10_001):
        start = time.perf_counter()
        history.append({"epoch": epoch, "iteration": epoch * 55, **ROW})
        elapsed = time.perf_counter() - start
        for mark in checkpoints:
            if mark - 5 < epoch <= mark + 5:  # 10 appends around each mark
                samples.setdefault(mark, []).append(elapsed)
    first = statistics.median(samples[10])
    print(f"  {'epoch':>8s} {'median append ms':>18s} {'ratio to epoch 10':>18s}")
    for mark in sorted(samples):
        med = statistics.median(samples[mark])
        print(f"  {mark:8d} {med * 1e3:18.3f} {med / first:18.2f}")


if __name__ == "__main__":
    main()

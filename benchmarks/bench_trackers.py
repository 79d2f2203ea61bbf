"""What mirroring a run to MLflow costs, per validation, against a local tracking server.

    .venv/bin/python benchmarks/bench_trackers.py [--rounds 5] [--epochs 200]

Starts ``mlflow server`` (SQLite store, local artifacts, loopback), then runs the same small training
(a linear model, 4 steps an epoch, a validation each epoch: validations are most of the work, the
worst case for a per-validation cost) without and with ``parts=[monitor.MLflow(...)]``, interleaved,
one thread. Prints, as medians over the rounds: the training thread's CPU time per validation that
the part adds (the rows are sent by a background thread), the wall time per validation it adds, and
the time the background thread takes for one request (the rows waiting, in one ``log_batch``) and
to start the MLflow run (experiment, run, params).
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
from ignite.engine import Events
from ignite.metrics import Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import monitor  # noqa: E402
from monitor.handlers import tracking  # noqa: E402
from tests.test_trackers import start_server  # noqa: E402


def one_run(workdir: Path, uri: str | None, epochs: int) -> tuple[float, float]:
    """(training thread CPU seconds, wall seconds) of ``trainer.run``."""
    torch.manual_seed(0)
    x, y = torch.randn(96, 8), torch.randint(0, 2, (96,))
    model = nn.Linear(8, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = monitor.build_trainer(model, optimizer, nn.CrossEntropyLoss())
    evaluator = monitor.build_evaluator(model, {"loss": Loss(nn.CrossEntropyLoss())})
    parts = [] if uri is None else [monitor.MLflow(uri, experiment="bench")]
    run = monitor.attach_monitoring(
        trainer, evaluator, DataLoader(TensorDataset(x[64:], y[64:]), batch_size=32),
        run_dir=Path(tempfile.mkdtemp(dir=workdir)) / "run", objective=monitor.Objective("loss", mode="min"),
        to_save={"model": model, "optimizer": optimizer}, early_stopping=None, parts=parts,
        checkpoints=monitor.Checkpoints(every=Events.EPOCH_COMPLETED(every=50), restore_best=False),
    )
    cpu, wall = time.thread_time(), time.perf_counter()
    with run:
        trainer.run(DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16), max_epochs=epochs)
    return time.thread_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="bench_trackers-"))
    process, uri = start_server(workdir / "server")
    sends: list[float] = []
    starts: list[float] = []
    log_rows, start = tracking.MLflow._log_rows, tracking.MLflow._start

    def timed_rows(self: tracking.MLflow) -> None:
        t = time.perf_counter()
        log_rows(self)
        sends.append(time.perf_counter() - t)

    def timed_start(self: tracking.MLflow) -> None:
        t = time.perf_counter()
        start(self)
        starts.append(time.perf_counter() - t)

    tracking.MLflow._log_rows, tracking.MLflow._start = timed_rows, timed_start  # type: ignore[method-assign]
    try:
        found: dict[str, list[tuple[float, float]]] = {"without": [], "with MLflow": []}
        for r in range(args.rounds):
            for name in (("without", "with MLflow") if r % 2 == 0 else ("with MLflow", "without")):
                found[name].append(one_run(workdir, uri if name == "with MLflow" else None, args.epochs))
    finally:
        process.terminate()
    n = args.epochs
    cpu = [(a[0] - b[0]) / n for a, b in zip(found["with MLflow"], found["without"], strict=True)]
    wall = [(a[1] - b[1]) / n for a, b in zip(found["with MLflow"], found["without"], strict=True)]
    base = statistics.median(b[1] for b in found["without"]) / n
    print(f"torch {torch.__version__}, mlflow server on loopback; {args.rounds} rounds of {n} validations "
          f"(a validation each epoch of 4 steps; {base * 1e3:.2f} ms an epoch without MLflow)")
    print(f"  training thread CPU added per validation   median {statistics.median(cpu) * 1e6:8.1f} us "
          f"(min {min(cpu) * 1e6:.1f}, max {max(cpu) * 1e6:.1f})")
    print(f"  wall time added per validation             median {statistics.median(wall) * 1e6:8.1f} us "
          f"(min {min(wall) * 1e6:.1f}, max {max(wall) * 1e6:.1f})")
    print(f"  one request (the rows waiting, background) median {statistics.median(sends) * 1e3:8.2f} ms, "
          f"{len(sends) / args.rounds:.0f} requests a run of {n} rows")
    print(f"  MLflow run started (experiment, run, params) median {statistics.median(starts) * 1e3:6.1f} ms")


if __name__ == "__main__":
    main()

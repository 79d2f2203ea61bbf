"""Checkpoint save cost: monitor's atomic, fsynced, checksummed save vs torch.save + fsync.

    .venv/bin/python benchmarks/bench_checkpoint.py [--repeats 7]

Both write the same state dict to the same folder; the baseline is the least a durable save must do
(torch.save to a file, flush, fsync). monitor's whole save is timed with the writer in the
foreground; the training time blocked per save is timed as a monitored run does it, with the
background OrderedWriter (serialising, then handing over; the disk work is waited for outside the
timing, before the next save).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio_table  # noqa: E402

from monitor import DurableDiskSaver  # noqa: E402
from monitor.store.writer import OrderedWriter  # noqa: E402


def models() -> dict[str, nn.Module]:
    case = nn.Sequential(nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 2))
    big = nn.Sequential(*[nn.Linear(2048, 2048) for _ in range(12)])  # about 50M parameters
    millions = sum(p.numel() for p in big.parameters()) / 1e6
    return {"case-study MLP (90k parameters)": case, f"{millions:.0f}M-parameter MLP": big}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="bench_checkpoint-"))
    for name, model in models().items():
        state = {"model": model}
        engine = Engine(lambda e, b: None)

        def plain(model: nn.Module = model) -> float:
            start = time.perf_counter()
            with open(folder / "plain.pt", "wb") as f:
                torch.save(model.state_dict(), f)
                f.flush()
                os.fsync(f.fileno())
            return time.perf_counter() - start

        checkpoint = Checkpoint(state, DurableDiskSaver(folder / "monitor"), n_saved=1)

        def durable(engine: Engine = engine, checkpoint: Checkpoint = checkpoint) -> float:
            engine.state.iteration += 1
            start = time.perf_counter()
            checkpoint(engine)
            return time.perf_counter() - start

        writer = OrderedWriter()
        background = Checkpoint(state, DurableDiskSaver(folder / "background", writer=writer), n_saved=1)

        def blocked(
            engine: Engine = engine, checkpoint: Checkpoint = background, writer: OrderedWriter = writer
        ) -> float:
            engine.state.iteration += 1
            start = time.perf_counter()
            checkpoint(engine)
            elapsed = time.perf_counter() - start
            writer.flush()
            return elapsed

        times = interleaved({
            "torch.save + fsync": plain,
            "monitor: whole save (atomic, fsync, CRC)": durable,
            "monitor: training blocked (background)": blocked,
        }, args.repeats)
        writer.close()
        print(f"\n{name}")
        print(ratio_table(times, "torch.save + fsync"))


if __name__ == "__main__":
    main()

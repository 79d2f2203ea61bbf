"""Import time (``import monitor`` vs ``import ignite``) and peak memory of a monitored run vs the raw loop.

    .venv/bin/python benchmarks/bench_import_memory.py [--repeats 7]

Each measurement runs in a fresh interpreter, interleaved; memory is the peak resident set size.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPORT = "import time, {extra}; s = time.perf_counter(); import {module}; print(time.perf_counter() - s)"
MEMORY = """
import resource, sys, tempfile, logging, torch
from pathlib import Path
sys.path.insert(0, {here!r})
import bench_overhead as b
torch.set_num_threads(1); logging.disable(logging.WARNING)
b.{func}(784, 5, False, Path(tempfile.mkdtemp()))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run(code: str) -> float:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    # torch is imported first in both: the question is what monitor adds on top of ignite. The package
    # imports its names lazily, so the training side (monitor.compose.attach) is what a training script pays.
    times: dict[str, list[float]] = {"ignite": [], "monitor.compose.attach": []}
    for _ in range(args.repeats):
        for module in times:
            times[module].append(run(IMPORT.format(module=module, extra="torch")))
    ig, mo = statistics.median(times["ignite"]), statistics.median(times["monitor.compose.attach"])
    print(f"import (after torch), median of {args.repeats}: ignite {ig:.3f} s, monitor {mo:.3f} s, "
          f"monitor adds {mo - ig:+.3f} s")
    memory: dict[str, list[float]] = {"raw_loop": [], "monitored": []}
    for _ in range(3):
        for func in memory:
            memory[func].append(run(MEMORY.format(here=str(HERE), func=func)))
    raw, mon = statistics.median(memory["raw_loop"]), statistics.median(memory["monitored"])
    print(f"peak memory, case-study MLP, 6 epochs: raw loop {raw:.0f} MiB, monitored {mon:.0f} MiB, "
          f"monitor adds {mon - raw:+.0f} MiB")


if __name__ == "__main__":
    main()

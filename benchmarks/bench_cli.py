"""Start-up of the review command: ``monitor report RUN`` as a user types it, in fresh interpreters.

    .venv/bin/python benchmarks/bench_cli.py [--repeats 7] [--against /path/to/older/checkout]

Variants, interleaved in one run: an empty interpreter (the floor), ``import pandas`` (what reading
a CSV needs), ``import torch, ignite`` (what the command loaded before the review went torch-free),
``monitor report RUN`` from this tree, and, with ``--against``, from another checkout of the
repository (e.g. an older ``main``). Reported as medians and ratios to the floor; the target is
under 1 s for ``monitor report``. Peak memory (max RSS) of each is printed too.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, ratio_table  # noqa: E402

MAX_RSS = "import resource; print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"


def make_run(folder: Path) -> Path:
    """A finished case-study-sized run, made with this tree."""
    run_dir = folder / "run"
    subprocess.run([sys.executable, str(ROOT / "examples" / "binary_classification.py"), "--run-dir", str(run_dir),
                    "--no-progress", "--max-epochs", "5"], check=True, capture_output=True, cwd=ROOT)
    return run_dir


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, cwd=cwd)
    return time.perf_counter() - start


def peak_mib(args: list[str], cwd: Path) -> float:
    wrapper = f"import subprocess, sys; subprocess.run({args!r}, check=True, capture_output=True); {MAX_RSS}"
    out = subprocess.run([sys.executable, "-c", wrapper], check=True, capture_output=True, text=True, cwd=cwd)
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--against", type=Path, help="another checkout whose `monitor report` to time too")
    args = parser.parse_args()
    run_dir = make_run(Path(tempfile.mkdtemp(prefix="bench_cli-")))
    py = sys.executable
    commands = {
        "python -c pass (floor)": ([py, "-c", "pass"], ROOT),
        "import pandas": ([py, "-c", "import pandas"], ROOT),
        "import torch, ignite": ([py, "-c", "import torch, ignite"], ROOT),
        "monitor report RUN (this tree)": ([py, "-m", "monitor", "report", str(run_dir)], ROOT),
    }
    if args.against is not None:  # `python -m` puts the working directory first on sys.path
        commands[f"monitor report RUN ({args.against})"] = ([py, "-m", "monitor", "report", str(run_dir)],
                                                            args.against.resolve())
    times = interleaved({name: (lambda c=c: timed(*c)) for name, c in commands.items()}, args.repeats)
    print(f"`monitor report` start-up, {args.repeats} interleaved runs, fresh interpreters")
    print(ratio_table(times, baseline="python -c pass (floor)", unit="s", scale=1))
    for name, (command, cwd) in commands.items():
        print(f"  peak memory  {name:44s} {peak_mib(command, cwd):7.0f} MiB")
    print(f"  median `monitor report` (this tree): {statistics.median(times['monitor report RUN (this tree)']):.2f} s "
          "(target < 1 s)")


if __name__ == "__main__":
    main()

"""Run the case study in a process of its own (forked warm: tests/warm.py), kill it, resume it, and compare with an
uninterrupted run."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from monitor.store.history import TIMING_COLUMNS
from tests import warm

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "examples" / "binary_classification.py")
TIME_COLUMNS = list(TIMING_COLUMNS)  # timings differ between runs; nothing else may
# A last checkpoint every epoch: the crash points below count saves (the default budget saves at the end).
CADENCE = ["--checkpoint-every", "epoch"]


# The tests fork the case study warm (tests/warm.py); scripts/kill_test.py sets this to False to start
# a fresh interpreter for each run, as a user does.
WARM = True


def case_study(run_dir: Path, *extra: str, env: dict[str, str] | None = None, timeout: float = 300) -> int:
    """Run the case study to its end (or its crash); return the exit code (-9 for SIGKILL)."""
    full_env = {**os.environ, "PYTHONHASHSEED": "0", **(env or {})}
    args = [sys.executable, SCRIPT, "--run-dir", str(run_dir), "--no-progress", *CADENCE, *extra]
    if WARM:
        return warm.run(args, env=full_env, timeout=timeout).returncode
    return subprocess.run(args, env=full_env, capture_output=True, timeout=timeout).returncode


def start_case_study(run_dir: Path, *extra: str) -> warm.Process | subprocess.Popen[bytes]:
    args = [sys.executable, SCRIPT, "--run-dir", str(run_dir), "--no-progress", *CADENCE, *extra]
    if WARM:
        return warm.Process(args)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_rows(run_dir: Path, rows: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    history = run_dir / "history.csv"
    while time.monotonic() < deadline:
        if history.exists() and history.read_text().count("\n") > rows:
            return
        time.sleep(0.01)
    raise TimeoutError(f"{history} did not reach {rows} rows in {timeout} s")


def kill_at(process: warm.Process | subprocess.Popen[bytes], seconds: float) -> None:
    time.sleep(seconds)
    process.send_signal(signal.SIGKILL)
    process.wait()


def kill_trees(*pids: int) -> None:
    """SIGKILL each of ``pids`` and every process below it, all found first (a launcher's workers:
    torchrun starts them in sessions of their own, idist.Parallel spawns them), as a lost machine."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    doomed, todo = [], list(pids)
    while todo:
        doomed.append(todo.pop())
        todo += children.get(doomed[-1], [])
    for pid in doomed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def outcome(run_dir: Path) -> dict[str, object]:
    """What must be identical between an interrupted-and-resumed run and an uninterrupted one."""
    record = json.loads((run_dir / "run.json").read_text())
    checkpoints = run_dir / "checkpoints"
    best = {p.name: torch.load(p) for p in sorted(checkpoints.glob("best_*.pt"))}
    return {
        "history": pd.read_csv(run_dir / "history.csv").drop(columns=TIME_COLUMNS),
        "record": {k: record.get(k) for k in ("status", "stop_reason", "epochs_completed", "best", "recoveries")},
        "best_files": best,
        "last_files": sorted(p.name for p in checkpoints.glob("last_*.pt")),
        "stray_files": sorted(p.name for p in checkpoints.iterdir() if p.name.startswith(".tmp")),
    }


def assert_same_outcome(resumed: dict[str, object], whole: dict[str, object]) -> None:
    pd.testing.assert_frame_equal(resumed["history"], whole["history"])  # type: ignore[arg-type]
    assert resumed["record"] == whole["record"]
    assert list(resumed["best_files"]) == list(whole["best_files"])  # type: ignore[call-overload]
    for name, weights in resumed["best_files"].items():  # type: ignore[attr-defined]
        for key, tensor in weights.items():
            assert torch.equal(tensor, whole["best_files"][name][key]), (name, key)  # type: ignore[index]
    assert resumed["last_files"] == whole["last_files"]
    assert resumed["stray_files"] == []


def trained(folder: Path, epoch: int, upto: int | None = None) -> collections.Counter[int]:
    """How many times each sample index was trained in ``epoch``, over every rank's file in ``folder``
    (the driver's ``--record-trained``; ``upto``: the steps up to that iteration only)."""
    counts: collections.Counter[int] = collections.Counter()
    for path in folder.glob("rank*.jsonl"):
        for line in path.read_text().splitlines():
            e, iteration, indices = json.loads(line)
            if e == epoch and (upto is None or iteration <= upto):
                counts.update(indices)
    return counts

"""The kill test with a resize: kill -9 a distributed run at random instants and resume it on the other
number of processes (2 <-> 3), then count the samples trained.

    .venv/bin/python scripts/resize_kill_test.py [--kills 10] [--seed 0] [--batch-size 64] [--processes 2,3]
    .venv/bin/python scripts/resize_kill_test.py --processes 1,2,3 --batch-size 48   # 1 <-> 2 <-> 3, same batch
    .venv/bin/python scripts/resize_kill_test.py --processes 1,2,3 --batch-size 48 --fsdp   # the model sharded (FSDP2)
    .venv/bin/python scripts/resize_kill_test.py --processes 2 --fsdp --kills 20   # always 2: history row by row
    .venv/bin/python scripts/resize_kill_test.py --processes 2,3 --workers 4 --kills 6   # with DataLoader workers
    .venv/bin/python scripts/resize_kill_test.py --processes 2 --fsdp --recovery --kills 10   # and a rollback

With one number of processes (``--processes 2``) every resume is on that many, and each trial's
history must also equal the uninterrupted run's, row by row (every column but the timings), and
its checkpoints folder hold no temp file or folder, only whole shards folders that a checkpoint
names, and every shards folder a checkpoint (best or last) names.

``--processes``: the numbers of processes the segments run on; each resume picks another at random
(1 process draws its order with a RandomSampler, several with DistributedSamplers).

Each segment runs the distributed example through ``tests/distributed_driver.py`` (gloo, 3 epochs, a
last checkpoint every 10 iterations), each rank writing the sample indices of every step it trains
(``--record-trained``). ``idist.auto_dataloader`` splits the batch: 64 is 2 x 32 or 3 x 21 (63 in
all, so the epoch length changes: 55 or 56 steps), 48 is 2 x 24 or 3 x 16 (the same global batch).
A segment's steps after the checkpoint the next segment resumed from are lost with the kill and
redone: the ones that count are those up to the next segment's first step (by the history's
iteration, the steps taken). Over them, every sample of every epoch must be trained exactly once,
padding aside: a ``DistributedSampler`` gives 3 processes equal shares by repeating the first
samples of an order, and so does the rest of an interrupted epoch dealt out to a new layout (up to
2 samples twice for each segment that trained in the epoch).
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.crash_helpers import TIME_COLUMNS, kill_trees  # noqa: E402

DRIVER = str(ROOT / "tests" / "distributed_driver.py")
SAMPLES, EPOCHS = 3500, 3
COMMON = ["--no-progress", "--seed", "0", "--max-epochs", str(EPOCHS), "--patience", "50",
          "--checkpoint-every", "iteration:10"]
BATCH = ["--batch-size", "64"]  # in all: 2 x 32 or 3 x 21


def start(run_dir: Path, nproc: int, record: Path, resume: bool) -> subprocess.Popen[bytes]:
    record.mkdir(parents=True)
    args = [sys.executable, DRIVER, "train", "--nproc", str(nproc), "--run-dir", str(run_dir), *COMMON, *BATCH,
            "--record-trained", str(record), *(["--resume"] if resume else []),
            "--start-method", "spawn"]  # as users start them (the tests fork, to start faster)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def steps(record: Path) -> list[tuple[int, int, list[int]]]:
    """(epoch, iteration, indices) of every step every rank of a segment recorded."""
    out = []
    for path in record.glob("rank*.jsonl"):
        for line in path.read_text().splitlines():
            try:
                epoch, iteration, indices = json.loads(line)
            except ValueError:  # a line cut by the kill: its step is after any checkpoint
                continue
            out.append((epoch, iteration, indices))
    return out


def surviving(records: list[Path]) -> list[tuple[int, int, list[int], int]]:
    """The steps that count (epoch, iteration, indices, segment): each segment's up to the step before
    the next segment's first."""
    kept: list[tuple[int, int, list[int], int]] = []
    resumed_at = None  # the first iteration of the next segment that trained something
    for number, record in reversed(list(enumerate(records))):
        segment = steps(record)
        kept += [(*s, number) for s in segment if resumed_at is None or s[1] < resumed_at]
        if segment:
            resumed_at = min(s[1] for s in segment)
    return kept


def check(kept: list[tuple[int, int, list[int], int]]) -> list[str]:
    problems = []
    for epoch in range(1, EPOCHS + 1):
        counts = collections.Counter(i for e, _, indices, _ in kept if e == epoch for i in indices)
        padding = 2 * len({segment for e, _, _, segment in kept if e == epoch})
        missing = SAMPLES - len(counts)
        twice = sorted(i for i, n in counts.items() if n > 1)
        if missing or len(twice) > padding or any(counts[i] > 2 for i in twice):
            problems.append(f"epoch {epoch}: {missing} samples never trained, {len(twice)} more than once")
    return problems


def same_as_uninterrupted(run_dir: Path, whole: Path) -> list[str]:
    """What differs from the uninterrupted run: a history value (timings aside), or the checkpoints
    folder (a temp file or folder left, a shards folder no checkpoint names or not whole)."""
    import pandas as pd
    import torch

    from monitor.runtime.checkpoint_io import shards_named
    from monitor.store.manifest import folder_problem

    problems = []
    got, want = (pd.read_csv(d / "history.csv").drop(columns=TIME_COLUMNS) for d in (run_dir, whole))
    try:
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-5)
    except AssertionError as e:
        problems.append(f"history differs: {str(e).splitlines()[0]}")
    checkpoints = run_dir / "checkpoints"
    problems += [f"{p.name} left" for p in checkpoints.glob(".tmp-*")]
    for folder in checkpoints.glob("*.shards"):
        if not folder.with_suffix(".pt").exists():
            problems.append(f"{folder.name}: no checkpoint names it")
        elif (problem := folder_problem(folder)) is not None:
            problems.append(problem)
    for path in checkpoints.glob("*.pt"):  # a checkpoint naming a shards folder that is not there
        state = torch.load(path, weights_only=False, map_location="cpu")
        named = shards_named(state) or shards_named(state.get("model"))  # a best's, a last's
        if named is not None and not (checkpoints / named).is_dir():
            problems.append(f"{path.name} names {named}, which is missing")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=10, help="stop after at least this many kills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64, help="in all (auto_dataloader splits it)")
    parser.add_argument("--processes", default="2,3", help="the numbers of processes to resume on, e.g. 1,2,3")
    parser.add_argument("--fsdp", action="store_true", help="the model sharded with FSDP2 (shards folders)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers asked for (split by process)")
    parser.add_argument("--recovery", action="store_true",
                        help="a NaN loss on rank 0 at iteration 30, rolled back by Recovery (a good copy every 10 "
                             "iterations): kills land before, in and after the rollback")
    args = parser.parse_args()
    if args.fsdp:
        COMMON.append("--fsdp")
    if args.recovery:
        # (a NaN loss, not a NaN batch: the steps' samples are recorded by their values)
        COMMON.extend(["--recovery", "--keep-every", "10", "--nan-rank", "0", "--nan-at", "30"])
    COMMON.extend(["--workers", str(args.workers)])
    layouts = [int(n) for n in args.processes.split(",")]
    if any(n < 1 for n in layouts):
        parser.error(f"argument --processes should list numbers of processes, got {args.processes!r}")
    BATCH[1] = str(args.batch_size)
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="resize_kill_test-"))
    started = time.monotonic()
    whole = start(work / "whole", layouts[0], work / "whole-record", resume=False)
    _, err = whole.communicate(timeout=600)
    assert whole.returncode == 0, err.decode()[-3000:]
    duration = time.monotonic() - started
    assert not check(surviving([work / "whole-record"])), "the uninterrupted run does not train each sample once"
    kills = trials = failures = 0
    while kills < args.kills:
        trials += 1
        run_dir = work / f"trial{trials}"
        records: list[Path] = []
        sizes: list[int] = []
        while True:
            nproc = layouts[0] if not sizes or len(layouts) == 1 else \
                rng.choice([n for n in layouts if n != sizes[-1]])
            records.append(work / f"trial{trials}-segment{len(records)}")
            sizes.append(nproc)
            process = start(run_dir, nproc, records[-1], resume=len(records) > 1)
            time.sleep(rng.uniform(0.2 * duration, duration))
            if process.poll() is not None:
                break
            kill_trees(process.pid)
            process.wait()
            kills += 1
        _, err = process.communicate()
        if process.returncode != 0:
            failures += 1
            print(f"trial {trials}: the last segment exited {process.returncode}:\n{err.decode()[-2000:]}")
            continue
        problems = check(surviving(records))
        if len(layouts) == 1:
            problems += same_as_uninterrupted(run_dir, work / "whole")
        failures += bool(problems)
        print(f"trial {trials}: processes {sizes}; {'; '.join(problems) or 'every sample of every epoch once'}",
              flush=True)
    print(f"\n{kills} kills over {trials} trials, each resumed on {'the same' if len(layouts) == 1 else 'another'} "
          f"number of processes: {failures} trials with a sample missing or repeated, a failed resume"
          f"{', a history row unlike the uninterrupted run or a folder not whole' if len(layouts) == 1 else ''}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

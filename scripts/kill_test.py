"""The long kill test: kill -9 the case study hundreds of times, resume each time, check everything.

    .venv/bin/python scripts/kill_test.py --kills 200          # about 8 minutes on 2 cores
    .venv/bin/python scripts/kill_test.py --kills 200 --long-epoch --loader generator   # or global, workers, augmented
    .venv/bin/python scripts/kill_test.py --kills 50 --recovery   # a NaN batch at iteration 300, rolled back
    .venv/bin/python scripts/kill_test.py --kills 30 --resize     # 2 <-> 3 processes (resize_kill_test.py)
    .venv/bin/python scripts/kill_test.py --kills 60 --damage     # a file damaged after a trial's first kill

``--long-epoch``: 438 iterations per epoch (batch 8), validation every 100 iterations, a last
checkpoint every 50 iterations, 3 epochs; kills land inside epochs, and each resume continues
mid-epoch. ``--loader``: the DataLoader shuffles with the global RNG, with its own seeded generator,
with 2 worker processes, or with 2 worker processes that add random noise to each sample as they
load it (a random transform: each worker's RNG must be replayed too). It also prints the most
iterations a resume had to redo (the progress a kill lost: from the newest checkpoint on disk to
the last training-loss point the killed run wrote). ``--recovery``: the case study with
``monitor.Recovery(keep_every=20)`` and a NaN batch at iteration 300 (epoch 6): kills land before,
during and after the rollback, and the resumed run must end as the uninterrupted recovered one
(its ``recoveries`` in run.json included).

``--damage``: between a trial's first kill and its resume, one file of the run is damaged at random (history.csv
torn mid-line, a row deleted, a value changed, emptied or deleted; run.json's status edited to
``completed``; a byte of a best or last checkpoint flipped). Each damage ends one of three ways:
*repaired or harmless* (the run ends as the uninterrupted one), *found and said* (the resume refused
with an error, or the run ends otherwise with the damage set aside as ``*.damaged`` and a WARNING:
a best checkpoint lost), or *silent* (it ends otherwise and nothing says why: the target is 0).

Each trial runs the case study in a fresh folder, kills it at a random instant (during start-up,
training, a checkpoint save, anywhere), resumes it with --resume, and repeats until a resume runs to
the end. Then it checks every file (each checkpoint against its manifest and torch.load, run.json,
history.csv), that the history holds each epoch exactly once, and that the final history, best epoch
and score, stop epoch and best checkpoint equal those of an uninterrupted run of the same seed.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tests.crash_helpers  # noqa: E402
from monitor.compose.rundir import CheckpointError, load_checkpoint  # noqa: E402
from monitor.review.events import read_scalars  # noqa: E402
from monitor.store.layout import last_checkpoints  # noqa: E402
from tests.crash_helpers import assert_same_outcome, case_study, outcome, start_case_study  # noqa: E402

tests.crash_helpers.WARM = False  # a fresh interpreter for each run, as a user starts it

LONG_EPOCH = ["--batch-size", "8", "--validate-every", "100", "--checkpoint-every", "iteration:50",
              "--max-epochs", "3", "--patience", "1000"]
RECOVERY = ["--recovery", "--keep-every", "20", "--nan-at", "300"]
LOADERS = {"global": [], "generator": ["--loader-seed", "7"], "workers": ["--num-workers", "2"],
           "augmented": ["--num-workers", "2", "--augment", "0.02"]}  # random transforms in the workers


def _rows_edit(path: Path, rng: random.Random, how: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) < 3:
        path.write_text("")
        return
    n = rng.randrange(1, len(lines))
    if how == "torn":
        text = "".join(lines)
        path.write_text(text[: len(text) - rng.randint(2, len(lines[-1]) - 1)])
    elif how == "row deleted":
        path.write_text("".join(lines[:n] + lines[n + 1:]))
    else:  # a value changed
        cells = lines[n].rstrip("\n").split(",")
        k = rng.randrange(2, len(cells))
        cells[k] = "0.123456" if cells[k] != "0.123456" else "0.654321"
        lines[n] = ",".join(cells) + "\n"
        path.write_text("".join(lines))


def damage(run_dir: Path, rng: random.Random) -> str:
    """Damage one file of ``run_dir`` at random; what was done, in words."""
    history, record = run_dir / "history.csv", run_dir / "run.json"
    bests = sorted((run_dir / "checkpoints").glob("best_*.pt"))
    lasts = sorted((run_dir / "checkpoints").glob("last_*.pt"))
    choices = [k for k, ok in (("history torn", history.exists()), ("history row deleted", history.exists()),
                               ("history value changed", history.exists()), ("history emptied", history.exists()),
                               ("history deleted", history.exists()), ("run.json status edited", record.exists()),
                               ("best checkpoint byte flipped", bool(bests)),
                               ("last checkpoint byte flipped", bool(lasts))) if ok]
    if not choices:
        return "nothing to damage yet"
    what = rng.choice(choices)
    if what == "history emptied":
        history.write_text("")
    elif what == "history deleted":
        history.unlink()
    elif what.startswith("history"):
        _rows_edit(history, rng, {"history torn": "torn", "history row deleted": "row deleted"}.get(what, "value"))
    elif what == "run.json status edited":
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "status": "completed"}))
    else:
        path = rng.choice(bests if what.startswith("best") else lasts)
        data = bytearray(path.read_bytes())
        data[rng.randrange(len(data))] ^= 0xFF
        path.write_bytes(bytes(data))
    return what


def corrupt_files(run_dir: Path) -> list[str]:
    """Files a reader could not use: damaged checkpoints, unreadable run.json or history.csv."""
    bad = []
    for path in (run_dir / "checkpoints").glob("*.pt"):
        try:
            load_checkpoint(path)
        except CheckpointError as e:
            bad.append(str(e))
    try:
        json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError) as e:
        bad.append(f"run.json: {e}")
    text = (run_dir / "history.csv").read_text()
    if not text.endswith("\n"):
        bad.append("history.csv ends in a torn line")
    return bad


def row_problems(run_dir: Path, reference_dir: Path) -> tuple[int, int]:
    """(duplicated rows, missing rows) in history.csv against the uninterrupted run's validations."""
    done = pd.read_csv(run_dir / "history.csv")["iteration"].tolist()
    expected = set(pd.read_csv(reference_dir / "history.csv")["iteration"])
    return len(done) - len(set(done)), len(expected - set(done))


def redone_if_resumed(run_dir: Path) -> int | None:
    """Iterations a resume now would redo: the killed run's last training-loss point minus the
    iteration of the newest checkpoint on disk (None when nothing was trained yet)."""
    scalars = read_scalars(run_dir / "tb")
    losses = scalars[scalars["tag"] == "train/loss"] if len(scalars) else scalars
    if losses.empty:
        return None
    for path in last_checkpoints(run_dir / "checkpoints"):
        try:
            state = load_checkpoint(path)  # its iteration as TensorBoard counts steps (run_iteration)
            saved = int(state["trainer"]["iteration"]) + int((state.get("data_order") or {}).get("iteration_offset", 0))
            return int(losses["step"].max()) - saved
        except CheckpointError:
            continue
    return int(losses["step"].max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=200, help="stop after at least this many kills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long-epoch", action="store_true", help="long epochs, checkpoints within them")
    parser.add_argument("--loader", choices=sorted(LOADERS), default="global")
    parser.add_argument("--recovery", action="store_true", help="a NaN batch at iteration 300, rolled back")
    parser.add_argument("--damage", action="store_true", help="damage a file after each trial's first kill")
    parser.add_argument("--resize", action="store_true",
                        help="the distributed example, each resume on the other number of processes "
                             "(scripts/resize_kill_test.py; --batch-size N passes on)")
    args, rest = parser.parse_known_args()
    if args.resize:
        resize = Path(__file__).with_name("resize_kill_test.py")
        return subprocess.call([sys.executable, str(resize), "--kills", str(args.kills), "--seed", str(args.seed),
                                *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    extra = [*LONG_EPOCH] if args.long_epoch else []
    extra += LOADERS[args.loader]
    extra += RECOVERY if args.recovery else []
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_test-"))
    reference_dir = work / "reference"
    started = time.monotonic()
    assert case_study(reference_dir, *extra) == 0, "the uninterrupted run failed"
    reference = outcome(reference_dir)
    duration = time.monotonic() - started

    totals = {"trials": 0, "kills": 0, "corrupt files": 0, "duplicated rows": 0, "missing rows": 0,
              "mismatches": 0, "fallbacks to an older checkpoint": 0, "most iterations redone": 0}
    if args.damage:
        totals.update({"files damaged": 0, "repaired or harmless": 0, "found and said": 0, "silent": 0})
    damaged: list[str] = []
    while totals["kills"] < args.kills:
        totals["trials"] += 1
        run_dir = work / f"trial{totals['trials']}"
        kills_here = 0
        while True:
            process = start_case_study(run_dir, *extra, *(["--resume"] if kills_here else []))
            time.sleep(rng.uniform(0.0, duration))
            if process.poll() is not None:  # it finished before the kill
                break
            process.kill()
            process.wait()
            kills_here += 1
            totals["kills"] += 1
            if (run_dir / "history.csv").exists() and not args.damage:  # (--damage makes its own)
                totals["corrupt files"] += len(corrupt_files(run_dir))
            redone = redone_if_resumed(run_dir) if (run_dir / "tb").exists() else None
            totals["most iterations redone"] = max(totals["most iterations redone"], redone or 0)
            if args.damage and run_dir.exists() and not damaged:  # one damage a trial, after its first kill
                damaged.append(damage(run_dir, rng))
                totals["files damaged"] += 1
        if args.damage:
            said = process.returncode != 0 or any(run_dir.rglob("*.damaged"))
            same = process.returncode == 0 and _same(run_dir, reference)
            key = "repaired or harmless" if same else "found and said" if said else "silent"
            totals[key] += 1
            if key == "silent":
                print(f"trial {totals['trials']}: SILENT after {damaged}", file=sys.stderr)
            print(f"trial {totals['trials']}: {kills_here} kills, damage {damaged}: {key}", flush=True)
            damaged = []
            continue
        if process.returncode != 0:
            print(f"trial {totals['trials']}: the final run exited {process.returncode}", file=sys.stderr)
            print(process.stderr.read().decode() if process.stderr else "", file=sys.stderr)
            totals["mismatches"] += 1
            continue
        totals["corrupt files"] += len(corrupt_files(run_dir))
        duplicated, missing = row_problems(run_dir, reference_dir)
        totals["duplicated rows"] += duplicated
        totals["missing rows"] += missing
        totals["fallbacks to an older checkpoint"] += len(list((run_dir / "checkpoints").glob("*.damaged")))
        try:
            assert_same_outcome(outcome(run_dir), reference)
        except AssertionError as e:
            totals["mismatches"] += 1
            print(f"trial {totals['trials']}: mismatch: {e}", file=sys.stderr)
        print(f"trial {totals['trials']}: {kills_here} kills; totals {totals}", flush=True)

    mode = f"long epochs, loader {args.loader}" if args.long_epoch else f"loader {args.loader}"
    mode += ", a file damaged before each resume" if args.damage else ""
    mode += ", a NaN batch rolled back by Recovery" if args.recovery else ""
    print(f"\nkill test of the case study ({mode}; kill -9 at random instants, then --resume)")
    for key, value in totals.items():
        print(f"  {key:34s} {value}")
    print(f"  {'wall time':34s} {time.monotonic() - started:.0f} s")
    failed = any(totals.get(k) for k in ("corrupt files", "duplicated rows", "missing rows", "mismatches", "silent"))
    return 1 if failed else 0


def _same(run_dir: Path, reference: object) -> bool:
    try:
        assert_same_outcome(outcome(run_dir), reference)
    except (AssertionError, OSError, ValueError, KeyError):
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())

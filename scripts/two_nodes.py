"""Two nodes on one host: torchrun twice (one process a node, loopback rendezvous), each node with a
run folder of its own (node 1 never sees node 0's: node-local disks), killed mid-epoch and resumed.

    .venv/bin/python scripts/two_nodes.py [--kills 3]

Node 0 writes the run; node 1's folder stays empty. Each trial runs the distributed example on two
"nodes" with a last checkpoint every 20 iterations, kills every process of both nodes (``kill -9``:
the whole job pre-empted) once a checkpoint within an epoch exists, and resumes on both; the
resumed history must equal an uninterrupted two-node run's in every column but timings.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from monitor.store.history import TIMING_COLUMNS  # noqa: E402
from tests.crash_helpers import kill_trees  # noqa: E402

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))
EXAMPLE = str(ROOT / "examples" / "distributed.py")
COMMON = ["--backend", "gloo", "--no-progress", "--seed", "0", "--max-epochs", "4", "--patience", "50",
          "--checkpoint-every", "iteration:20"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_job(folders: tuple[Path, Path], *extra: str) -> list[subprocess.Popen[bytes]]:
    """The two launchers, node 0 and node 1."""
    port = free_port()
    return [
        subprocess.Popen(
            [TORCHRUN, "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
             "--master_addr", "127.0.0.1", "--master_port", str(port), EXAMPLE, "--run-dir", str(folder),
             *COMMON, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        for node, folder in enumerate(folders)
    ]


def finish(job: list[subprocess.Popen[bytes]], timeout: float = 300) -> None:
    for launcher in job:
        _, err = launcher.communicate(timeout=timeout)
        if launcher.returncode != 0:
            raise SystemExit(f"a launcher exited {launcher.returncode}:\n{err.decode()[-3000:]}")


def history(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "history.csv").drop(columns=list(TIMING_COLUMNS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="two_nodes-"))
    reference = (work / "reference-node0", work / "reference-node1")
    finish(start_job(reference))
    print(f"uninterrupted: {len(history(reference[0]))} rows", flush=True)
    mismatches = 0
    for trial in range(args.kills):
        folders = (work / f"trial{trial}-node0", work / f"trial{trial}-node1")
        job = start_job(folders)
        deadline = time.monotonic() + 120
        while not list((folders[0] / "checkpoints").glob("last_epoch=*_iteration=*.pt")):
            if time.monotonic() > deadline or any(p.poll() is not None for p in job):
                raise SystemExit(f"trial {trial}: no checkpoint within an epoch before the job ended")
            time.sleep(0.05)
        time.sleep(0.3 * trial)  # a little later each trial
        kill_trees(*(launcher.pid for launcher in job))  # both nodes lost, every process
        for launcher in job:
            launcher.wait()
        killed_at = sorted(p.name for p in (folders[0] / "checkpoints").glob("last_*.pt"))
        finish(start_job(folders, "--resume"))
        try:
            pd.testing.assert_frame_equal(history(folders[0]), history(reference[0]), check_exact=False, rtol=1e-6)
            same = "same history as the uninterrupted run"
        except AssertionError as e:
            mismatches += 1
            same = f"MISMATCH: {e}"
        on_node1 = sorted(str(p.relative_to(folders[1])) for p in folders[1].rglob("*") if p.is_file())
        print(f"trial {trial}: killed with {killed_at}, resumed: {same}; files on node 1: {on_node1 or 'none'}",
              flush=True)
        mismatches += bool(on_node1)
    print(f"\n{args.kills} kills of a two-node job, resumed with node 1's folder empty: {mismatches} mismatches")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

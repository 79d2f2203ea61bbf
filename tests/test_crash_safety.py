"""Kill the case study at named and random instants; each resume reaches the uninterrupted result."""
import json
import random
import signal
import time

import pytest
import torch

from monitor.store.layout import last_checkpoints
from tests.crash_helpers import (
    assert_same_outcome,
    case_study,
    kill_at,
    outcome,
    start_case_study,
    wait_for_rows,
)

pytestmark = pytest.mark.slow  # end to end, several seconds each: `make test-fast` leaves them out

CRASH_POINTS = [
    "after_history_row:1",  # the first row written, no checkpoint yet: the resume starts over
    "after_history_row:5",  # row written, checkpoint not yet
    "after_temp_write:12",  # a temp file complete, not yet renamed
    "after_rename:9",  # renamed, folder not yet fsynced / old files not yet removed
    "before_remove_old_best:4",  # best-k rotation: new best on disk, the old one not yet deleted
    "before_remove_old_last:6",  # the new last checkpoint on disk, the oldest not yet deleted
    "after_stop_decision",  # early stopping decided, nothing recorded yet
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    assert case_study(run_dir) == 0
    return outcome(run_dir)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_named_crash_point_then_resume_gives_the_uninterrupted_result(tmp_path, uninterrupted, point):
    run_dir = tmp_path / "run"
    assert case_study(run_dir, env={"MONITOR_CRASH_AT": point}) == -signal.SIGKILL
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert case_study(run_dir, "--resume") == 0
    assert_same_outcome(outcome(run_dir), uninterrupted)


def test_random_kills_then_resumes_give_the_uninterrupted_result(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    rng = random.Random(1234)
    for kill in range(3):
        process = start_case_study(run_dir, *(["--resume"] if kill else []))
        wait_for_rows(run_dir, rows=0)  # past start-up: training is under way
        kill_at(process, rng.uniform(0.0, 0.6))
    assert case_study(run_dir, "--resume") == 0
    assert_same_outcome(outcome(run_dir), uninterrupted)


LONG_EPOCH = ["--batch-size", "8", "--validate-every", "100", "--checkpoint-every", "iteration:50",
              "--max-epochs", "2", "--patience", "1000", "--loader-seed", "7"]


def test_random_kills_inside_long_epochs_resume_mid_epoch_to_the_uninterrupted_result(tmp_path):
    # 438 iterations per epoch, a checkpoint every 50: each kill lands inside an epoch.
    reference = tmp_path / "whole"
    started = time.monotonic()
    assert case_study(reference, *LONG_EPOCH) == 0
    duration = time.monotonic() - started
    run_dir = tmp_path / "run"
    rng = random.Random(7)
    resumed_from = []
    for kill in range(3):
        process = start_case_study(run_dir, *LONG_EPOCH, *(["--resume"] if kill else []))
        wait_for_rows(run_dir, rows=kill + 1)  # past the first validations of this attempt
        kill_at(process, rng.uniform(0.0, duration / 4))
        newest = last_checkpoints(run_dir / "checkpoints")
        resumed_from.append(int(torch.load(newest[0], weights_only=False)["trainer"]["iteration"]) if newest else 0)
    assert any(i % 438 for i in resumed_from), f"no kill landed mid-epoch: {resumed_from}"
    assert case_study(run_dir, *LONG_EPOCH, "--resume") == 0
    assert_same_outcome(outcome(run_dir), outcome(reference))


def test_sigterm_stops_cleanly_as_interrupted_and_resumes_to_the_same_result(tmp_path, uninterrupted):
    run_dir = tmp_path / "run"
    process = start_case_study(run_dir)
    wait_for_rows(run_dir, rows=3)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, process.stderr.read().decode() if process.stderr else ""
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["stop_reason"]) == ("interrupted", "interrupted")
    assert case_study(run_dir, "--resume") == 0
    assert_same_outcome(outcome(run_dir), uninterrupted)


def test_a_second_process_on_the_same_directory_fails_at_once_naming_the_holder(tmp_path):
    run_dir = tmp_path / "run"
    first = start_case_study(run_dir, "--max-epochs", "100000", "--patience", "100000")
    try:
        wait_for_rows(run_dir, rows=1)
        second = start_case_study(run_dir, "--resume")
        assert second.wait(timeout=60) != 0
        error = second.stderr.read().decode()
        assert "RunDirectoryBusy" in error and f'"pid": {first.pid}' in error
    finally:
        first.kill()
        first.wait()
    # The killed holder's lock is gone with it: its successor takes over.
    assert case_study(run_dir, "--resume", "--max-epochs", "100000", "--patience", "1") == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 1.5 MB tmpfs (where this machine lets us mount one)."""
    import subprocess

    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1536k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_really_full_disk_fails_cleanly_and_the_run_resumes_once_there_is_space(small_disk, uninterrupted):
    import subprocess

    run_dir = small_disk / "run"
    assert case_study(run_dir) not in (0, -signal.SIGKILL)  # failed with an error, not killed
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "failed"
    assert "[Errno 28] No space left on device: " in record["error"] and str(run_dir) in record["error"]
    checkpoints = run_dir / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".tmp")]
    from monitor.compose.rundir import load_checkpoint

    for path in checkpoints.glob("*.pt"):
        load_checkpoint(path)
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    assert case_study(run_dir, "--resume") == 0
    assert_same_outcome(outcome(run_dir), uninterrupted)


def test_killed_after_the_final_checkpoint_but_before_recording_the_stop(tmp_path, uninterrupted):
    # The final epoch's last checkpoint already says "stop" while run.json still says "running".
    final_epoch = uninterrupted["record"]["epochs_completed"]
    run_dir = tmp_path / "run"
    assert case_study(run_dir, env={"MONITOR_CRASH_AT": f"before_remove_old_last:{final_epoch}"}) == -signal.SIGKILL
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    assert case_study(run_dir, "--resume") == 0  # trains nothing more, records the stop
    assert_same_outcome(outcome(run_dir), uninterrupted)


def test_killed_at_max_epochs_before_recording_it_does_not_train_again(tmp_path):
    whole, run_dir = tmp_path / "whole", tmp_path / "run"
    assert case_study(whole, "--max-epochs", "4") == 0
    assert case_study(run_dir, "--max-epochs", "4", env={"MONITOR_CRASH_AT": "before_remove_old_last:4"}) == -9
    assert case_study(run_dir, "--max-epochs", "4", "--resume") == 0
    # Ignite alone would restart a run whose state is at max_epochs from epoch 0.
    assert_same_outcome(outcome(run_dir), outcome(whole))
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["stop_reason"], record["iterations_completed"]) == ("completed", "max_epochs", 220)


HOLD_AND_FORK = """
import os, signal, sys, time  # hold-and-fork-marker
from monitor.store.lock import RunLock
lock = RunLock(sys.argv[1]).acquire()
if os.fork() == 0:   # a child that outlives its parent, as a DataLoader worker (num_workers > 0) does
    time.sleep(20)
    os._exit(0)
time.sleep(0.3)
print(os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_run_whose_forked_children_live_on_frees_its_folder_at_once(tmp_path):
    # Found by the long-epoch kill test with num_workers=2: after kill -9 of the main process its
    # DataLoader workers, forked with the lock's descriptor, held the flock, and --resume failed
    # with RunDirectoryBusy until they noticed their parent was gone.
    import subprocess
    import sys

    from monitor.store.lock import RunLock

    subprocess.run([sys.executable, "-c", HOLD_AND_FORK, str(tmp_path)], timeout=30)
    children = subprocess.run(["pgrep", "-f", "hold-and-fork-marker"], capture_output=True, text=True).stdout.split()
    try:
        assert children, "the forked child should still be alive for this test to mean anything"
        RunLock(tmp_path).acquire().release()  # RunDirectoryBusy before the fix
    finally:
        for pid in children:
            subprocess.run(["kill", "-9", pid])


def test_a_crash_point_name_that_names_no_point_is_refused(monkeypatch):
    from monitor.store.faults import CRASH_ENV, crash_point

    monkeypatch.setenv(CRASH_ENV, "after_renme")  # a typo: the kill test would never kill
    with pytest.raises(ValueError, match="MONITOR_CRASH_AT='after_renme' names no crash point; use one of"):
        crash_point("after_rename")

"""Two processes on gloo (CPU): the same monitoring, one writer, the same results as one process,
no rank left hanging when another fails, and resume on two processes."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from monitor.store.layout import last_checkpoints
from tests import warm
from tests.crash_helpers import TIME_COLUMNS, trained

pytestmark = pytest.mark.slow  # end to end, several seconds each: `make test-fast` leaves them out

ROOT = Path(__file__).resolve().parents[1]
DRIVER = str(ROOT / "tests" / "distributed_driver.py")
COMMON = ["--no-progress", "--no-shuffle", "--patience", "3", "--seed", "0"]


def train(run_dir, nproc, *extra, timeout=240):
    args = [sys.executable, DRIVER, "train", "--nproc", str(nproc), "--run-dir", str(run_dir), *COMMON, *extra]
    return warm.run(args, timeout=timeout)


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns=TIME_COLUMNS)


# The failures below come at iteration 150 (epoch 3 of 55 steps) of runs of 5 epochs: the first 5 rows of
# the uninterrupted 2-process run are what they should end with.
FIRST = ["--max-epochs", "5"]


def assert_as_uninterrupted(run_dir, two):
    expected = history(two)[:5]
    pd.testing.assert_frame_equal(history(run_dir), expected, check_exact=False, rtol=1e-6)
    best = int(expected.loc[expected["val_loss"].idxmin(), "epoch"])
    assert json.loads((run_dir / "run.json").read_text())["best"]["epoch"] == best


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    single, double = train(root / "one", 1), train(root / "two", 2)
    assert single.returncode == 0, single.stderr[-3000:]
    assert double.returncode == 0, double.stderr[-3000:]
    return root / "one", root / "two", double


def test_two_processes_give_the_one_process_history(one_and_two):
    one, two, _ = one_and_two
    h1, h2 = history(one), history(two)
    assert h2["epoch"].tolist() == h1["epoch"].tolist()  # both stopped at the same epoch
    # The highest step loss of two processes is that of a rank's half batch: at least the whole batch's.
    spike1, spike2 = h1.pop("train_loss_spike"), h2.pop("train_loss_spike")
    assert (spike2 >= spike1 * (1 - 1e-4)).all() and (spike2 < 2 * spike1).all()
    pd.testing.assert_frame_equal(h2, h1, check_exact=False, rtol=1e-4)
    r1, r2 = (json.loads((p / "run.json").read_text()) for p in (one, two))
    assert (r2["status"], r2["stop_reason"], r2["best"]["epoch"]) == (r1["status"], r1["stop_reason"], r1["best"]["epoch"])
    assert r2["hparams"]["processes"] == 2


def test_only_rank_0_writes_and_talks(one_and_two):
    _, two, process = one_and_two
    assert len(list((two / "tb").glob("*tfevents*"))) == 1
    assert history(two)["epoch"].is_unique
    assert sorted(p.name for p in two.iterdir()) == [".lock", "checkpoints", "history.csv", "run.json", "tb"]
    lines = [line for line in process.stderr.splitlines() if line.startswith("[1]")]
    assert lines == []  # rank 1 logged nothing (no warnings happened)
    assert process.stdout.count("Run written to") == 1


def test_validation_on_a_size_the_world_does_not_divide_gives_one_process_metrics_unpadded_only(tmp_path):
    results = []
    for nproc in (1, 2):
        out = tmp_path / f"{nproc}.json"
        args = [sys.executable, DRIVER, "validate", "--size", "97", "--out", str(out), "--nproc", str(nproc)]
        done = warm.run(args, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(json.loads(out.read_text()))
    one, two = results
    assert two["unpadded"] == pytest.approx(one["unpadded"], rel=1e-12)
    # DistributedSampler (auto_dataloader's default) repeats a sample to pad 97 to 98: the metrics move
    assert two["padded"] != pytest.approx(one["padded"], rel=1e-12)


@pytest.mark.parametrize("kind", ["raise", "kill"])
def test_a_failing_rank_fails_the_run_in_bounded_time_and_it_resumes_mid_epoch_on_two_processes(
        tmp_path, one_and_two, kind):
    _, two, _ = one_and_two
    run_dir = tmp_path / "run"
    every = [*FIRST, "--checkpoint-every", "iteration:37"]
    failed = train(run_dir, 2, *every, "--fail-rank", "1", "--fail-at", "150", "--fail-kind", kind, timeout=120)
    assert failed.returncode != 0
    if kind == "raise":
        assert "rank 1 failed at iteration 150" in failed.stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] in ("failed", "interrupted", "running")  # running: rank 0 was killed mid-write
    assert "last_epoch=3_iteration=148.pt" in {p.name for p in (run_dir / "checkpoints").glob("last_*.pt")}
    resumed = train(run_dir, 2, *every, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming" in resumed.stderr and "last_epoch=3_iteration=148.pt" in resumed.stderr
    assert_as_uninterrupted(run_dir, two)


def test_ranks_leave_only_once_gloo_has_let_go_of_their_tensors(tmp_path):
    # gloo drops a collective's tensors on a worker thread after the call returns; one still held
    # when the interpreter shuts down aborts the process (SIGABRT at exit, 1 run in 10 before).
    out = tmp_path / "alive"
    done = warm.run([sys.executable, DRIVER, "leave", "--out", str(out)], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [int(out.with_suffix(f".{rank}").read_text()) for rank in (0, 1)] == [0, 0]


def final_iterations(report_dir):
    return [int((report_dir / f"rank{rank}.iteration").read_text()) for rank in (0, 1)]


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_iteration_and_resumes_from_rank_0s_disk_only(
        tmp_path, one_and_two):
    # Node-local disks (issue #21): rank 1 sees an empty folder of its own; rank 0 alone reads the
    # checkpoint, and its bytes reach rank 1 through idist.broadcast.
    _, two, _ = one_and_two
    run_dir, report = tmp_path / "run", tmp_path / "report"
    report.mkdir()
    stopped = train(run_dir, 2, *FIRST, "--local-disks", "--signal-rank", "1", "--signal-at", "150",
                    "--report-dir", str(report), timeout=120)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    first, second = final_iterations(report)
    assert first == second and 150 <= first <= 160  # agreed within log_every (10) iterations
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["stop_reason"]) == ("interrupted", "interrupted")
    resumed = train(run_dir, 2, *FIRST, "--local-disks", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"last_epoch=3_iteration={first}.pt" in resumed.stderr  # the signal's checkpoint, mid-epoch
    assert not list((tmp_path / "run-rank1").rglob("*.pt"))  # rank 1 wrote and read nothing there
    assert_as_uninterrupted(run_dir, two)


def test_killing_the_launcher_stops_every_rank_promptly_and_frees_the_run(tmp_path):
    run_dir, report = tmp_path / "run", tmp_path / "report"
    report.mkdir()
    args = [sys.executable, DRIVER, "train", "--nproc", "2", "--run-dir", str(run_dir), *COMMON,
            "--patience", "1000", "--report-dir", str(report), "--start-method", "spawn"]  # as users start them
    launcher = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run_dir / "history.csv").exists() or (run_dir / "history.csv").read_text().count("\n") < 3:
        assert time.monotonic() < deadline and launcher.poll() is None, "training never got going"
        time.sleep(0.1)
    pids = [int((report / f"rank{rank}.pid").read_text()) for rank in (0, 1)]
    launcher.kill()  # torch's spawn sends each rank SIGINT when its parent dies
    launcher.wait()
    deadline = time.monotonic() + 60
    while any(os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2] for pid in pids):
        assert time.monotonic() < deadline, "a rank was still running 60 s after its launcher was killed"
        time.sleep(0.2)
    first, second = final_iterations(report)
    assert first == second
    record = json.loads((run_dir / "run.json").read_text())
    assert (record["status"], record["stop_reason"]) == ("interrupted", "interrupted")
    assert (run_dir / ".lock").read_text() == ""  # released: a --resume may start at once


def test_a_resume_on_three_processes_with_the_same_global_batch_trains_every_sample_of_the_epoch_once(tmp_path):
    # Issue #21: 2 processes x 24, stopped by SIGTERM at iteration 100 (epoch 2, 27 of 73 steps done),
    # resumed on 3 x 16: 48 a step both times. The samples trained, counted by index over both segments.
    run_dir, first, second = tmp_path / "run", tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    common = ["--no-progress", "--seed", "0", "--max-epochs", "3", "--patience", "50", "--batch-size", "48"]
    args = [sys.executable, DRIVER, "train", "--run-dir", str(run_dir), *common]
    stopped = warm.run([*args, "--nproc", "2", "--signal-rank", "1", "--signal-at", "100",
                        "--record-trained", str(first)], timeout=240)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "interrupted"
    assert last_checkpoints(run_dir / "checkpoints")[0].name == "last_epoch=2_iteration=100.pt"  # the newest: the signal's
    resumed = warm.run([*args, "--nproc", "3", "--resume", "--record-trained", str(second)], timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the data laid out anew: 2 processes x 24 a step (48 in all, 73 steps an epoch) -> 3 processes x 16" \
        in resumed.stderr and "epoch 2 continues with exactly the samples not yet trained" in resumed.stderr
    epoch_2 = trained(first, 2, upto=100) + trained(second, 2)
    padding = 3 * 1167 - 3500  # DistributedSampler pads 3 processes' shares with the order's first samples
    assert set(epoch_2) == set(range(3500)) and sum(epoch_2.values()) == 3500 + padding
    assert sorted(epoch_2.values()).count(2) == padding
    epoch_3 = trained(second, 3)
    assert set(epoch_3) == set(range(3500)) and sum(epoch_3.values()) == 3500 + padding


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_a_resume_to_or_from_one_process_with_the_same_global_batch_trains_every_sample_once(tmp_path, before, after):
    # Issue #29: one process draws its order with a RandomSampler, several with DistributedSamplers: the
    # steps done could not be skipped as steps (a third of the rest was trained twice, as many never).
    run_dir, first, second = tmp_path / "run", tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    common = ["--no-progress", "--seed", "0", "--max-epochs", "3", "--patience", "50", "--batch-size", "48"]
    args = [sys.executable, DRIVER, "train", "--run-dir", str(run_dir), *common]
    stopped = warm.run([*args, "--nproc", str(before), "--signal-rank", "0", "--signal-at", "100",
                        "--record-trained", str(first)], timeout=240)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert last_checkpoints(run_dir / "checkpoints")[0].name == "last_epoch=2_iteration=100.pt"
    resumed = warm.run([*args, "--nproc", str(after), "--resume", "--record-trained", str(second)], timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "are trained once each" in resumed.stderr and "exactly" not in resumed.stderr
    for epoch, counts in ((2, trained(first, 2, upto=100) + trained(second, 2)), (3, trained(second, 3))):
        assert set(counts) == set(range(3500)) and sum(counts.values()) == 3500, f"epoch {epoch}"


@pytest.mark.parametrize(("before", "after", "workers"), [(2, 3, 0)])
def test_a_resume_on_another_number_of_processes_and_global_batch_trains_each_sample_of_the_epoch_once(
        tmp_path, before, after, workers):
    # Issue #21: idist.auto_dataloader(batch_size=64) gives 2 x 32 or 3 x 21 (63). Stopped by SIGTERM at
    # iteration 20 of epoch 1, resumed on 3 processes. Before, over the interrupted epoch some samples
    # were trained twice and some never, silently. 3 -> 2, DataLoader workers (spawned processes: 30 s
    # more here) and kills at random instants: scripts/resize_kill_test.py --processes 2,3 --workers 4.
    run_dir, first, second = tmp_path / "run", tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    common = ["--no-progress", "--seed", "0", "--max-epochs", "2", "--patience", "50", "--batch-size", "64",
              "--workers", str(workers)]
    args = [sys.executable, DRIVER, "train", "--run-dir", str(run_dir), *common]
    stopped = warm.run([*args, "--nproc", str(before), "--signal-rank", "1", "--signal-at", "20",
                        "--record-trained", str(first)], timeout=240)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert last_checkpoints(run_dir / "checkpoints")[0].name == "last_epoch=1_iteration=20.pt"  # the newest: the signal's
    resumed = warm.run([*args, "--nproc", str(after), "--resume", "--record-trained", str(second)], timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    done = 20 * before * (64 // before)
    steps = -(-(3500 - done) // after // (64 // after))
    assert (f"Epoch 1 was {done} samples in (20 steps): its {3500 - done} samples not yet trained are trained "
            f"once each, in {steps} steps of the new layout") in resumed.stderr
    epoch_1 = trained(first, 1, upto=20) + trained(second, 1)
    assert set(epoch_1) == set(range(3500)) and set(epoch_1.values()) == {1}
    epoch_2 = trained(second, 2)
    padding = -3500 % after  # DistributedSampler pads the processes' shares with the order's first samples
    assert set(epoch_2) == set(range(3500)) and sum(epoch_2.values()) == 3500 + padding
    iterations = pd.read_csv(run_dir / "history.csv")["iteration"].tolist()
    assert iterations == [20 + steps, 20 + steps + -(-3500 // after // (64 // after))]
    segment = json.loads((run_dir / "run.json").read_text())["segments"][-1]
    assert segment["layout_change"]["from"]["processes"] == before and segment["layout_change"]["exact"]


def train_with_report(tmp_path, *extra):
    """Two processes of the example with ``extra``; (the process, run.json, each rank's final
    [weights sum, rates]) once it succeeded."""
    report = tmp_path / "report"
    report.mkdir()
    done = train(tmp_path / "run", 2, *extra, "--report-dir", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    weights = [json.loads((report / f"rank{r}.weights").read_text()) for r in (0, 1)]
    return done, json.loads((tmp_path / "run" / "run.json").read_text()), weights


def test_a_nan_on_one_rank_rolls_every_rank_back_at_the_same_iteration(tmp_path):
    done, record, (w0, w1) = train_with_report(tmp_path, "--recovery", "--nan-rank", "1", "--nan-at", "30",
                                               "--max-epochs", "4")
    assert record["status"] == "completed" and record["stop_reason"] == "max_epochs"
    [entry] = record["recoveries"]
    assert entry["iteration"] == 30 and entry["reason"] == "nonfinite_loss"
    assert entry["changes"]["lr"] == [[0.01], [0.005]]
    # every rank restored the same state and cut the same rates: their weights are the same at the end
    assert w0[1] == w1[1] == [0.005] and w0[0] == pytest.approx(w1[0], rel=1e-9, abs=1e-9)
    assert "[0] Recovery: nonfinite loss at iteration 30" in done.stderr


def test_skip_step_leaves_out_a_nan_batch_of_one_rank_on_every_rank(tmp_path):
    _, record, (w0, w1) = train_with_report(tmp_path, "--skip-step", "--nan-batch-rank", "1", "--nan-at", "30",
                                            "--max-epochs", "3")
    assert record["status"] == "completed"
    rows = pd.read_csv(tmp_path / "run" / "history.csv")
    assert rows["train_skipped"].tolist() == [1 / 55, 0.0, 0.0]  # one of epoch 1's 55 steps, left out by both
    assert rows["train_loss"].notna().all()
    assert w0[0] == pytest.approx(w1[0], rel=1e-9) and w0[0] == w0[0]  # the same finite weights on both ranks

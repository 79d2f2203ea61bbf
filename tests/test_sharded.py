"""A model sharded with FSDP2 under monitor, on CPU with gloo (examples/distributed.py --fsdp): it trains
as the unsharded model does, ends with its best weights, resumes exactly mid-epoch on the same number of
processes and with each sample once on another; its checkpoints, last and best, are folders of each rank's
shards that a kill leaves whole, and its best, exported, loads into an unsharded model."""
import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from monitor.review import export_best, load_run
from monitor.store.layout import last_checkpoints
from tests import warm
from tests.crash_helpers import trained

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from binary_classification import make_data, make_model  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
DRIVER = str(ROOT / "tests" / "distributed_driver.py")
# --batch-size 48: the same global batch on 1, 2 and 3 processes (73 steps an epoch)
COMMON = ["--no-progress", "--no-shuffle", "--seed", "0", "--max-epochs", "3", "--patience", "50", "--batch-size", "48"]
COLUMNS = ["epoch", "iteration", "train_loss", "val_loss", "val_accuracy", "lr"]


def train(run_dir, nproc, *extra, env=None):
    args = [sys.executable, DRIVER, "train", "--nproc", str(nproc), "--run-dir", str(run_dir), *COMMON, *extra]
    return warm.run(args, timeout=240, env=env)


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv")[COLUMNS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An FSDP2 run on 2 processes stopped by SIGTERM at iteration 100 (epoch 2); the unsharded model on
    1 process to the end (the same batches: the uninterrupted run's history, as the DDP tests show)."""
    root = tmp_path_factory.mktemp("sharded")
    (root / "first").mkdir()
    stopped = train(root / "stopped", 2, "--fsdp", "--signal-rank", "1", "--signal-at", "100",
                    "--record-trained", str(root / "first"))
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert last_checkpoints(root / "stopped" / "checkpoints")[0].name == "last_epoch=2_iteration=100.pt"
    plain = train(root / "plain", 1)
    assert plain.returncode == 0, plain.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def resumed(runs, tmp_path_factory):
    """The stopped FSDP2 run resumed on 2 processes."""
    folder = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(runs / "stopped", folder)
    done = train(folder, 2, "--fsdp", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def test_an_fsdp2_run_stopped_mid_epoch_resumes_on_two_processes_as_the_unsharded_model_trains(runs, resumed):
    pd.testing.assert_frame_equal(history(resumed), history(runs / "plain"), check_exact=False, rtol=1e-4)
    record = load_run(resumed).record
    assert record["status"] == "completed" and record["hparams"]["sharded"] == "fsdp2"
    assert len(record["segments"]) == 2 and record["segments"][-1]["from_epoch"] == 1  # resumed within epoch 2


def test_the_best_of_an_fsdp2_run_loads_into_an_unsharded_model_and_gives_the_runs_best_value(resumed, tmp_path):
    run = load_run(resumed)
    model = make_model()
    model.load_state_dict(torch.load(export_best(run, tmp_path / "best.pt"), weights_only=True))
    assert validation_loss(model) == pytest.approx(run.best["value"], rel=1e-5)


def test_a_damaged_shard_of_the_best_is_refused_by_export_naming_it_and_nothing_is_written(resumed, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(resumed, folder)
    shard = load_run(folder).best["checkpoint"].with_suffix(".shards") / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"shards are damaged: .*__1_0.distcp' does not match its size and CRC-32"):
        export_best(folder, tmp_path / "best.pt")
    assert not (tmp_path / "best.pt").exists()


def validation_loss(model):
    x, y = make_data(0)[1][:]
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


def test_an_fsdp2_run_that_goes_nan_ends_with_the_best_weights_read_back_from_the_best_checkpoints_shards(tmp_path):
    # A NaN batch on rank 1 in epoch 2 (no Recovery): the weights go NaN, the NaN loss stops the run
    done = train(tmp_path / "run", 2, "--fsdp", "--nan-batch-rank", "1", "--nan-at", "100",
                 "--final-weights", str(tmp_path / "final.pt"))
    assert done.returncode == 0, done.stderr[-3000:]
    run = load_run(tmp_path / "run")
    assert run.best["epoch"] == 1 and run.best["checkpoint"].with_suffix(".shards").is_dir()
    assert run.stop_reason == "nonfinite_loss"  # stopped in epoch 2, its weights NaN
    model = make_model()
    with torch.no_grad():
        for param, final in zip(model.parameters(), torch.load(tmp_path / "final.pt", weights_only=True), strict=True):
            param.copy_(final)
    assert validation_loss(model) == pytest.approx(run.best["value"], rel=1e-5)


@pytest.mark.parametrize(("nproc", "said"), [
    (1, "are trained once each"),  # one process draws its own order: the rest of the epoch is dealt anew
    (3, "epoch 2 continues with exactly the samples not yet trained"),  # DistributedSamplers alike: steps skipped
])
def test_an_fsdp2_run_resumes_on_another_number_of_processes_training_each_sample_once(runs, tmp_path, nproc, said):
    folder, second = tmp_path / "run", tmp_path / "second"
    shutil.copytree(runs / "stopped", folder)
    second.mkdir()
    # to the end of the interrupted epoch (the whole epochs after it: the DDP tests)
    resumed = train(folder, nproc, "--fsdp", "--resume", "--record-trained", str(second), "--max-epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert said in resumed.stderr
    padding = -3500 % nproc  # DistributedSampler pads the processes' shares with the order's first samples
    counts = trained(runs / "first", 2, upto=100) + trained(second, 2)
    assert set(counts) == set(range(3500)) and sum(counts.values()) == 3500 + padding
    assert history(folder)["epoch"].tolist() == [1, 2]


def test_recovery_rolls_an_fsdp2_run_back_as_the_unsharded_model_and_resumes_without_the_copies_it_could_not_keep(
        tmp_path):
    # A NaN batch on rank 1 at iteration 30 makes every shard's gradient NaN (FSDP2 averages them): the
    # weights are NaN on both ranks until Recovery gives each its shards of the copy at iteration 20 back.
    nan = ["--recovery", "--keep-every", "10", "--nan-at", "30"]
    plain = train(tmp_path / "plain", 1, *nan, "--nan-batch-rank", "0")
    sharded = train(tmp_path / "sharded", 2, "--fsdp", *nan, "--nan-batch-rank", "1")
    # asked to stop at 45, stopped where every rank agrees, at 50 (a good copy there, the checkpoint's own
    # state, and the run's start's, which the checkpoint cannot keep), and resumed
    stopped = train(tmp_path / "resumed", 2, "--fsdp", *nan, "--nan-batch-rank", "1", "--signal-rank", "1",
                    "--signal-at", "45")
    for done in (plain, sharded, stopped):
        assert done.returncode == 0, done.stderr[-3000:]
    assert last_checkpoints(tmp_path / "resumed" / "checkpoints")[0].name == "last_epoch=1_iteration=50.pt"
    resumed = train(tmp_path / "resumed", 2, "--fsdp", *nan, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Recovery: the good copy of iteration 0 was each rank's shards" in resumed.stderr
    assert "copies taken from here on (the first: this resumed state)" in resumed.stderr  # the copy at 50, taken anew
    for folder in ("sharded", "resumed"):
        record = load_run(tmp_path / folder).record
        assert record["status"] == "completed", folder
        [entry] = record["recoveries"]
        assert (entry["iteration"], entry["reason"], entry["rolled_back_to"]) == (30, "nonfinite_loss", 20)
        assert entry["changes"]["lr"] == [[0.01], [0.005]]
        pd.testing.assert_frame_equal(history(tmp_path / folder), history(tmp_path / "plain"), check_exact=False,
                                      rtol=1e-4)
    assert history(tmp_path / "plain")["train_loss"].notna().all()


def test_the_last_and_best_checkpoints_keep_each_ranks_shards_in_a_folder_with_a_manifest_and_no_tensors(runs):
    checkpoints = runs / "stopped" / "checkpoints"
    last = last_checkpoints(checkpoints)
    assert [p.name for p in last] == ["last_epoch=2_iteration=100.pt", "last_epoch=1.pt"]
    [best] = checkpoints.glob("best_*.pt")  # the best of epoch 1, written with the last checkpoint after it
    assert best.name.startswith("best_epoch=1_val_loss=")
    for path in [*last, best]:  # each .pt refers to its folder: every rank's shard file, the metadata, checksummed
        state = torch.load(path, weights_only=False)
        if path is best:
            assert state == {"shards": path.stem + ".shards", "key": "model"}
        else:
            assert state["model"] == {"shards": path.stem + ".shards", "key": "model"}
            assert state["optimizer"] == {"shards": path.stem + ".shards", "key": "optimizer"}
        manifest = json.loads((checkpoints / (path.stem + ".shards") / "manifest.json").read_text())
        assert sorted(manifest) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert sorted(p.name for p in checkpoints.glob("*.shards")) == sorted(p.stem + ".shards" for p in [*last, best])


def test_a_damaged_shard_falls_back_to_the_checkpoint_before_and_a_folder_no_checkpoint_names_goes(runs, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(runs / "stopped", folder)
    checkpoints = folder / "checkpoints"
    shard = checkpoints / "last_epoch=2_iteration=100.shards" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    shutil.copytree(checkpoints / "last_epoch=1.shards", checkpoints / "last_epoch=2_iteration=150.shards")  # orphan
    done = train(folder, 2, "--fsdp", "--resume", "--max-epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "__1_0.distcp' does not match its size and CRC-32" in done.stderr
    assert f"Resuming {folder} from last_epoch=1.pt" in done.stderr
    pd.testing.assert_frame_equal(history(folder), history(runs / "plain")[:2], check_exact=False, rtol=1e-4)
    assert (checkpoints / "last_epoch=2_iteration=100.pt.damaged").exists()
    assert not (checkpoints / "last_epoch=2_iteration=150.shards").exists()
    assert {p.stem for p in checkpoints.glob("*.shards")} == {p.stem for p in checkpoints.glob("*.pt")} | {
        "last_epoch=2_iteration=100"}  # the damaged one's folder, kept with its file for inspection


def test_full_state_last_checkpoints_write_no_folder_and_resume_in_the_default_mode(runs, tmp_path):
    folder = tmp_path / "run"
    stopped = train(folder, 2, "--fsdp", "--shards", "full", "--signal-rank", "1", "--signal-at", "100")
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert not list((folder / "checkpoints").glob("*.shards"))
    done = train(folder, 2, "--fsdp", "--resume", "--max-epochs", "2")  # shards="dcp": the full state into shards
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(history(folder), history(runs / "plain")[:2], check_exact=False, rtol=1e-4)
    newest = last_checkpoints(folder / "checkpoints")[0]
    assert newest.with_suffix(".shards").is_dir()  # written by the resumed run in the default mode


def test_a_kill_while_shards_are_written_behind_training_keeps_the_checkpoint_before_and_resumes_from_it(runs, tmp_path):
    # Every process killed once the second save's shards are on disk, before its folder is committed:
    # that save's .pt was never written (it waits for the commit), the first checkpoint is whole.
    folder = tmp_path / "run"
    killed = train(folder, 2, "--fsdp", "--max-epochs", "2", env={**os.environ, "MONITOR_CRASH_AT": "before_shards_commit:2"})
    assert killed.returncode != 0
    checkpoints = folder / "checkpoints"
    assert [p.name for p in last_checkpoints(checkpoints)] == ["last_epoch=1.pt"]
    assert sorted(p.name for p in checkpoints.glob("*last_*.shards")) == [".tmp-last_epoch=2.shards",
                                                                           "last_epoch=1.shards"]
    done = train(folder, 2, "--fsdp", "--resume", "--max-epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Resuming {folder} from last_epoch=1.pt" in done.stderr
    pd.testing.assert_frame_equal(history(folder), history(runs / "plain")[:2], check_exact=False, rtol=1e-4)
    assert not list(checkpoints.glob(".tmp-*"))  # the unfinished save's folder, removed at the resume
    assert {p.stem for p in checkpoints.glob("*.shards")} == {p.stem for p in checkpoints.glob("*.pt")}


def test_a_kill_while_a_best_checkpoints_shards_are_written_loses_no_best_file_and_resumes_to_the_same_bests(
        runs, tmp_path):
    # Every process killed once the second best's shards are on disk, before its folder is committed (at the
    # last checkpoint after epoch 2's validation): the best of epoch 1 stays whole, no file names the new one.
    folder = tmp_path / "run"
    killed = train(folder, 2, "--fsdp", "--max-epochs", "2",
                   env={**os.environ, "MONITOR_CRASH_AT": "before_best_shards_commit:2"})
    assert killed.returncode != 0
    checkpoints = folder / "checkpoints"
    [first] = checkpoints.glob("best_*.pt")
    assert first.name.startswith("best_epoch=1_") and first.with_suffix(".shards").is_dir()
    assert [p.name.split("_val")[0] for p in checkpoints.glob(".tmp-best_*")] == [".tmp-best_epoch=2"]
    done = train(folder, 2, "--fsdp", "--resume", "--max-epochs", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(history(folder), history(runs / "plain")[:2], check_exact=False, rtol=1e-4)
    assert not list(checkpoints.glob(".tmp-*"))
    assert sorted(p.name.split("_val")[0] for p in checkpoints.glob("best_*.shards")) == ["best_epoch=1", "best_epoch=2"]
    assert {p.stem for p in checkpoints.glob("*.shards")} == {p.stem for p in checkpoints.glob("*.pt")}


def test_a_failure_before_a_held_best_is_written_drops_its_shards_and_names_no_file_that_is_not_there(tmp_path):
    # No last checkpoint before iteration 1000: epoch 1's best is held when rank 0 fails at iteration 100,
    # and rank 1 cannot be known to be there to write its shards with rank 0.
    folder = tmp_path / "run"
    failed = train(folder, 2, "--fsdp", "--checkpoint-every", "iteration:1000", "--fail-rank", "0", "--fail-at", "100")
    assert failed.returncode != 0 and "rank 0 failed at iteration 100" in failed.stderr
    assert "best checkpoint(s) ['best_epoch=1_val_loss=" in failed.stderr and "were not written" in failed.stderr
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and record["best"]["checkpoint"] is None
    assert not list((folder / "checkpoints").glob("best_*"))


def test_a_run_folder_some_ranks_cannot_see_is_refused_for_shards_naming_them_and_the_way_out(tmp_path):
    # Node-local disks (the driver's --local-disks: rank 1 sees an empty folder of its own): the shards
    # of a DCP folder would be scattered over disks no one rank reads whole.
    done = train(tmp_path / "run", 2, "--fsdp", "--local-disks", "--max-epochs", "1")
    assert done.returncode != 0
    assert "rank(s) [1] do not see" in done.stderr and "Checkpoints(shards='full')" in done.stderr
    assert not list(tmp_path.rglob("*.distcp")) and not list(tmp_path.rglob("*.pt"))  # nothing trained or saved

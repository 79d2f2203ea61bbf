"""The run-directory layout: names, and a filename parser that agrees with what Ignite's Checkpoint writes."""
import torch
from ignite.handlers import Checkpoint
from torch import nn

from monitor.handlers.checkpoint import DurableDiskSaver
from monitor.store.layout import (
    BEST_PATTERN,
    LAST_PATTERN,
    CheckpointName,
    RunPaths,
    checkpoint_files,
    last_checkpoints,
    parse_checkpoint_name,
)
from tests.conftest import stub_engine


def test_names_written_by_ignite_checkpoint_parse_back(tmp_path):
    engine = stub_engine()
    model = nn.Linear(1, 1)
    best = Checkpoint({"model": model}, DurableDiskSaver(tmp_path), filename_prefix="best", n_saved=5,
                      score_function=lambda _: -0.123456, score_name="neg_val_loss",
                      global_step_transform=lambda *_: 7, filename_pattern=BEST_PATTERN)
    last = Checkpoint({"model": model}, DurableDiskSaver(tmp_path), filename_prefix="last", n_saved=2,
                      global_step_transform=lambda *_: 7, filename_pattern=LAST_PATTERN)
    best(engine), last(engine)
    names = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert [parse_checkpoint_name(n) for n in names] == [
        CheckpointName("best", 7, "neg_val_loss", -0.1235),
        CheckpointName("last", 7),
    ]


def test_other_names_are_not_checkpoints():
    for name in ("manifest.json", "last_epoch=3.pt.damaged", ".tmp-last_epoch=3.pt.ab12", "last_epoch=x.pt",
                 "best_epoch=2_neg_val_loss=nan-ish.pt", "model_3.pt"):
        assert parse_checkpoint_name(name) is None, name


def test_last_checkpoints_newest_first_and_files_by_kind(tmp_path):
    for name in ("last_epoch=9.pt", "last_epoch=10.pt", "best_epoch=9_val_accuracy=0.9000.pt", "last_epoch=8.pt.damaged"):
        torch.save({}, tmp_path / name)
    assert [p.name for p in last_checkpoints(tmp_path)] == ["last_epoch=10.pt", "last_epoch=9.pt"]
    assert [p.name for p in checkpoint_files(tmp_path, "best")] == ["best_epoch=9_val_accuracy=0.9000.pt"]
    assert last_checkpoints(tmp_path / "missing") == []


def test_run_paths_name_every_part(tmp_path):
    paths = RunPaths(tmp_path)
    assert (paths.record.name, paths.history.name, paths.checkpoints.name, paths.tensorboard.name, paths.lock.name) \
        == ("run.json", "history.csv", "checkpoints", "tb", ".lock")
    assert paths.manifest == tmp_path / "checkpoints" / "manifest.json"
    assert not paths.holds_a_run()

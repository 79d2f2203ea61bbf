"""Disk full and unreadable checkpoints: a clear error, nothing written is lost, and resume recovers."""
import errno
import logging
import os
import random

import pandas as pd
import pytest
import torch

import monitor
from monitor import CheckpointError
from monitor.compose.rundir import load_checkpoint
from tests.runs import final_state, start


class DiskFull:
    """Make os.fsync fail with ENOSPC on files whose path contains ``part``, from the n-th such call."""

    def __init__(self, monkeypatch, part, nth=1):
        self.part, self.nth, self.calls = part, nth, 0
        self._fsync = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if self.part in os.path.basename(path):
            self.calls += 1
            if self.calls >= self.nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        return self._fsync(fd)


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    _, s = start(run_dir)
    return final_state(run_dir, s)


@pytest.mark.parametrize(
    "part, nth, names",
    [
        ("last_epoch=", 3, "last_epoch=3.pt"),  # the temp file of a last checkpoint
        ("best_epoch=", 2, "best_epoch="),  # the temp file of a best checkpoint
        ("history.csv", 4, "history.csv"),  # the rows' fsync before a last checkpoint
        ("manifest.json", 5, "manifest.json"),
        ("run.json", 3, "run.json"),
    ],
)
def test_disk_full_gives_a_clear_error_keeps_the_previous_files_and_resume_recovers(
    tmp_path, monkeypatch, whole, part, nth, names
):
    disk = DiskFull(monkeypatch, part, nth)
    with pytest.raises(OSError, match=rf"No space left on device: '.*{names}"):
        start(tmp_path, crash_at_iteration=None)
    monkeypatch.setattr(os, "fsync", disk._fsync)  # space is back

    checkpoints = tmp_path / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.startswith(".tmp")]
    for path in checkpoints.glob("*.pt"):
        load_checkpoint(path)  # every checkpoint on disk is whole and matches the manifest
    assert (tmp_path / "history.csv").exists()

    _, s = start(tmp_path, resume=True)
    history, record, weights = final_state(tmp_path, s)
    pd.testing.assert_frame_equal(history, whole[0])
    assert record["best"] == whole[1]["best"]
    assert all(torch.equal(weights[k], whole[2][k]) for k in weights)


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "flipped_byte", "wrong_keys"])
def test_a_damaged_last_checkpoint_falls_back_to_the_previous_one(tmp_path, whole, caplog, damage):
    start(tmp_path, crash_at_iteration=23)  # last checkpoints of epochs 4 and 5 on disk
    newest = tmp_path / "checkpoints" / "last_epoch=5.pt"
    data = newest.read_bytes()
    if damage == "empty":
        newest.write_bytes(b"")
    elif damage == "truncated":
        newest.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        newest.write_bytes(random.Random(0).randbytes(len(data)))
    elif damage == "flipped_byte":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01  # torch.load would still load this, as wrong weights
        newest.write_bytes(bytes(flipped))
    else:
        torch.save({"model": {}}, newest)
        monitor.store.manifest.Manifest(newest.parent).forget([newest.name])  # whole, but not a resume checkpoint

    with caplog.at_level(logging.WARNING, logger="monitor"):
        _, s = start(tmp_path, resume=True)
    assert f"'{newest}'" in caplog.text and "Falling back to the previous checkpoint" in caplog.text
    assert (tmp_path / "checkpoints" / "last_epoch=5.pt.damaged").exists()  # kept for inspection
    history, record, weights = final_state(tmp_path, s)
    pd.testing.assert_frame_equal(history, whole[0])
    assert all(torch.equal(weights[k], whole[2][k]) for k in weights)


def test_when_no_last_checkpoint_is_usable_resume_refuses_listing_each(tmp_path):
    start(tmp_path, crash_at_iteration=23)
    for path in (tmp_path / "checkpoints").glob("last_*.pt"):
        path.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"No usable last checkpoint .*last_epoch=5.pt.*last_epoch=4.pt"):
        start(tmp_path, resume=True)


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"PK\x03\x04 not really a zip"])
def test_loading_a_broken_checkpoint_raises_one_error_type_naming_the_path(tmp_path, content):
    path = tmp_path / "best_epoch=1_neg_val_loss=-0.5.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"Checkpoint '{path}' cannot be loaded"):
        load_checkpoint(path)

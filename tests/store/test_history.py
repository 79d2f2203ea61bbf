import math

import pandas as pd
import pytest

from monitor.store import History


def test_rows_round_trip_through_pandas(tmp_path):
    history = History(tmp_path / "history.csv")
    history.append({"epoch": 1, "iteration": 10, "val_loss": 0.5, "is_best": True})
    history.append({"epoch": 2, "iteration": 20, "val_loss": 0.6, "is_best": False})
    df = pd.read_csv(tmp_path / "history.csv")
    assert list(df.columns) == ["epoch", "iteration", "val_loss", "is_best"]
    assert df["epoch"].tolist() == [1, 2]
    assert df["val_loss"].tolist() == [0.5, 0.6]
    assert df["is_best"].tolist() == [True, False]


def test_a_column_appearing_later_is_kept_with_empty_cells_before(tmp_path):
    history = History(tmp_path / "history.csv")
    history.append({"epoch": 1, "iteration": 10, "val_loss": 0.5})
    history.append({"epoch": 2, "iteration": 20, "val_loss": 0.4, "val_f1": 0.7})
    df = pd.read_csv(tmp_path / "history.csv")
    assert list(df.columns) == ["epoch", "iteration", "val_loss", "val_f1"]
    assert math.isnan(df["val_f1"][0]) and df["val_f1"][1] == 0.7


def test_floats_are_written_exactly_and_nan_survives(tmp_path):
    history = History(tmp_path / "history.csv")
    history.append({"epoch": 1, "iteration": 1, "val_loss": 0.1 + 0.2, "train_loss": math.nan})
    row = History(tmp_path / "history.csv").read_rows()[0]
    assert row["val_loss"] == 0.1 + 0.2
    assert math.isnan(row["train_loss"])


def test_appends_do_not_rewrite_the_file(tmp_path):
    path = tmp_path / "history.csv"
    history = History(path)
    history.append({"epoch": 1, "iteration": 1, "val_loss": 0.5})
    inode = path.stat().st_ino
    history.append({"epoch": 2, "iteration": 2, "val_loss": 0.4})
    assert path.stat().st_ino == inode  # appended in place, not replaced


def test_truncate_drops_rows_after_the_resume_epoch(tmp_path):
    history = History(tmp_path / "history.csv")
    for epoch in range(1, 6):
        history.append({"epoch": epoch, "iteration": epoch * 10, "val_loss": 1.0 / epoch})
    assert history.truncate(after_epoch=3) == 2
    history.append({"epoch": 4, "iteration": 40, "val_loss": 0.2})
    assert pd.read_csv(tmp_path / "history.csv")["epoch"].tolist() == [1, 2, 3, 4]


def test_a_line_torn_by_a_crash_is_dropped_on_open(tmp_path):
    path = tmp_path / "history.csv"
    history = History(path)
    history.append({"epoch": 1, "iteration": 10, "val_loss": 0.5})
    with open(path, "a") as f:
        f.write("2,20,0.4")  # killed mid-write: no newline
    reopened = History(path)
    assert reopened.last_epoch == 1
    reopened.append({"epoch": 2, "iteration": 20, "val_loss": 0.45})
    assert pd.read_csv(path)["val_loss"].tolist() == [0.5, 0.45]


def test_a_row_without_epoch_is_refused(tmp_path):
    with pytest.raises(KeyError, match="History row needs 'epoch'"):
        History(tmp_path / "h.csv").append({"iteration": 1})

"""Damage between a kill and the resume is found: repaired from the last checkpoint, or said."""
import json
import logging

import pandas as pd
import pytest
import torch

import monitor
from tests.runs import final_state, start


def tear_last_line(path):
    text = path.read_text()
    path.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + text.rstrip("\n").rsplit("\n", 1)[1][:7])


def delete_row(path, n=2):
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:n] + lines[n + 1:]))


def change_value(path, n=3):
    lines = path.read_text().splitlines(keepends=True)
    cells = lines[n].split(",")
    column = lines[0].split(",").index("val_loss")
    cells[column] = "0.123"
    lines[n] = ",".join(cells)
    path.write_text("".join(lines))


DAMAGE = {
    "a torn last row": tear_last_line,
    "a row deleted": delete_row,
    "a value changed": change_value,
    "the file emptied": lambda path: path.write_text(""),
    "the file deleted": lambda path: path.unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_history_is_repaired_from_the_last_checkpoint_at_the_resume(tmp_path, damage, caplog):
    _, s = start(tmp_path / "whole", patience=None, max_epochs=6)
    whole_history, whole_record, _ = final_state(tmp_path / "whole", s)
    run_dir = tmp_path / "run"
    start(run_dir, crash_at_iteration=18, patience=None, max_epochs=6)  # checkpoints through epoch 4
    DAMAGE[damage](run_dir / "history.csv")
    with caplog.at_level(logging.WARNING, logger="monitor"):
        _, s = start(run_dir, resume=True, patience=None, max_epochs=6)
    assert "did not hold the rows the last checkpoint recorded" in caplog.text
    history, record, _ = final_state(run_dir, s)
    pd.testing.assert_frame_equal(history, whole_history)
    assert record["epochs_completed"] == whole_record["epochs_completed"]
    assert monitor.load_run(run_dir).damage == []


def test_report_says_when_the_history_of_a_finished_run_was_changed(tmp_path):
    start(tmp_path, patience=None, max_epochs=4)
    assert monitor.load_run(tmp_path).damage == []
    change_value(tmp_path / "history.csv")
    summary = monitor.load_run(tmp_path).summary()
    assert "damaged     history.csv's first 4 rows are not those run.json recorded" in summary
    delete_row(tmp_path / "history.csv")
    assert "history.csv has 3 rows where run.json recorded 4" in monitor.load_run(tmp_path).summary()


def test_a_record_edited_to_finished_over_an_unfinished_checkpoint_is_said_not_obeyed(tmp_path, caplog):
    _, s = start(tmp_path / "whole", patience=None, max_epochs=5)
    whole_history, _, _ = final_state(tmp_path / "whole", s)
    run_dir = tmp_path / "run"
    start(run_dir, crash_at_iteration=10, patience=None, max_epochs=5)
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "status": "completed"}))
    with caplog.at_level(logging.WARNING, logger="monitor"):
        run, s = start(run_dir, resume=True, patience=None, max_epochs=5)
    assert "says 'completed' (failed), but its last checkpoint (epoch 2, iteration 8) had not stopped" in caplog.text
    history, _, _ = final_state(run_dir, s)
    pd.testing.assert_frame_equal(history, whole_history)


def test_best_checkpoints_that_fail_their_checksum_are_dropped_from_best_k_with_a_warning(tmp_path, caplog):
    run_dir = tmp_path / "run"
    start(run_dir, crash_at_iteration=18, patience=None, max_epochs=6)
    bests = sorted((run_dir / "checkpoints").glob("best_*.pt"))
    assert bests
    for path in bests:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="monitor"):
        run, s = start(run_dir, resume=True, patience=None, max_epochs=6)
    assert "failed their checksum: set aside as *.damaged and dropped from the best" in caplog.text
    assert all(path.with_name(path.name + ".damaged").exists() for path in bests)
    listed = json.loads((run_dir / "run.json").read_text())["best"]["checkpoint"]
    assert listed is None or (run_dir / listed).exists() and torch.load(run_dir / listed) is not None


def test_a_model_the_optimizer_does_not_step_is_refused_at_attach(tmp_path):
    from tests.conftest import tiny_setup

    s = tiny_setup()
    other = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    with pytest.raises(ValueError, match=r"to_save\['model'\] should be the model to_save\['optimizer'\] steps, got a "
                                         r"Sequential none of whose 4 parameters it holds"):
        monitor.attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                                  objective=monitor.Objective("loss", mode="min"),
                                  to_save={"model": other, "optimizer": s["optimizer"]})
    assert not (tmp_path / "run").exists()


def test_a_model_that_does_not_change_in_the_first_epoch_is_said(tmp_path, caplog):
    from tests.conftest import tiny_setup

    s = tiny_setup()
    other = torch.nn.Linear(8, 2)  # not the trainer's; no optimizer in to_save to tell
    run = monitor.attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                                    objective=monitor.Objective("loss", mode="min"), to_save={"model": other},
                                    early_stopping=None)
    with caplog.at_level(logging.WARNING, logger="monitor"), run:
        s["trainer"].run(s["train_loader"], max_epochs=2)
    assert caplog.text.count("None of the parameters of to_save['model'] (Linear) changed in epoch 1") == 1


def test_damage_to_a_finished_run_is_repaired_at_a_resume_that_trains_nothing(tmp_path, caplog):
    _, s = start(tmp_path / "whole", patience=None, max_epochs=4)
    whole_history, whole_record, _ = final_state(tmp_path / "whole", s)
    run_dir = tmp_path / "run"
    start(run_dir, patience=None, max_epochs=4)
    (run_dir / "history.csv").unlink()
    record = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**record, "status": "early_stopped"}))  # max_epochs means completed
    with caplog.at_level(logging.WARNING, logger="monitor"):
        run, s = start(run_dir, resume=True, patience=None, max_epochs=4)
    assert run.is_finished
    assert "did not hold the rows" in caplog.text and "'early_stopped', but its stop reason 'max_epochs'" in caplog.text
    history, record, _ = final_state(run_dir, s)
    pd.testing.assert_frame_equal(history, whole_history)
    assert (record["status"], record["stop_reason"]) == ("completed", "max_epochs")

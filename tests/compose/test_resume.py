"""Resume: continue from the last checkpoint to exactly the uninterrupted result."""
import json

import pandas as pd
import pytest
import torch
from ignite.metrics import Loss
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

import monitor
from monitor import Objective, attach_monitoring
from tests.conftest import tiny_setup
from tests.runs import final_state, start


@pytest.mark.parametrize("fractions", [[0.6], [0.2, 0.7], [0.3, 0.5, 0.9]])
def test_crash_and_resume_gives_the_uninterrupted_result(tmp_path, fractions):
    _, s = start(tmp_path / "whole")
    whole_history, whole_record, whole_weights = final_state(tmp_path / "whole", s)
    total = s["trainer"].state.iteration
    assert total >= 20, "the uninterrupted run should last a few epochs"
    crashes = [max(1, int(f * total)) for f in fractions]

    run_dir = tmp_path / "resumed"
    for i, iteration in enumerate(crashes):
        start(run_dir, resume=i > 0, crash_at_iteration=iteration)
    run, s = start(run_dir, resume=True)
    history, record, weights = final_state(run_dir, s)

    pd.testing.assert_frame_equal(history, whole_history)
    for key in ("status", "stop_reason", "epochs_completed", "best"):
        assert record[key] == whole_record[key]
    for name in weights:
        assert torch.equal(weights[name], whole_weights[name])
    assert [seg["status"] for seg in record["segments"]] == ["failed"] * len(crashes) + [record["status"]]
    assert record["segments"][-1]["from_epoch"] == (crashes[-1] - 1) // 4
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt")) == sorted(
        p.name for p in (tmp_path / "whole" / "checkpoints").glob("*.pt")
    )


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path):
    start(tmp_path, crash_at_iteration=14)  # epoch 4 partly logged, then lost
    start(tmp_path, resume=True)
    history = pd.read_csv(tmp_path / "history.csv")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    steps = [e.step for e in events.Scalars("val/loss")]
    assert steps == history["iteration"].tolist()
    train_steps = [e.step for e in events.Scalars("train/loss")]
    assert train_steps == list(range(1, history["iteration"].iloc[-1] + 1))


def test_resuming_a_finished_run_trains_nothing_and_changes_no_file(tmp_path):
    start(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    run, s = start(tmp_path, resume=True, max_epochs=10)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before
    assert run.is_finished and run.status.value == json.loads((tmp_path / "run.json").read_text())["status"]
    assert s["trainer"].state.iteration == json.loads((tmp_path / "run.json").read_text())["iterations_completed"]


def test_resume_on_an_empty_directory_starts_a_new_run(tmp_path):
    run, s = start(tmp_path / "new", resume=True, max_epochs=2, patience=None)
    assert pd.read_csv(tmp_path / "new" / "history.csv")["epoch"].tolist() == [1, 2]


def test_resume_with_a_changed_objective_is_refused_naming_the_change(tmp_path):
    start(tmp_path, crash_at_iteration=10)
    with pytest.raises(ValueError, match=r"different objective; changed \(was, now\): \{'metric': \('loss', 'accuracy'\), "
                                         r"'mode': \('min', 'max'\)\}"):
        start(tmp_path, resume=True, objective=Objective("accuracy", mode="max"))


def test_resume_with_a_model_that_does_not_fit_names_the_difference_and_loads_nothing(tmp_path):
    start(tmp_path, crash_at_iteration=10)
    s = tiny_setup()
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2), nn.Linear(2, 2))  # wider, one more layer
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = monitor.build_trainer(model, optimizer, nn.CrossEntropyLoss())
    evaluator = monitor.build_evaluator(model, {"loss": Loss(nn.CrossEntropyLoss())})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(monitor.CheckpointError) as error:
        attach_monitoring(
            trainer, evaluator, s["val_loader"], run_dir=tmp_path,
            objective=Objective("loss", mode="min"), to_save={"model": model, "optimizer": optimizer}, resume=True,
        )
    message = str(error.value)
    assert "missing keys ['3.bias', '3.weight'], unexpected keys []" in message
    assert "'0.weight': ((16, 8), (32, 8))" in message and "Nothing was loaded" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert trainer.state.iteration == 0 and optimizer.state_dict()["state"] == {}


def plan_for(run_dir, objective=None, required=("model", "trainer")):
    from monitor.compose.resume import plan_resume
    from monitor.store.layout import RunPaths
    from monitor.store.record import RunRecord

    return plan_resume(RunPaths(run_dir), objective=objective or Objective("loss", mode="min"),
                       record=RunRecord.read(run_dir), required=set(required))


def test_the_plan_reads_the_folder_and_changes_nothing(tmp_path):
    start(tmp_path, crash_at_iteration=23)  # last checkpoints of epochs 4 and 5, status failed
    newest = tmp_path / "checkpoints" / "last_epoch=5.pt"
    newest.write_bytes(b"junk")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    plan = plan_for(tmp_path)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert plan.checkpoint.name == "last_epoch=4.pt" and plan.damaged == (newest,)
    assert (plan.from_epoch, plan.purge_step) == (4, 17)  # 4 iterations per epoch: redo from step 17
    assert not plan.is_finished and plan.decided_stop is None


def test_the_plan_of_an_empty_folder_starts_over_and_hides_every_point(tmp_path):
    plan = plan_for(tmp_path)
    assert plan.resume and plan.state is None and plan.purge_step == 0 and plan.from_epoch == 0


def test_the_plan_knows_a_stop_the_checkpoint_decided_and_a_finished_run(tmp_path):
    from monitor.core.status import StopReason

    start(tmp_path, max_epochs=3, patience=None)
    plan = plan_for(tmp_path)  # completed: a larger max_epochs may continue it (decided at trainer.run)
    assert not plan.is_finished and plan.extends and plan.decided_stop is StopReason.MAX_EPOCHS
    record = json.loads((tmp_path / "run.json").read_text())
    (tmp_path / "run.json").write_text(json.dumps({**record, "status": "running"}))  # killed before recording
    plan = plan_for(tmp_path)
    assert not plan.is_finished and plan.decided_stop is StopReason.MAX_EPOCHS


@pytest.mark.parametrize("first, then", [({"max_epochs": 3, "patience": None}, {"max_epochs": 6, "patience": None}),
                                          ({"max_epochs": 10, "patience": 1}, {"max_epochs": 10, "patience": 3})])
def test_a_finished_run_goes_on_with_a_larger_max_epochs_or_patience_as_if_started_with_it(tmp_path, first, then):
    _, s = start(tmp_path / "whole", **then)
    whole_history, whole_record, whole_weights = final_state(tmp_path / "whole", s)
    run_dir = tmp_path / "extended"
    start(run_dir, **first)
    stopped = json.loads((run_dir / "run.json").read_text())
    assert stopped["epochs_completed"] < whole_record["epochs_completed"], "the first run should stop earlier"
    run, s = start(run_dir, resume=True, **then)
    history, record, weights = final_state(run_dir, s)
    assert not run.is_finished
    pd.testing.assert_frame_equal(history, whole_history)
    for key in ("status", "stop_reason", "epochs_completed", "best"):
        assert record[key] == whole_record[key]
    assert all(torch.equal(weights[name], whole_weights[name]) for name in weights)
    assert [seg["from_epoch"] for seg in record["segments"]] == [0, stopped["epochs_completed"]]

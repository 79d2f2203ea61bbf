"""Do no harm: monitor acts on a run only on evidence the objective confirms (issue #28)."""
import json

import pytest
import torch
from ignite.metrics import Loss
from torch import nn

import monitor
from monitor.diagnosis.rules import diagnose
from tests.conftest import EpochMetric, tiny_setup


def test_a_nan_objective_ends_the_run_without_early_stopping_too(tmp_path):
    s = tiny_setup()
    evaluator = monitor.build_evaluator(s["model"], {"loss": Loss(nn.CrossEntropyLoss()),
                                                     "score": EpochMetric([0.5, float("nan"), 0.4, 0.3], s["trainer"])})
    run = monitor.attach_monitoring(s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path,
                                    objective=monitor.Objective("score", mode="min"), to_save={"model": s["model"]},
                                    early_stopping=None)
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=4)
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["status"], record["stop_reason"], record["epochs_completed"]) == ("diverged", "nonfinite_metric", 2)


def rows_of(train, val, lr=0.1):
    return [{"epoch": e, "iteration": 10 * e, "train_loss": t, "val_loss": v, "lr": lr}
            for e, (t, v) in enumerate(zip(train, val, strict=True), start=1)]


CURRICULUM = rows_of(train=[0.5, 0.05, 0.02, 0.6, 0.4, 0.3], val=[0.9, 0.7, 0.65, 0.5, 0.45, 0.42])
DIVERGING = rows_of(train=[0.5, 0.05, 0.02, 0.6, 0.9, 1.3], val=[0.9, 0.7, 0.65, 0.8, 1.0, 1.4])


def test_a_training_loss_that_rises_while_the_objective_improves_is_a_note_not_a_divergence():
    from monitor.diagnosis import diagnose
    from monitor.diagnosis.rules import diverging

    found = diagnose(CURRICULUM, objective_column="val_loss", mode="min")
    assert [(f.kind, f.level, f.epoch) for f in found] == [("loss_shift", "note", 4)]
    assert "did the data change" in found[0].advice and found[0].evidence["objective_now"] == 0.5
    assert diverging(CURRICULUM, objective_column="val_loss", mode="min") is None  # nothing for Recovery to undo
    confirmed = diagnose(DIVERGING, objective_column="val_loss", mode="min")
    assert [(f.kind, f.level, f.epoch) for f in confirmed][:1] == [("divergence", "problem", 4)]
    assert diverging(DIVERGING, objective_column="val_loss", mode="min") is not None


def test_a_training_loss_that_settles_higher_while_the_objective_comes_back_is_a_shift_not_an_oscillation():
    # Mixup switched on at epoch 4: the training loss rises 3x and stays there (soft targets), the validation
    # loss is worse for one epoch and then better than ever.
    rows = rows_of(train=[2.2, 0.7, 0.35, 1.15, 1.06, 0.84, 0.91, 0.95], val=[2.1, 0.46, 0.29, 0.34, 0.30, 0.26, 0.26,
                                                                           0.25])
    (finding,) = diagnose(rows, objective_column="val_loss", mode="min")
    assert (finding.kind, finding.level, finding.epoch) == ("loss_shift", "note", 4)
    assert finding.evidence["objective_back_at_epoch"] == 6
    swinging = rows_of(train=[2.2, 0.7, 0.35, 1.15, 0.3, 1.2, 0.28, 1.1], val=[2.1, 0.46, 0.29, 0.34, 0.27, 0.35,
                                                                               0.26, 0.3])
    assert "oscillation" in [f.kind for f in diagnose(swinging, objective_column="val_loss", mode="min")]
    worse = rows_of(train=[2.2, 0.7, 0.35, 1.15, 1.06, 0.84, 0.91, 0.95], val=[2.1, 0.46, 0.29, 0.34, 0.36, 0.38,
                                                                              0.4, 0.41])
    assert [f.kind for f in diagnose(worse, objective_column="val_loss", mode="min")] == ["oscillation"]


def test_a_model_that_never_learns_is_told_to_check_its_data_not_its_rate():
    # Random labels: the loss drops from its first step's 0.76 to the constant prediction's 0.693 and stays.
    rows = rows_of(train=[0.70, 0.694, 0.695, 0.693, 0.694, 0.694], val=[0.695, 0.694, 0.697, 0.694, 0.694, 0.696])
    for row in rows:
        row.update(train_loss_start=0.76, train_loss_spike=0.95)
    (finding,) = diagnose(rows, objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["learned"]) == ("not_learning", 1, False)
    assert "labels match the inputs" in finding.advice and "try 0.01" not in finding.advice
    converged = [{**row, "train_loss_spike": 4.5} for row in rows]  # a converged model's hard batches: at its floor
    assert diagnose(converged, objective_column="val_loss", mode="min") == []
    learning = [{**row, "val_loss": 0.695 - 0.01 * k} for k, row in enumerate(rows)]  # its objective improves
    assert diagnose(learning, objective_column="val_loss", mode="min") == []
    # 35% noisy labels: the loss falls 0.3% a validation (within 1% of its mean over 5) at 59% accuracy.
    slowly = [{**row, "train_loss": 0.6537 * (1 - 0.003 * k), "train_loss_start": 0.685} for k, row in enumerate(rows)]
    assert diagnose(slowly, objective_column="val_loss", mode="min") == []
    vanishing = [{**row, "train_grad_norm": 1.0, "train_grad_norm_first": 1e-5} for row in rows]  # the cause, said
    assert [f.kind for f in diagnose(vanishing, objective_column="val_loss", mode="min")] == ["vanishing_gradients"]


def test_trouble_in_the_first_epoch_names_no_checkpoint_after_the_damage():
    from monitor.diagnosis import diagnose

    rows = rows_of(train=[40.0, 80.0, 90.0], val=[8.4e21, 9e21, 9e21], lr=0.5)
    rows[0].update(train_loss_start=0.02, train_loss_spike=1000.0)  # a fine-tune knocked out in epoch 1
    found = [f for f in diagnose(rows, objective_column="val_loss", mode="min") if f.kind == "divergence"]
    assert found and found[0].epoch == 1
    assert "Roll back to epoch" not in found[0].advice
    assert "restart from the initial (or pre-trained) weights at the lower rate" in found[0].advice


def test_rollback_advice_names_only_a_kept_checkpoint_from_before_the_trouble():
    from monitor.diagnosis import diagnose

    rows = rows_of(train=[0.9, 0.5, 0.3, 0.2, 6.0], val=[0.9, 0.6, 0.5, 0.45, 5.0])
    advice = [f for f in diagnose(rows, objective_column="val_loss", mode="min") if f.kind == "divergence"][0].advice
    assert "Roll back to epoch 4 (val_loss 0.45)" in advice
    kept = [f for f in diagnose(rows, objective_column="val_loss", mode="min", kept_epochs={2, 3})
            if f.kind == "divergence"][0].advice
    assert "Roll back to epoch 3 (val_loss 0.5)" in kept  # epoch 4's file is gone (n_saved rotated it out)


def test_after_a_divergence_small_gradients_are_its_consequence_not_a_second_story():
    from monitor.diagnosis import diagnose

    rows = rows_of(train=[0.9, 0.5, 0.3, 6.0, 6.0, 6.0, 6.0], val=[0.9, 0.6, 0.5, 5.0, 5.0, 5.0, 5.0])
    for row, norm in zip(rows, [1.0, 0.8, 0.7, 1e-7, 1e-7, 1e-7, 1e-7], strict=True):
        row.update(train_grad_norm=norm, train_grad_norm_first=norm / 2)
    kinds = [f.kind for f in diagnose(rows, objective_column="val_loss", mode="min") if f.is_problem]
    assert "divergence" in kinds and "vanishing_gradients" not in kinds


def test_a_rollback_after_which_the_model_learns_nothing_is_not_called_undone():
    from monitor.diagnosis import diagnose

    # SGD at lr 1.5 on a ReLU network: a divergence in epoch 2, one rollback at lr/2, then chance for 8 epochs
    train = [1.2, 30.0] + [2.3026] * 8
    val = [1.0, 40.0] + [2.3026] * 8
    rows = rows_of(train, val, lr=1.5)
    for row in rows:
        row["train_loss_start"] = 2.31
    recoveries = [{"iteration": 20, "epoch": 2, "reason": "divergence", "loss": 30.0, "attempt": 1,
                   "rolled_back_to": 10, "changes": {"lr": [[1.5], [0.75]]}}]
    found = diagnose(rows, objective_column="val_loss", mode="min", recoveries=recoveries)
    problems = {f.kind for f in found if f.is_problem}
    assert problems == {"divergence", "not_learning"}
    divergence = next(f for f in found if f.kind == "divergence")
    assert "Undone" not in divergence.advice and "did not come back" in divergence.advice
    stuck = next(f for f in found if f.kind == "not_learning")
    assert stuck.epoch == 3 and "restart from the initial weights" in stuck.advice


@pytest.mark.parametrize("make", [
    lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=0, factor=0.5, min_lr=0.01),
    lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=4),
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=40),
    lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1 / (1 + step)),
], ids=["ReduceLROnPlateau", "CyclicLR", "OneCycleLR", "LambdaLR"])
def test_a_rate_cut_scales_every_schedule_so_it_never_comes_back(make):
    from monitor.parts.recovery import _scale_schedule

    def rates(cut):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        schedule = make(optimizer)
        out = []
        for step in range(12):
            if cut and step == 3:  # what a rollback does: the groups' rates and the schedule's bounds
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
                _scale_schedule(schedule, 0.5)
            optimizer.step()
            schedule.step(*([1.0] if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau) else []))
            out.append(optimizer.param_groups[0]["lr"])
        return out

    plain, cut = rates(False), rates(True)
    assert cut[3:] == pytest.approx([r * 0.5 for r in plain[3:]])


def test_a_rollback_whose_objective_never_comes_back_is_tried_again_then_stops_as_recovery_failed(tmp_path):
    from ignite.engine import Events

    from tests.parts.test_recovery import setup

    s = setup(faults={40: "huge"})  # a spike in epoch 3 (16 steps an epoch)
    scores = [0.5, 0.4] + [0.9] * 10  # and the objective never comes back to 0.4 after it
    evaluator = monitor.build_evaluator(s["model"], {"score": EpochMetric(scores, s["trainer"])})
    run = monitor.attach_monitoring(
        s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path, objective=monitor.Objective("score", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, early_stopping=None,
        parts=[monitor.Recovery(max_attempts=2, window=20, keep_every=4)], console=monitor.Console(log_every=4),
        checkpoints=monitor.Checkpoints(every=Events.EPOCH_COMPLETED))
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=12)
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["status"], record["stop_reason"], record["epochs_completed"]) == ("diverged", "recovery_failed", 8)
    reasons = [(e["reason"], e["epoch"], e.get("gave_up", False)) for e in record["recoveries"]]
    assert reasons == [("loss_spike", 3, False), ("no_comeback", 5, False), ("no_comeback", 8, True)]
    assert record["recoveries"][1]["rolled_back_to"] == 2 * 16  # the state of the best validation


def _scheduled(kind):
    """A user's schedule and how it is wired: (to_save entries, attach(trainer, evaluator), the peak rate)."""
    from ignite.engine import Events
    from ignite.handlers import PiecewiseLinear

    def make(optimizer):
        if kind == "ReduceLROnPlateau":
            schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=0, factor=0.5, min_lr=0.02)
            return {"scheduler": schedule}, lambda t, e: e.add_event_handler(
                Events.COMPLETED, lambda ev: schedule.step(ev.state.metrics["loss"]))
        if kind == "PiecewiseLinear every 2 steps":  # Ignite's, attached with an event filter, not in to_save
            schedule = PiecewiseLinear(optimizer, "lr", [(0, 0.02), (30, 0.1), (96, 0.02)])
            return {}, lambda t, e: t.add_event_handler(Events.ITERATION_STARTED(every=2), schedule)
        schedule = (torch.optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.02, max_lr=0.1, step_size_up=8)
                    if kind == "CyclicLR" else torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1,
                                                                                  total_steps=100))
        return {"scheduler": schedule}, lambda t, e: t.add_event_handler(Events.ITERATION_COMPLETED,
                                                                         lambda _: schedule.step())
    return make


def _train_scheduled(run_dir, kind, *, crash_at=None, resume=False):
    from ignite.engine import Events

    from tests.parts.test_recovery import setup
    from tests.runs import raise_at, run_or_crash

    s = setup(faults={40: "nan"})  # a NaN at iteration 40, in epoch 3 (16 steps an epoch)
    saved, wire = _scheduled(kind)(s["optimizer"])
    wire(s["trainer"], s["evaluator"])
    raise_at(s["trainer"], crash_at)
    run = monitor.attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir, objective=monitor.Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"], **saved}, early_stopping=None,
        parts=[monitor.Recovery(keep_every=6)], resume=resume, console=monitor.Console(log_every=4),
        checkpoints=monitor.Checkpoints(every=Events.ITERATION_COMPLETED(every=5), restore_best=False))
    run_or_crash(run, s["trainer"], s["train_loader"], max_epochs=6, crashing=crash_at is not None)
    return s


@pytest.mark.parametrize("kind", ["ReduceLROnPlateau", "CyclicLR", "OneCycleLR", "PiecewiseLinear every 2 steps"])
def test_every_schedule_goes_on_from_its_cut_rate_after_a_rollback_and_through_a_kill(tmp_path, kind):
    import pandas as pd

    from monitor.store.history import TIMING_COLUMNS

    whole = _train_scheduled(tmp_path / "whole", kind)
    record = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert record["status"] == "completed" and len(record["recoveries"]) == 1
    history = pd.read_csv(tmp_path / "whole" / "history.csv")
    after = history[history["epoch"] >= 3]["lr"]  # the schedule's rates from the rollback on: at most half its peak
    assert after.max() <= 0.05 + 1e-9, after.tolist()
    _train_scheduled(tmp_path / "split", kind, crash_at=55)  # killed after the rollback, then resumed
    split = _train_scheduled(tmp_path / "split", kind, resume=True)
    a, b = (pd.read_csv(tmp_path / n / "history.csv").drop(columns=list(TIMING_COLUMNS)) for n in ("whole", "split"))
    pd.testing.assert_frame_equal(a, b)
    for p, q in zip(whole["model"].parameters(), split["model"].parameters(), strict=True):
        assert torch.equal(p, q)

"""Each rule of monitor.diagnosis on scripted histories, its edges, and findings in a live run, run.json,
report and compare (issue #13)."""
import json
import logging
import math
import random
import time

import pytest

from monitor.diagnosis.rules import ADVICE, KINDS, diagnose


def history(train, val=None, *, per_epoch=1, **columns):
    """Rows as history.csv has them: ``per_epoch`` validations per epoch of 100 iterations."""
    rows = []
    for i, loss in enumerate(train):
        row = {"epoch": i // per_epoch + 1, "iteration": (i + 1) * 100 // per_epoch, "train_loss": loss,
               "val_loss": (val or train)[i], "data_wait_frac": 0.1}
        for name, values in columns.items():
            row[name] = values[i]
        rows.append(row)
    return rows


def kinds(rows, **kwargs):
    return [f.kind for f in diagnose(rows, objective_column="val_loss", mode="min", **kwargs)]


def healthy_curve(n=40, seed=0, noise=0.02):
    rng = random.Random(seed)
    train = [0.7 * math.exp(-i / 12) + 0.1 + rng.gauss(0, noise * 0.3) for i in range(n)]
    val = [0.7 * math.exp(-i / 15) + 0.15 + rng.gauss(0, noise) for i in range(n)]
    return history(train, val)


@pytest.mark.parametrize("seed", range(5))
def test_noisy_but_healthy_curves_give_no_finding(seed):
    assert kinds(healthy_curve(seed=seed)) == []


def test_early_stoppings_usual_tail_is_not_overfitting():
    # The case study: best at 15, then 10 validations up to 26% above it while the train loss falls.
    val = [0.69, 0.68, 0.66, 0.62, 0.58, 0.56, 0.55, 0.53, 0.52, 0.51, 0.50, 0.49, 0.485, 0.48, 0.4735,
           0.477, 0.475, 0.484, 0.487, 0.50, 0.504, 0.524, 0.541, 0.551, 0.5975]
    train = [0.69 - 0.019 * i for i in range(25)]
    assert kinds(history(train, val)) == []


def test_overfitting_starts_at_the_best_validation_with_the_gap_as_evidence():
    val = [0.7, 0.6, 0.5, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    train = [0.7, 0.55, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.04, 0.03]
    (finding,) = diagnose(history(train, val), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch) == ("overfitting", 4)
    assert finding.evidence["best_val"] == 0.45 and finding.evidence["val_now"] == 1.1
    assert finding.evidence["gap_now"] == pytest.approx(1.07)
    assert finding.advice == ADVICE["overfitting"]


def test_divergence_is_an_order_of_magnitude_above_the_lowest_loss():
    train = [0.7, 0.5, 0.4, 0.6, 1.5, 4.5, 40.0, 300.0]
    (finding,) = diagnose(history(train), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch) == ("divergence", 6) and finding.evidence["ratio"] == pytest.approx(11.25)
    # < 10x is no divergence; the loss back at 1.5 from 0.4 (epoch 3) is an instability (oscillation)
    (finding,) = diagnose(history([0.7, 0.5, 0.4, 0.6, 1.5, 3.9, 2.0, 1.0]), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["lowest_epoch"]) == ("oscillation", 5, 3)


def test_nonfinite_names_the_first_nan_and_its_column():
    train = [0.7, 0.6, 0.5, float("nan")]
    (finding,) = diagnose(history(train, [0.7, 0.6, 0.5, 0.5]), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["column"]) == ("nonfinite", 4, "train_loss")
    rows = history([0.7, 0.6, 0.5], train_grad_norm=[1.0, float("inf"), 1.0])
    assert [(f.kind, f.epoch, f.evidence["column"]) for f in diagnose(
        rows, objective_column="val_loss", mode="min")] == [("nonfinite", 2, "train_grad_norm")]


def test_what_follows_a_divergence_is_not_reported_as_more_problems():
    train = [0.7, 0.5, 0.4, 6.0, 0.5, 9.0, 0.4, 8.0, 0.6, 7.0, 0.5, 9.0]  # swings after the blow-up
    assert kinds(history(train)) == ["divergence"]


def test_plateau_only_from_five_validations_and_oscillation_needs_swings_without_progress():
    assert kinds(history([0.6931, 0.6930, 0.6931, 0.6929, 0.6930, 0.6931])) == ["plateau"]
    assert kinds(history([0.6931, 0.6930, 0.6931, 0.6929])) == []  # too short to tell
    swinging = [0.6, 0.9, 0.55, 0.95, 0.6, 0.9, 0.58, 0.92, 0.6, 0.9]
    assert kinds(history(swinging)) == ["oscillation"]
    decreasing_with_noise = [1.0, 1.05, 0.9, 0.95, 0.8, 0.85, 0.7, 0.75, 0.6, 0.65]
    assert "oscillation" not in kinds(history(decreasing_with_noise))  # it makes progress


def test_data_bound_and_gradients():
    rows = healthy_curve(n=10)
    for row in rows:
        row["data_wait_frac"] = 0.7
    assert kinds(rows) == ["data_bound"]
    grads = [1.0, 1.2, 0.9, 1.1, 5.0, 40.0, 150.0, 160.0]
    rows = history([0.7 - 0.05 * i for i in range(8)], train_grad_norm=grads)
    assert kinds(rows) == ["exploding_gradients"]
    rows = history([0.69, 0.69, 0.69, 0.689, 0.69, 0.689], train_grad_norm=[1e-5, 2e-5, 1e-5, 1e-5, 1e-5, 1e-5])
    assert set(kinds(rows)) == {"vanishing_gradients", "plateau"}


def test_validated_every_n_iterations_and_a_resumed_run_read_the_same():
    train = [0.7, 0.6, 0.5, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    val = [0.7, 0.6, 0.5, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1]
    train = [0.7, 0.55, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.04, 0.03]
    (finding,) = diagnose(history(train, val, per_epoch=4), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.iteration) == ("overfitting", 1, 100)


def test_every_kind_has_advice():
    assert set(ADVICE) == set(KINDS) and all(len(text) > 20 for text in ADVICE.values())


def test_a_live_run_warns_once_per_kind_and_records_the_findings(tmp_path, caplog):
    import torch

    import monitor
    from monitor import Objective, attach_monitoring
    from tests.conftest import ScriptedMetric, tiny_setup

    s = tiny_setup()
    values = [0.7, 0.6, 0.5, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]  # the validation loss overfits
    evaluator = monitor.build_evaluator(s["model"], {"loss": ScriptedMetric(values)})
    losses = iter([0.7, 0.55, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.05, 0.04, 0.03, 0.02])
    current = {"loss": 0.7}
    from ignite.engine import Engine, Events
    # A step that computes for 2 ms (an instant one would be data-bound, and rightly found so).
    trainer = Engine(lambda e, b: (time.sleep(0.002), {"loss": torch.tensor(current["loss"])})[1])
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda _: current.update(loss=next(losses)))
    run = attach_monitoring(
        trainer, evaluator, s["val_loader"], run_dir=tmp_path / "run", objective=Objective("loss", mode="min"),
        to_save={"model": s["model"]}, early_stopping=None,
    )
    with caplog.at_level(logging.WARNING, logger="monitor"), run:
        trainer.run(s["train_loader"], max_epochs=12)
    assert caplog.text.count("Training problem: overfitting from epoch 4") == 1  # once, as soon as seen
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [f["kind"] for f in record["findings"]] == ["overfitting"] and record["findings"][0]["epoch"] == 4
    review = monitor.load_run(tmp_path / "run")
    assert [f.kind for f in monitor.load_run(tmp_path / "run").findings] == ["overfitting"]
    assert "findings    overfitting from epoch 4" in review.summary()
    assert monitor.compare([review])["findings"].tolist() == ["overfitting"]
    assert "What went wrong" in monitor.review.to_html([review])


def test_a_blow_up_within_an_epoch_is_a_divergence_even_when_the_epochs_mean_hides_it():
    train = [1.4, 0.78, 0.73, 0.73, 0.78, 0.74, 0.77, 0.75]  # then stuck at chance: no 10x in the means
    spikes = [8.4, 1.7, 1.2, 1.3, 1.7, 1.3, 1.5, 1.4]
    (finding,) = diagnose(history(train, train_loss_spike=spikes), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence) == ("divergence", 1, {"column": "train_loss_spike",
                                                                                 "spike": 8.4, "typical_spike": 1.45})
    noisy = [1.1, 1.3, 2.0, 1.6, 1.8, 1.9, 1.5, 1.7]  # small batches: a step at twice the first loss
    assert kinds(history([0.7 * math.exp(-i / 4) + 0.1 for i in range(8)], train_loss_spike=noisy)) == []


def test_the_training_loss_going_back_up_is_an_oscillation_unless_the_rate_was_raised():
    train = [0.5, 0.26, 0.19, 0.17, 0.15, 0.12, 0.11, 0.135, 0.10, 0.07, 0.06, 0.10, 0.126, 0.09]
    (finding,) = diagnose(history(train), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["lowest_epoch"]) == ("oscillation", 12, 11)
    # The same curve under warm restarts: the rate jumps back up at epoch 12, and the loss with it.
    rates = [0.05] * 11 + [0.5, 0.4, 0.3]
    assert kinds(history(train, lr=rates)) == []
    assert kinds(history([0.5, 0.3, 0.2, 0.1, 0.01, 0.0012, 0.0011, 0.003, 0.002])) == []  # near 0: noise


def test_a_single_steps_gradient_norm_two_orders_above_the_start_is_exploding():
    grads = [1.0, 1.1, 0.9, 1.0, 1.2]
    rows = history([0.7 - 0.05 * i for i in range(5)], train_grad_norm=grads,
                   train_grad_norm_max=[3.0, 2.5, 2.0, 2.2, 250.0])
    (finding,) = diagnose(rows, objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["column"]) == ("exploding_gradients", 5, "train_grad_norm_max")
    rows = history([0.7, 0.6], train_grad_norm=[1.0, 1.0], train_grad_norm_max=[2.0, float("inf")])
    assert kinds(rows) == ["exploding_gradients"]  # an infinite step counts
    rows = history([0.7, 0.6, 0.5], train_grad_norm=[1.0, 1.0, 1.0], train_grad_norm_max=[2.0, 40.0, 9.0])
    assert kinds(rows) == []  # 40x: a healthy run's norms vary that much from step to step


def test_a_gradient_that_blows_up_in_the_first_epoch_is_judged_against_the_runs_first_step():
    # An RNN without clipping: one step of epoch 1 at 1825, its epoch's mean raised with it (no earlier epoch).
    rows = history([0.7], train_grad_norm=[40.0], train_grad_norm_max=[1825.0], train_grad_norm_start=[1.5])
    (finding,) = diagnose(rows, objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["first_step"]) == ("exploding_gradients", 1, 1.5)
    assert "No checkpoint from before it is kept" in finding.advice  # nothing healthy on disk before epoch 1
    rows = history([0.7, 0.6], train_grad_norm=[5.0, 5.0], train_grad_norm_max=[40.0, 380.0],
                   train_grad_norm_start=[2.0, 2.0])
    assert kinds(rows) == []  # 190x the first step: a fine-tune's hard batch against an easy first one


def test_the_steps_after_the_last_row_of_a_run_stopped_by_a_nan_are_read_by_the_rules_of_a_broken_run():
    rows = history([0.69, 0.5, 0.3, 0.26], train_grad_norm=[0.1, 0.12, 0.15, 0.4], train_loss_spike=[1.0] * 4)
    tail = {"epoch": 5, "iteration": 480, "train_loss": float("nan"), "train_loss_spike": 3e15,
            "train_grad_norm": float("nan"), "train_grad_norm_max": 8e12}
    findings = diagnose(rows, objective_column="val_loss", mode="min", stop_reason="nonfinite_loss",
                        after_last_row=tail)
    assert [(f.kind, f.epoch, f.iteration) for f in findings] == [
        ("nonfinite", 5, 480), ("divergence", 5, 480), ("exploding_gradients", 5, 480)]
    stale = {**tail, "iteration": 400}  # a tail older than the last row: a resumed run's past
    assert kinds(rows, stop_reason="nonfinite_loss", after_last_row=stale) == ["nonfinite"]


def test_a_gradient_that_blows_up_into_a_nan_mid_epoch_is_found_live_and_in_the_review(tmp_path, caplog):
    import torch
    from ignite.engine import Events

    import monitor
    from tests.conftest import tiny_setup

    s = tiny_setup()
    monitor.parts.attach_grad_norm(s["trainer"], s["model"])

    def blow_up(engine):  # from the start of epoch 3, the weights grow 1e19x a step: inf, then NaN mid-epoch
        if engine.state.iteration >= 9:
            with torch.no_grad():
                for p in s["model"].parameters():
                    p.mul_(1e19)
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED, blow_up)
    run = monitor.attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
        objective=monitor.Objective("loss", mode="min"), to_save={"model": s["model"]}, console=monitor.Console(log_every=1))
    with caplog.at_level(logging.WARNING, logger="monitor"), run:
        s["trainer"].run(s["train_loader"], max_epochs=5)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["stop_reason"] == "nonfinite_loss"
    assert record["after_last_row"]["iteration"] > 8  # past the last row (epoch 2 ends at iteration 8)
    found = [f["kind"] for f in record["findings"]]
    assert {"nonfinite", "divergence", "exploding_gradients"} <= set(found), found
    assert caplog.text.count("Training problem: exploding_gradients") == 1  # said once, at the end
    assert [f.kind for f in monitor.load_run(tmp_path / "run").findings] == found


# Issue #17: runs the rules were not tuned on (fine-tuned starts, schedules), and advice that never
# points the wrong way.

def test_a_fine_tuned_run_whose_hard_batches_are_12x_its_first_step_in_every_epoch_is_healthy():
    # An MLP trained before, monitored at lr 0.01: its first step's loss is low (0.02) and a hard batch
    # in every epoch is 10-14x that: the heavy tail of a trained network, not a blow-up.
    train = [0.029, 0.026, 0.024, 0.023, 0.021, 0.020, 0.019, 0.018]
    val = [0.065, 0.066, 0.064, 0.065, 0.066, 0.065, 0.064, 0.065]
    spikes = [12.9, 11.2, 13.8, 10.4, 12.1, 11.7, 13.0, 12.2]
    rows = history(train, val, train_loss_spike=spikes, train_loss_start=[0.022] * 8, lr=[0.01] * 8)
    assert kinds(rows) == []
    # One epoch 5x above that tail is still a blow-up.
    assert kinds(history(train, val, train_loss_spike=[*spikes[:4], 70.0, *spikes[5:]])) == ["divergence"]


def test_a_trained_network_knocked_out_to_a_constant_prediction_is_a_divergence():
    # Fine-tuned at a rate far too high: every batch then sits at 2.3 (chance on 10 classes), 100x the first step.
    dead = [2.6, 2.31, 2.30, 2.30, 2.31, 2.30]
    rows = history(dead, dead, train_loss_spike=[118, 107, 105, 106, 107, 106], train_loss_start=[0.022] * 6)
    (finding,) = diagnose(rows, objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["start"]) == ("divergence", 1, 0.022)
    rows[0]["train_loss_spike"] = 1e5  # the blow-up seen within the first epoch: the spike says it
    (finding,) = diagnose(rows, objective_column="val_loss", mode="min")
    assert (finding.kind, finding.epoch, finding.evidence["column"]) == ("divergence", 1, "train_loss_spike")
    # A heavy-tailed run whose first batch was a lucky one: its mean is 10x that step too, but its
    # batches are not alike (a hard one at 40x the mean).
    lucky = [0.03, 0.028, 0.026, 0.025, 0.024, 0.023]
    rows = history(lucky, train_loss_spike=[400.0, 380, 410, 390, 400, 395], train_loss_start=[0.002] * 6)
    assert kinds(rows) == []


def test_a_loss_that_rose_and_stayed_is_an_instability_and_never_a_plateau():
    # SGD lr 0.3 with momentum 0.99: the loss rises 1.21 -> 2.5 and stays; accuracy falls to chance.
    train = [1.21, 1.9, 2.45, 2.5, 2.49, 2.5, 2.51, 2.5, 2.49, 2.5]
    findings = diagnose(history(train, lr=[0.3] * 10), objective_column="val_loss", mode="min")
    assert [f.kind for f in findings] == ["oscillation"]
    assert not any("Raise" in f.advice for f in findings)
    assert kinds(history([2.3, 2.3, 2.31, 2.6, 2.3, 2.3])) == []  # up 13% and back: not flat, not 1.5x


def test_advice_about_the_rate_names_the_runs_rate_a_value_to_try_and_where_to_roll_back():
    train = [0.7, 0.5, 0.4, 0.6, 1.5, 4.5, 40.0, 300.0]
    val = [0.72, 0.55, 0.45, 0.62, 1.4, 4.0, 35.0, 250.0]
    (finding,) = diagnose(history(train, val, lr=[0.3] * 8), objective_column="val_loss", mode="min")
    assert finding.kind == "divergence" and finding.evidence["lr"] == 0.3
    assert finding.advice.startswith("lr was 0.3 from epoch 1; try 0.03.")
    assert "Roll back to epoch 3 (val_loss 0.45)" in finding.advice
    (finding,) = diagnose(history([0.6931, 0.6930, 0.6931, 0.6929, 0.6930, 0.6931], lr=[1e-6] * 6),
                          objective_column="val_loss", mode="min")
    assert finding.kind == "plateau" and finding.advice.startswith("lr was 1e-06 from epoch 1; try 1e-05.")
    # A rate that changed: the advice gives the one at the time, and since when it held.
    rates = [0.05, 0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    (finding,) = diagnose(history(train, val, lr=rates), objective_column="val_loss", mode="min")
    assert finding.advice.startswith("lr was 0.1 from epoch 3; try 0.01.")


def test_a_bump_while_a_schedule_holds_the_rate_at_its_peak_is_a_note_that_says_so():
    # OneCycle: the rate climbs to 0.3 by epoch 4 and holds there; the loss bumps at epoch 7 and
    # falls again as the rate decays.
    rates = [0.03, 0.1, 0.2, 0.3, 0.3, 0.3, 0.29, 0.27, 0.2, 0.12, 0.06, 0.02, 0.005]
    train = [0.6, 0.3, 0.2, 0.18, 0.17, 0.2, 0.27, 0.2, 0.12, 0.09, 0.07, 0.06, 0.05]
    (finding,) = diagnose(history(train, lr=rates), objective_column="val_loss", mode="min")
    # the rate while the loss rose: from its lowest (epoch 5, lr 0.3) to the bump
    assert (finding.kind, finding.level, finding.evidence["lr"], finding.epoch) == ("oscillation", "note", 0.3, 7)
    assert "schedule's peak" in finding.advice and "came back down" in finding.advice
    assert finding.message().startswith("(note) oscillation")
    # The same bump at a constant rate is a problem; a warm-up to a rate the loss never recovers from too.
    assert diagnose(history(train, lr=[0.3] * 13), objective_column="val_loss", mode="min")[0].level == "problem"
    stuck = [0.6, 0.3, 0.2, 0.18, 0.17, 0.2, 0.27, 0.28, 0.27, 0.28, 0.27, 0.28, 0.28]
    (finding,) = diagnose(history(stuck, lr=[0.03, 0.1, 0.2] + [0.3] * 10), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.level) == ("oscillation", "problem")


def test_a_finding_keeps_its_fields_and_an_older_record_without_a_level_reads_as_a_problem():
    from monitor.diagnosis import Finding

    finding = diagnose(history([0.7, 0.5, 0.4, 0.6, 1.5, 4.5, 40.0, 300.0]), objective_column="val_loss",
                       mode="min")[0]
    data = finding.to_dict()
    assert list(data) == ["kind", "epoch", "iteration", "evidence", "advice", "level"]  # a new key, last
    assert Finding.from_dict(data) == finding
    del data["level"]
    assert Finding.from_dict(data).level == "problem"


def test_notes_are_shown_apart_and_never_warned_of(tmp_path, caplog):
    import torch
    from ignite.engine import Engine, Events

    import monitor
    from monitor import Objective, attach_monitoring
    from tests.conftest import ScriptedMetric, tiny_setup

    s = tiny_setup()
    rates = iter([0.03, 0.1, 0.2, 0.3, 0.3, 0.3, 0.29, 0.27, 0.2, 0.12, 0.06, 0.02, 0.005])
    losses = iter([0.6, 0.3, 0.2, 0.18, 0.17, 0.2, 0.27, 0.2, 0.12, 0.09, 0.07, 0.06, 0.05])
    current = {"loss": 0.6}
    optimizer = torch.optim.SGD(s["model"].parameters(), lr=0.03)
    trainer = Engine(lambda e, b: (time.sleep(0.002), {"loss": torch.tensor(current["loss"])})[1])

    def next_epoch(_):
        current.update(loss=next(losses))
        optimizer.param_groups[0]["lr"] = next(rates)
    trainer.add_event_handler(Events.EPOCH_STARTED, next_epoch)
    evaluator = monitor.build_evaluator(s["model"], {"loss": ScriptedMetric([0.6, 0.3, 0.2, 0.19, 0.18, 0.2, 0.25,
                                                                             0.2, 0.15, 0.1, 0.09, 0.085, 0.08])})
    run = attach_monitoring(trainer, evaluator, s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("loss", mode="min"), to_save={"model": s["model"],
                                                                               "optimizer": optimizer},
                            early_stopping=None)
    with caplog.at_level(logging.INFO, logger="monitor"), run:
        trainer.run(s["train_loader"], max_epochs=13)
    assert "Training problem" not in caplog.text and "Training note: (note) oscillation" in caplog.text
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [(f["kind"], f["level"]) for f in record["findings"]] == [("oscillation", "note")]
    review = monitor.load_run(tmp_path / "run")
    assert "findings    none" in review.summary() and "notes       (note) oscillation from epoch 7" in review.summary()
    table = monitor.compare([review])
    assert (table["findings"].tolist(), table["notes"].tolist()) == (["-"], ["oscillation"])
    page = monitor.review.to_html([review])
    assert "No training problem found" in page and "<h3>Notes</h3>" in page


def test_swings_while_a_schedule_passes_its_peak_are_a_note_and_schedule_advice_names_the_peak():
    # OneCycle on a CNN (the suite's digits): the loss swings while the rate climbs to 0.3 and back,
    # then converges as it decays. The swing window starts below the peak but holds it.
    rates = [0.044, 0.129, 0.227, 0.291, 0.298, 0.285, 0.26, 0.226, 0.184, 0.14, 0.096, 0.057, 0.027, 0.007]
    train = [2.17, 0.54, 0.30, 0.47, 0.45, 1.06, 0.76, 1.06, 0.66, 0.77, 0.57, 0.30, 0.17, 0.07]
    (finding,) = diagnose(history(train, lr=rates), objective_column="val_loss", mode="min")
    assert (finding.kind, finding.level, finding.evidence["lr"]) == ("oscillation", "note", 0.298)
    # A blow-up at the peak of a schedule: the advice is about the schedule's peak, not one epoch's rate.
    val = [2.1, 0.4, 0.25, 0.2, 0.18, 0.16, 2.6, 1.3, 0.8, 0.6, 0.4, 0.3, 0.25, 0.2]
    (finding,) = diagnose(history(train, val, lr=rates), objective_column="val_loss", mode="min")
    assert finding.kind == "divergence" and finding.advice.startswith(
        "lr was 0.26 at epoch 7, under a schedule that peaked at 0.298; try a peak of 0.0298.")


def test_a_trained_network_at_its_floor_is_no_plateau():
    # A converged MLP fine-tuned at SGD 1e-4: flat to 1%, but its hard batches stand 3-7x above its
    # first step (a network that learned nothing predicts alike on every batch: spikes near 1).
    flat = [0.0210, 0.0209, 0.0209, 0.0208, 0.0209, 0.0208, 0.0208, 0.0209, 0.0208, 0.0208]
    assert kinds(history(flat, train_loss_spike=[6.8, 4.1, 3.3, 5.2, 2.9, 4.4, 3.8, 6.1, 3.5, 4.0])) == []
    assert kinds(history([0.6931] * 10, train_loss_spike=[1.04, 1.02, 1.05] * 3 + [1.03])) == ["plateau"]


ROLLBACK = {"iteration": 550, "epoch": 6, "reason": "divergence", "loss": 3.0, "detected_at": 600, "attempt": 1,
            "rolled_back_to": 300, "rolled_back_to_epoch": 4, "skipped": [301, 600],
            "changes": {"lr": [[0.3], [0.15]]}}


def test_a_divergence_undone_by_a_rollback_is_a_note_and_what_follows_is_judged_again():
    rise = [0.7, 0.5, 0.4, 0.6, 2.0, 4.5]  # 10x its lowest at epoch 6: rolled back there
    after = [0.38, 0.34, 0.31, 0.29, 0.28, 0.27]
    rows = history(rise + after)
    assert [f.kind for f in diagnose(rows, objective_column="val_loss", mode="min") if f.is_problem] == ["divergence"]
    findings = diagnose(rows, objective_column="val_loss", mode="min", recoveries=[ROLLBACK])
    assert [f for f in findings if f.is_problem] == []
    notes = {f.kind: f for f in findings}
    assert notes["divergence"].advice.startswith("Undone: the run was rolled back at epoch 6")
    assert notes["recovered"].evidence["lr"] == "0.3 -> 0.15"
    again = history(rise + [0.38, 0.34, 0.5, 1.5, 4.0, 6.0])  # after the rollback it diverges anew: a problem
    problems = [f for f in diagnose(again, objective_column="val_loss", mode="min", recoveries=[ROLLBACK])
                if f.is_problem]
    assert [(f.kind, f.epoch) for f in problems] == [("divergence", 11)]  # 4.0 >= 10 x 0.34


def test_a_run_that_still_ended_broken_keeps_its_problem_with_the_rollbacks_in_its_advice():
    rows = history([0.7, 0.5, 0.4, 0.6, 2.0, 4.5])
    findings = diagnose(rows, objective_column="val_loss", mode="min", stop_reason="nonfinite_loss",
                        recoveries=[ROLLBACK, {**ROLLBACK, "attempt": 2, "changes": {"lr": [[0.15], [0.0375]]}}])
    problem = next(f for f in findings if f.is_problem)
    assert "Recovery rolled back 2 times (the last at lr 0.0375)" in problem.advice

"""Each rule of monitor.diagnosis on scripted histories, its edges, and findings in a live run, run.json,
report and compare (issue #13)."""
import json
import logging
import math
import random
import time

import pytest

from monitor.diagnosis import ADVICE, KINDS, diagnose


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
    assert kinds(history([0.7, 0.5, 0.4, 0.6, 1.5, 3.9, 2.0, 1.0])) == []  # < 10x: not a divergence


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
    run = attach_monitoring(trainer, evaluator, s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("loss", mode="min"), to_save={"model": s["model"]}, patience=None)
    with caplog.at_level(logging.WARNING, logger="monitor"), run:
        trainer.run(s["train_loader"], max_epochs=12)
    assert caplog.text.count("Training problem: overfitting from epoch 4") == 1  # once, as soon as seen
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [f["kind"] for f in record["findings"]] == ["overfitting"] and record["findings"][0]["epoch"] == 4
    review = monitor.load_run(tmp_path / "run")
    assert [f.kind for f in monitor.diagnose(tmp_path / "run")] == ["overfitting"]
    assert "findings    overfitting from epoch 4" in review.summary()
    assert monitor.compare([review])["findings"].tolist() == ["overfitting"]
    assert "What went wrong" in monitor.to_html([review])

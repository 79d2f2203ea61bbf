"""LR-on-plateau on the Objective: cuts exactly where early stopping counts, visible in lr and the log,
and resumes with its counters (issue #12, item 6)."""
import logging

import pandas as pd
import pytest
import torch
from ignite.engine import Events

import monitor
from monitor import Checkpoints, LROnPlateau, Objective, attach_monitoring
from monitor.handlers.best import BestTracker
from monitor.handlers.stopping import EarlyStoppingHandler
from monitor.parts.plateau import attach_lr_on_plateau
from tests.conftest import EpochMetric, stub_engine, tiny_setup

# 0.88 after 0.90 is below the threshold of 0.05: no improvement, for early stopping and the LR alike.
SCORES = [1.0, 0.9, 0.88, 0.95, 0.5, 0.52, 0.51, 0.53, 0.3, 0.31]


def test_the_rate_is_cut_exactly_when_early_stopping_counts_patience_validations_without_improvement():
    trainer, evaluator = stub_engine(), stub_engine()
    objective = Objective("loss", mode="min", threshold=0.05)
    best = BestTracker(objective, trainer).attach(evaluator)
    stopping = EarlyStoppingHandler(objective, trainer, patience=100)
    evaluator.add_event_handler(Events.COMPLETED, stopping)
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    attach_lr_on_plateau(evaluator, best, optimizer, LROnPlateau(patience=2, factor=0.5))
    counters, rates = [], []
    for epoch, value in enumerate(SCORES, start=1):
        trainer.state.epoch = epoch
        evaluator.state.metrics = {"loss": value}
        evaluator.fire_event(Events.STARTED)
        evaluator.fire_event(Events.COMPLETED)
        counters.append(stopping.counter)
        rates.append(optimizer.param_groups[0]["lr"])
    # A cut at each validation where early stopping's counter reaches 2 (and at 4, 6 ...: patience again).
    expected, rate = [], 1.0
    for counter in counters:
        rate *= 0.5 if counter and counter % 2 == 0 else 1.0
        expected.append(rate)
    assert rates == expected
    assert counters == [0, 0, 1, 2, 0, 1, 2, 3, 0, 1] and rates[3] == 0.5 and rates[6] == 0.25


def test_cooldown_and_min_lr():
    trainer, evaluator = stub_engine(), stub_engine()
    best = BestTracker(Objective("loss", mode="min"), trainer).attach(evaluator)
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    attach_lr_on_plateau(evaluator, best, optimizer, LROnPlateau(patience=1, factor=0.1, cooldown=2, min_lr=0.005))
    rates = []
    for epoch in range(1, 9):  # the first is a best, then never again
        trainer.state.epoch = epoch
        evaluator.state.metrics = {"loss": 1.0}
        evaluator.fire_event(Events.STARTED)
        evaluator.fire_event(Events.COMPLETED)
        rates.append(round(optimizer.param_groups[0]["lr"], 6))
    assert rates == [1.0, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.005]  # 2 validations of cooldown after a cut


@pytest.mark.parametrize("kwargs, match", [
    ({"patience": 0}, "patience should be a positive integer"),
    ({"factor": 1.5}, r"factor should be a number in \(0, 1\), got 1.5"),
    ({"cooldown": -1}, "cooldown should be an integer >= 0, got -1"),
    ({"min_lr": -0.1}, "min_lr should be a number >= 0"),
])
def test_bad_settings_are_refused_when_built(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LROnPlateau(**kwargs)


def plateau_run(run_dir, *, crash_at_epoch=None, resume=False):
    s = tiny_setup()
    values = [0.9, 0.8, 0.85, 0.86, 0.87, 0.7, 0.75, 0.76, 0.77, 0.78]
    evaluator = monitor.build_evaluator(s["model"], {"loss": EpochMetric(values, s["trainer"])})
    s["evaluator"] = evaluator
    if crash_at_epoch:  # before that epoch's validation and checkpoint
        s["trainer"].add_event_handler(Events.EPOCH_COMPLETED(once=crash_at_epoch),
                                       lambda _: (_ for _ in ()).throw(RuntimeError("killed")))
    run = attach_monitoring(
        s["trainer"], evaluator, s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, resume=resume, early_stopping=None,
        checkpoints=Checkpoints(every=Events.EPOCH_COMPLETED), parts=[LROnPlateau(patience=2, factor=0.5)],
    )
    return run, s


def test_reductions_show_in_the_lr_column_and_the_log(tmp_path, caplog):
    run, s = plateau_run(tmp_path / "run")
    with caplog.at_level(logging.INFO, logger="monitor"), run:
        s["trainer"].run(s["train_loader"], max_epochs=10)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    # Bests at 1, 2, 6; two validations without improvement (3, 4) cut the rate for epoch 5 on; 7, 8 again.
    assert history["lr"].tolist() == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 2)
    assert caplog.text.count("Reducing the learning rate") == 3  # after epochs 4, 8 and 10
    assert "Reducing the learning rate 0.1 -> 0.05: no improvement of val_loss in 2 validations" in caplog.text


def test_a_resumed_run_keeps_counting_where_it_was(tmp_path):
    run, s = plateau_run(tmp_path / "whole")
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=10)
    whole = pd.read_csv(tmp_path / "whole" / "history.csv")["lr"].tolist()
    run, s = plateau_run(tmp_path / "run", crash_at_epoch=4)  # saved at 3: one validation without improvement
    with run, pytest.raises(RuntimeError, match="killed"):
        s["trainer"].run(s["train_loader"], max_epochs=10)
    run, s = plateau_run(tmp_path / "run", resume=True)
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=10)
    assert pd.read_csv(tmp_path / "run" / "history.csv")["lr"].tolist() == pytest.approx(whole)


def test_lr_on_plateau_without_an_optimizer_is_refused_before_the_run_folder_is_touched(tmp_path):
    s = tiny_setup()
    with pytest.raises(ValueError, match=r"needs an optimizer in to_save .*got to_save keys \['model'\]"):
        attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                          objective=Objective("loss", mode="min"), to_save={"model": s["model"]},
                          parts=[LROnPlateau(patience=2)])
    assert not (tmp_path / "run").exists()

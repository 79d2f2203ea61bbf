"""Recovery (issue #18): a NaN or a spike rolls the run back to its newest good state, cuts the rate,
skips the batches in between and trains on in the same trainer.run; attempts exhausted stop the run
as before, with the attempts in run.json; a resume in the middle of a recovered run is exact."""
import json
import logging
import math

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import monitor
from monitor import Checkpoints, Console, Objective, Recovery, attach_monitoring
from monitor.core._position import run_iteration
from monitor.store.history import TIMING_COLUMNS
from tests.runs import raise_at, run_or_crash

STEPS = 16  # an epoch: 256 samples, 16 a batch


class FaultyLoss(nn.Module):
    """Cross-entropy, but at the given iterations NaN or a million times too large ({40: "nan"}: at
    iteration 40; {"30": "nan"}: from 30 on)."""

    def __init__(self, faults):
        super().__init__()
        self.faults, self.trainer, self.inner = dict(faults), None, nn.CrossEntropyLoss()

    def forward(self, y_pred, y):
        at = run_iteration(self.trainer.state)  # the steps taken, as the history and run.json count them
        loss = self.inner(y_pred, y)
        fault = self.faults.get(at) or next(
            (kind for start, kind in self.faults.items() if isinstance(start, str) and at >= int(start)), None)
        if fault == "nan":
            return loss * math.nan
        if fault == "huge":
            return loss * 1e6
        return loss


def setup(faults=(), lr=0.1, seed=0, batch=16):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(320, 8, generator=g)
    y = ((x[:, 0] + 0.5 * torch.randn(320, generator=g)) > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss = FaultyLoss(dict(faults))
    loss.trainer = trainer = monitor.build_trainer(model, optimizer, loss)
    return dict(
        model=model, optimizer=optimizer, loss=loss, trainer=trainer,
        evaluator=monitor.build_evaluator(model, {"loss": Loss(nn.CrossEntropyLoss())}),
        train_loader=DataLoader(TensorDataset(x[:256], y[:256]), batch_size=batch, shuffle=True),
        val_loader=DataLoader(TensorDataset(x[256:], y[256:]), batch_size=32),
    )


def train(run_dir, recovery, *, faults=(), max_epochs=6, lr=0.1, resume=False, crash_at=None, log_every=4,
          hot_epoch=None, batch=16):
    s = setup(faults, lr, batch=batch)
    if hot_epoch is not None:  # a user's schedule that sets a rate 50x too high at this epoch
        @s["trainer"].on(Events.EPOCH_STARTED(once=hot_epoch))
        def hot(engine):
            if engine.state.iteration == (hot_epoch - 1) * STEPS:  # not again when a resume restarts the epoch
                for group in s["optimizer"].param_groups:
                    group["lr"] = 5.0
    raise_at(s["trainer"], crash_at)
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, early_stopping=None,
        parts=[] if recovery is None else [recovery], resume=resume,
        checkpoints=Checkpoints(every=Events.ITERATION_COMPLETED(every=5), restore_best=False),
        console=Console(log_every=log_every),
    )
    run_or_crash(run, s["trainer"], s["train_loader"], max_epochs=max_epochs, crashing=crash_at is not None)
    return s, run


def record(run_dir):
    return json.loads((run_dir / "run.json").read_text())


def history(run_dir):
    return pd.read_csv(run_dir / "history.csv")


def test_a_nan_at_one_step_is_rolled_back_the_rate_cut_and_the_run_completes(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="monitor"):
        _, run = train(tmp_path / "run", Recovery(lr_factor=0.5), faults={40: "nan"})
    data = record(tmp_path / "run")
    assert data["status"] == "completed" and data["stop_reason"] == "max_epochs"
    [entry] = data["recoveries"]
    assert entry["iteration"] == 40 and entry["reason"] == "nonfinite_loss" and entry["attempt"] == 1
    # the check at 40 (log_every 4) judges it; the newest good copy is one of an earlier check
    assert entry["rolled_back_to"] % 4 == 0 and entry["rolled_back_to"] < 40
    assert entry["skipped"] == [entry["rolled_back_to"] + 1, 40]
    assert entry["changes"]["lr"] == [[0.1], [0.05]]
    rows = history(tmp_path / "run")
    assert len(rows) == 6 and rows["train_loss"].notna().all() and all(map(math.isfinite, rows["train_loss"]))
    assert rows["lr"].tolist()[:2] == [0.1, 0.1] and rows["lr"].tolist()[3:] == [0.05] * 3
    assert any("Recovery: nonfinite loss at iteration 40" in r.getMessage() and "rolled back to iteration" in
               r.getMessage() for r in caplog.records)
    assert all(torch.isfinite(p).all() for p in run.best_checkpoint.to_save["model"].parameters())


def test_a_rollback_is_shown_by_the_review(tmp_path):
    # (keep_every pinned: on the 1% budget a slow machine copies seldom, and the rollback then goes far
    # back and the run differs, which is right, but not what this test looks at)
    train(tmp_path / "run", Recovery(keep_every=4), faults={40: "nan"})
    run = monitor.load_run(tmp_path / "run")
    problems = [f for f in run.findings if f.is_problem]
    [note] = [f for f in run.findings if not f.is_problem]
    assert problems == [] and note.kind == "recovered" and note.iteration == 40
    assert note.evidence["lr"] == "0.1 -> 0.05" and "went on at lr 0.05" in note.advice
    assert "(note) recovered from epoch 3, iteration 40" in run.summary()
    row = monitor.compare([run]).iloc[0]
    assert row["rollbacks"] == 1 and row["notes"] == "recovered" and row["findings"] == "-"
    page = monitor.review.to_html([run])
    assert "<b>recovered</b> from epoch 3" in page
    figure = monitor.review.plot_runs([run])
    assert "rolled back" in [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_a_rollback_after_a_resume_on_another_batch_counts_the_steps_taken(tmp_path):
    # Issue #21: 16 steps of 16 an epoch, killed at 21 (checkpoint at 20: epoch 2, 64 samples in),
    # resumed with batch 32: the rest of epoch 2 is 6 steps (21..26), then 8 an epoch. A NaN at 25.
    train(tmp_path / "run", Recovery(keep_every=2), crash_at=21)
    train(tmp_path / "run", Recovery(keep_every=2), resume=True, batch=32, faults={25: "nan"})
    data = record(tmp_path / "run")
    assert data["status"] == "completed" and data["segments"][-1]["layout_change"]["exact"]
    [entry] = data["recoveries"]
    assert entry["iteration"] == 25 and 20 <= entry["rolled_back_to"] < 25
    assert entry["skipped"] == [entry["rolled_back_to"] + 1, 26]  # judged at 26, the epoch's last step
    assert history(tmp_path / "run")["iteration"].tolist() == [16, 26, 34, 42, 50, 58]


def test_a_huge_step_is_a_spike_rolled_back(tmp_path):
    train(tmp_path / "run", Recovery(window=20), faults={70: "huge"})
    data = record(tmp_path / "run")
    assert data["status"] == "completed"
    assert [e["reason"] for e in data["recoveries"]] in (["loss_spike"], ["nonfinite_loss"])
    assert data["recoveries"][0]["iteration"] in (70, 71)  # the step itself, or the first after it
    rows = history(tmp_path / "run")
    assert rows["train_loss"].iloc[-1] < 1.0  # it went on learning


def test_a_diagnosed_divergence_goes_back_to_the_best_validated_state(tmp_path):
    # (no step judged a spike: the divergence is found by the validations, as the diagnosis finds it)
    train(tmp_path / "run", Recovery(spike=1e6, keep_every=4), hot_epoch=4, max_epochs=10)
    data = record(tmp_path / "run")
    assert data["status"] == "completed"
    diverged = [e for e in data["recoveries"] if e["reason"] == "divergence"]
    assert diverged and data["recoveries"][0]["reason"] == "divergence"
    assert all(e["rolled_back_to"] == 3 * STEPS for e in diverged)  # the state validated best, at epoch 3
    rows = history(tmp_path / "run")
    assert rows["lr"].iloc[-1] < 20 and rows["val_loss"].iloc[-1] < 1.0  # it went on, and learned again
    assert rows["epoch"].tolist() == list(range(1, 11))  # the abandoned stretch stays: one row per validation
    kinds = {(f["kind"], f["level"]) for f in data["findings"]}
    assert ("divergence", "note") in kinds and not any(level == "problem" for _, level in kinds)


def test_without_trouble_recovery_changes_nothing(tmp_path):
    train(tmp_path / "plain", None)
    train(tmp_path / "with", Recovery(keep_every=3))
    plain, with_ = (history(tmp_path / n).drop(columns=list(TIMING_COLUMNS)) for n in ("plain", "with"))
    pd.testing.assert_frame_equal(plain, with_)
    assert record(tmp_path / "with")["recoveries"] == [] and "recoveries" not in record(tmp_path / "plain")


def test_attempts_exhausted_stop_the_run_as_before_with_the_attempts_recorded(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="monitor"):
        train(tmp_path / "nan", Recovery(max_attempts=2, keep_every=4), faults={"30": "nan"})  # NaN from step 30 on
    data = record(tmp_path / "nan")
    assert data["status"] == "diverged" and data["stop_reason"] == "nonfinite_loss"
    assert [e["attempt"] for e in data["recoveries"]] == [1, 2, 3] and data["recoveries"][-1]["gave_up"]
    # the first goes back to the newest copy (28); the second in a row to the state of the newest best
    # validation (epoch 2's, the restored one, at 0.05), cut harder: 0.05 x 0.5 ** 2
    assert [e["rolled_back_to"] for e in data["recoveries"][:2]] == [28, 2 * STEPS]
    assert [e["changes"]["lr"][1] for e in data["recoveries"][:2]] == [[0.05], [0.0125]]
    assert any("giving up" in r.getMessage() for r in caplog.records)

    train(tmp_path / "spike", Recovery(max_attempts=1, window=20), faults={"70": "huge"})
    data = record(tmp_path / "spike")
    assert data["status"] == "diverged" and data["stop_reason"] in ("recovery_failed", "nonfinite_loss")  # #28
    assert len(data["recoveries"]) == 2 and data["recoveries"][-1]["gave_up"]


@pytest.mark.parametrize("crash_at, trouble", [
    (37, "nan"), (43, "nan"), (61, "nan"),  # before, just after and well after the rollback at 40
    (58, "hot"), (70, "hot"), (101, "hot"),  # around the rollbacks of a divergence (epochs 4-6)
])
def test_a_recovered_run_killed_and_resumed_ends_as_the_uninterrupted_one(tmp_path, crash_at, trouble):
    make = lambda: Recovery(keep_every=6)  # noqa: E731
    how = {"faults": {40: "nan"}} if trouble == "nan" else {"hot_epoch": 4, "max_epochs": 8}
    whole, _ = train(tmp_path / "whole", make(), **how)
    train(tmp_path / "split", make(), crash_at=crash_at, **how)
    split, _ = train(tmp_path / "split", make(), resume=True, **how)
    a, b = (history(tmp_path / n).drop(columns=list(TIMING_COLUMNS)) for n in ("whole", "split"))
    pd.testing.assert_frame_equal(a, b)
    assert record(tmp_path / "whole")["recoveries"] == record(tmp_path / "split")["recoveries"]
    for p, q in zip(whole["model"].parameters(), split["model"].parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kwargs, message", [
    ({"lr_factor": 1.0}, r"lr_factor should be a number in \(0, 1\), got 1.0"),
    ({"lr_factor": 0}, r"lr_factor should be a number in \(0, 1\), got 0"),
    ({"max_attempts": 0}, "max_attempts should be a positive integer, got 0"),
    ({"spike": 1}, "spike should be a number above 1, got 1"),
    ({"window": 5}, "window should be at least 20 steps, got 5"),
])
def test_bad_settings_are_refused_where_they_are_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Recovery(**kwargs)


def test_a_rate_cut_without_an_optimizer_is_refused_at_attach(tmp_path):
    s = setup()
    with pytest.raises(ValueError, match=r"lr_factor=0.5 of Recovery needs an optimizer in to_save.*\['model'\]"):
        attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                          objective=Objective("loss", mode="min"), to_save={"model": s["model"]},
                          parts=[Recovery()])
    assert not (tmp_path / "run").exists()


def skipping_run(run_dir, *, faults, crash_at=None, resume=False, max_epochs=4):
    s = setup(faults)
    skip = monitor.SkipStep(factor=10, window=20)
    s["trainer"] = trainer = monitor.build_trainer(s["model"], s["optimizer"], s["loss"], skip_step=skip)
    s["loss"].trainer = trainer
    raise_at(trainer, crash_at)
    run = attach_monitoring(
        trainer, s["evaluator"], s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, early_stopping=None, resume=resume,
        checkpoints=Checkpoints(every=Events.ITERATION_COMPLETED(every=5), restore_best=False),
    )
    run_or_crash(run, trainer, s["train_loader"], max_epochs=max_epochs, crashing=crash_at is not None)
    return s, skip


def test_skip_step_leaves_out_the_steps_it_judges_and_counts_them_in_a_column(tmp_path):
    s, skip = skipping_run(tmp_path / "run", faults={40: "nan", 45: "huge"})
    assert skip.skipped == 2
    rows = history(tmp_path / "run")
    assert rows["train_skipped"].tolist() == [0.0, 0.0, 2 / STEPS, 0.0]  # epoch 3's share of skipped steps
    assert all(torch.isfinite(p).all() for p in s["model"].parameters())  # neither step reached the weights
    plain, _ = skipping_run(tmp_path / "plain", faults={})
    assert history(tmp_path / "plain")["train_skipped"].sum() == 0  # a healthy run skips nothing


def test_skip_step_resumes_exactly(tmp_path):
    whole, _ = skipping_run(tmp_path / "whole", faults={40: "nan", 45: "huge"})
    skipping_run(tmp_path / "split", faults={40: "nan", 45: "huge"}, crash_at=43)
    split, skip = skipping_run(tmp_path / "split", faults={40: "nan", 45: "huge"}, resume=True)
    a, b = (history(tmp_path / n).drop(columns=list(TIMING_COLUMNS)) for n in ("whole", "split"))
    pd.testing.assert_frame_equal(a, b)
    assert skip.skipped == 2  # the one before the kill came back with the checkpoint
    for p, q in zip(whole["model"].parameters(), split["model"].parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kwargs, message", [
    ({"factor": 1}, "factor should be a number above 1, got 1"),
    ({"window": 3}, "window should be at least 20 steps, got 3"),
])
def test_skip_step_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        monitor.SkipStep(**kwargs)


def test_skip_step_in_a_users_own_step(tmp_path):
    s = setup({30: "nan"})
    skip = monitor.SkipStep()
    model, optimizer, loss_fn = s["model"], s["optimizer"], s["loss"]

    def step(engine, batch):  # the docstring's recipe
        model.train()
        optimizer.zero_grad()
        x, y = batch
        loss = loss_fn(model(x), y)
        loss.backward()
        skipped = skip.judge(loss)
        if not skipped:
            optimizer.step()
        return {"loss": loss.detach(), "skipped": float(skipped)}

    trainer = loss_fn.trainer = Engine(step)
    run = attach_monitoring(trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("loss", mode="min"), to_save={"model": model, "optimizer": optimizer},
                            early_stopping=None)
    with run:
        trainer.run(s["train_loader"], max_epochs=3)
    assert record(tmp_path / "run")["status"] == "completed" and skip.skipped == 1
    assert history(tmp_path / "run")["train_skipped"].tolist() == [0.0, 1 / STEPS, 0.0]

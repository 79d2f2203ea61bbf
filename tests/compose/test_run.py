"""End-to-end: the real attach_monitoring path on tiny models in a temp dir."""
import json
import math
import os
import threading
import time

import pandas as pd
import pytest
import torch
from ignite.engine import Events
from ignite.handlers import Checkpoint
from ignite.metrics import Accuracy
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import monitor
from monitor import Checkpoints, Console, EarlyStopping, Objective, attach_monitoring
from monitor.core import RunStatus, StopReason
from tests.conftest import ScriptedMetric, tiny_setup

SCRIPT = [0.9, 0.7, 0.8, 0.6, 0.65, 0.7, 0.75, 0.5, 0.4]  # best at 4; patience 3 stops at 7


def scripted_run(tmp_path, values=SCRIPT, patience=3, max_epochs=20, **kwargs):
    s = tiny_setup()
    evaluator = monitor.build_evaluator(s["model"], {"score": ScriptedMetric(values), "accuracy": Accuracy()})
    run = attach_monitoring(
        s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("score", mode="min"), to_save={"model": s["model"], "optimizer": s["optimizer"]},
        early_stopping=kwargs.pop("early_stopping", None if patience is None else EarlyStopping(patience=patience)),
        console=Console(log_every=2), **kwargs,
    )
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=max_epochs)
    return run, s


def test_early_stop_writes_a_complete_run_directory(tmp_path):
    run, s = scripted_run(tmp_path)
    run_dir = tmp_path / "run"
    assert s["trainer"].state.epoch == 7
    history = pd.read_csv(run_dir / "history.csv")
    assert history["epoch"].tolist() == list(range(1, 8))
    assert history["val_score"].tolist() == SCRIPT[:7]
    assert history["is_best"].tolist() == [True, True, False, True, False, False, False]
    assert list(history.columns[:2]) == ["epoch", "iteration"]
    assert {"elapsed_s", "epoch_s", "lr", "train_loss", "val_accuracy"} <= set(history.columns)
    assert history["iteration"].tolist() == [4 * e for e in range(1, 8)]
    assert history["elapsed_s"].is_monotonic_increasing

    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "early_stopped" and record["stop_reason"] == "patience_exhausted"
    assert record["epochs_completed"] == 7
    assert record["best"] == {
        "metric": "val_score", "mode": "min", "value": 0.6, "epoch": 4,
        "checkpoint": "checkpoints/best_epoch=4_val_score=0.6000.pt",
    }
    assert record["objective"]["metric"] == "score"
    assert record["versions"]["ignite"] == "0.5.5"
    assert len(record["segments"]) == 1 and record["segments"][0]["status"] == "early_stopped"
    assert (run_dir / record["best"]["checkpoint"]).exists()
    # The default cadence saves at validations within its budget, and at the end; the two newest are kept.
    last = sorted(p.name for p in (run_dir / "checkpoints").glob("last_*.pt"))
    assert "last_epoch=7.pt" in last and len(last) <= 2
    assert run.status is RunStatus.EARLY_STOPPED and run.stop_reason is StopReason.PATIENCE_EXHAUSTED
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))


def test_best_checkpoint_reproduces_the_best_row_and_tensorboard_matches_the_csv(tmp_path):
    s = tiny_setup(lr=0.5)
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("loss", mode="min"), to_save={"model": s["model"], "optimizer": s["optimizer"]},
        early_stopping=EarlyStopping(patience=3), checkpoints=Checkpoints(restore_best=False),
        console=Console(log_every=3),
    )
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=25)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    best_row = history[history["is_best"]].iloc[-1]
    assert best_row["val_loss"] == history["val_loss"].min()

    # Load the best checkpoint into a fresh model and recompute the validation metric.
    fresh = tiny_setup(seed=123)
    fresh["model"].load_state_dict(torch.load(run.best_checkpoint.last_checkpoint))
    metrics = fresh["evaluator"].run(s["val_loader"]).metrics
    assert metrics["loss"] == pytest.approx(best_row["val_loss"], rel=1e-6)
    assert metrics["accuracy"] == pytest.approx(best_row["val_accuracy"])

    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    for tag, column in (("val/loss", "val_loss"), ("val/accuracy", "val_accuracy"), ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [e.step for e in scalars] == history["iteration"].tolist()
        assert [e.value for e in scalars] == pytest.approx(history[column].tolist(), rel=1e-6)
    train_steps = [e.step for e in events.Scalars("train/loss")]
    assert train_steps == list(range(3, history["iteration"].iloc[-1] + 1, 3))


def test_restore_best_leaves_the_model_with_the_best_weights(tmp_path):
    run, s = scripted_run(tmp_path)
    best_weights = torch.load(tmp_path / "run" / "checkpoints" / "best_epoch=4_val_score=0.6000.pt")
    last = torch.load(tmp_path / "run" / "checkpoints" / "last_epoch=7.pt")["model"]
    for name, tensor in s["model"].state_dict().items():
        assert torch.equal(tensor, best_weights[name])
        assert not torch.equal(tensor, last[name])


def test_target_and_max_epochs_are_recorded_as_stop_reasons(tmp_path):
    run, s = scripted_run(tmp_path, early_stopping=EarlyStopping(patience=3, target=0.65))
    assert run.stop_reason is StopReason.TARGET_REACHED and s["trainer"].state.epoch == 4
    run, s = scripted_run(tmp_path / "b", patience=None, max_epochs=3)
    assert run.stop_reason is StopReason.MAX_EPOCHS
    assert json.loads((tmp_path / "b" / "run" / "run.json").read_text())["status"] == "completed"


def test_nan_loss_stops_with_status_diverged(tmp_path):
    s = tiny_setup()
    calls = {"n": 0}

    def loss_fn(y_pred, y):
        calls["n"] += 1
        loss = torch.nn.functional.cross_entropy(y_pred, y)
        return loss * math.nan if calls["n"] == 7 else loss

    trainer = monitor.build_trainer(s["model"], s["optimizer"], loss_fn)
    run = attach_monitoring(
        trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / "run", objective=Objective("loss", mode="min"),
        to_save={"model": s["model"]}, console=Console(log_every=1),
    )
    with run:
        trainer.run(s["train_loader"], max_epochs=10)
    assert trainer.state.iteration == 7
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["status"], record["stop_reason"]) == ("diverged", "nonfinite_loss")


def test_an_exception_is_raised_to_the_user_and_recorded_as_failed(tmp_path):
    s = tiny_setup()

    @s["trainer"].on(Events.EPOCH_COMPLETED(once=2))
    def crash(_):
        raise RuntimeError("out of memory, say")

    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("loss", mode="min"), to_save={"model": s["model"]},
    )
    with pytest.raises(RuntimeError, match="out of memory, say"):
        with run:
            s["trainer"].run(s["train_loader"], max_epochs=5)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "failed" and "out of memory, say" in record["error"]
    # The crash handler was attached first, so it ran before epoch 2's validation: one row, whole.
    assert pd.read_csv(tmp_path / "run" / "history.csv")["epoch"].tolist() == [1]


def test_ctrl_c_is_recorded_as_interrupted(tmp_path):
    s = tiny_setup()
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED(once=6), lambda _: (_ for _ in ()).throw(KeyboardInterrupt))
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("loss", mode="min"), to_save={"model": s["model"]},
    )
    with pytest.raises(KeyboardInterrupt):
        with run:
            s["trainer"].run(s["train_loader"], max_epochs=5)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"


def test_users_still_attach_plain_ignite_handlers(tmp_path):
    s = tiny_setup()
    seen = []
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED(every=2), lambda e: seen.append(e.state.iteration))
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("accuracy", mode="max"), to_save={"model": s["model"]},
    )
    assert isinstance(run.best_checkpoint, Checkpoint)  # Ignite's own class, not a copy
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=2)
    assert seen == [2, 4, 6, 8]


@pytest.mark.parametrize("background, writer_thread", [(True, "monitor-writer"), (False, "MainThread")])
def test_checkpoints_are_written_off_the_training_thread_yet_hold_the_state_of_their_epoch(
    tmp_path, monkeypatch, background, writer_thread
):
    fsync, pt_fsyncs = os.fsync, []

    def slow_fsync(fd):  # a slow disk: training runs ahead of the writes
        if ".pt" in os.readlink(f"/proc/self/fd/{fd}"):
            pt_fsyncs.append(threading.current_thread().name)
        time.sleep(0.01)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    s = tiny_setup()
    evaluator = monitor.build_evaluator(s["model"], {"score": ScriptedMetric(SCRIPT)})
    run = attach_monitoring(
        s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("score", mode="min"), to_save={"model": s["model"], "optimizer": s["optimizer"]},
        early_stopping=EarlyStopping(patience=3),
        checkpoints=Checkpoints(restore_best=False, background_writes=background),
    )
    weights = {}
    s["trainer"].add_event_handler(
        Events.EPOCH_COMPLETED, lambda t: weights.setdefault(t.state.epoch, {k: v.clone() for k, v in s["model"].state_dict().items()})
    )
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=20)
    assert pt_fsyncs and set(pt_fsyncs) == {writer_thread}
    checkpoints = tmp_path / "run" / "checkpoints"
    best = torch.load(checkpoints / "best_epoch=4_val_score=0.6000.pt")
    last = torch.load(checkpoints / "last_epoch=7.pt")["model"]
    for key in weights[4]:
        assert torch.equal(best[key], weights[4][key]) and torch.equal(last[key], weights[7][key])
    assert not torch.equal(weights[4]["0.weight"], weights[7]["0.weight"])

"""Faults and misuses found in an adversarial review (issue #11): each gets a clear error or a fix."""
import errno
import json
import logging
import math
import os
import shutil
import signal

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Metric
from torch.utils.data import DataLoader, TensorDataset

import monitor
from monitor import Checkpoints, EarlyStopping, Objective, attach_monitoring, load_run
from tests.conftest import ScriptedMetric, own_step_trainer, tiny_setup
from tests.crash_helpers import case_study
from tests.runs import final_state, start


def attach(s, run_dir, **kwargs):
    kwargs.setdefault("objective", Objective("loss", mode="min"))
    kwargs.setdefault("to_save", {"model": s["model"], "optimizer": s["optimizer"]})
    return attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir, **kwargs)


# -- 1. a checkpoint is verifiable on its own ---------------------------------------------------------------

@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("whole")
    _, s = start(run_dir)
    return final_state(run_dir, s)


@pytest.mark.parametrize("manifest", ["missing", "empty", "garbage"])
def test_a_flipped_byte_is_caught_even_without_the_manifest(tmp_path, whole, caplog, manifest):
    start(tmp_path, crash_at_iteration=23)  # last checkpoints of epochs 4 and 5
    checkpoints = tmp_path / "checkpoints"
    newest = checkpoints / "last_epoch=5.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01  # torch.load would load this as wrong weights
    newest.write_bytes(bytes(data))
    if manifest == "missing":
        (checkpoints / "manifest.json").unlink()
    else:
        (checkpoints / "manifest.json").write_text("{}" if manifest == "empty" else "not json at all")
    with caplog.at_level(logging.WARNING, logger="monitor"):
        _, s = start(tmp_path, resume=True)
    assert f"'{newest}'" in caplog.text and "checksum" in caplog.text
    assert (checkpoints / "last_epoch=5.pt.damaged").exists()
    history, _, weights = final_state(tmp_path, s)
    pd.testing.assert_frame_equal(history, whole[0])
    assert all(torch.equal(weights[k], whole[2][k]) for k in weights)


def test_every_checkpoint_carries_its_checksum_and_torch_load_still_reads_it(tmp_path):
    from monitor.store.manifest import read_trailer

    start(tmp_path, max_epochs=2, patience=None)
    for path in (tmp_path / "checkpoints").glob("*.pt"):
        size, crc = read_trailer(path)
        assert size < path.stat().st_size
        assert isinstance(torch.load(path, weights_only=True), dict)


def test_an_unverifiable_checkpoint_is_loaded_only_with_a_warning_naming_it(tmp_path, caplog):
    path = tmp_path / "best_epoch=1_neg_val_loss=-0.5000.pt"
    torch.save({"w": torch.ones(2)}, path)  # another tool's file: no checksum, no manifest
    with caplog.at_level(logging.WARNING, logger="monitor"):
        monitor.compose.rundir.load_checkpoint(path)
    assert f"'{path}'" in caplog.text and "cannot be verified" in caplog.text


# -- 3. the folder deleted under a running writer ---------------------------------------------------------

def test_a_run_whose_folder_is_deleted_stops_and_writes_nothing_into_a_new_one(tmp_path):
    s = tiny_setup()
    run_dir = tmp_path / "run"
    run = attach(s, run_dir, early_stopping=None)

    @s["trainer"].on(Events.EPOCH_COMPLETED(once=2))
    def delete_and_reuse(_):
        run.flush()  # the test's own rmtree must not race the background writer
        shutil.rmtree(run_dir)
        run_dir.mkdir()  # as a second process would, taking the folder over
        (run_dir / "other").write_text("someone else's run")

    with pytest.raises(monitor.RunDirectoryLost, match=f"'{run_dir}'.*removed or replaced"):
        with run:
            s["trainer"].run(s["train_loader"], max_epochs=5)
    assert sorted(p.name for p in run_dir.iterdir()) == ["other"]


# -- 4 and 5. a dead run is told from a live one; a failure that cannot be recorded says so -----------------

def test_a_killed_run_is_reported_as_crashed_and_report_and_compare_agree(tmp_path):
    run_dir = tmp_path / "run"
    assert case_study(run_dir, env={"MONITOR_CRASH_AT": "after_history_row:3"}) == -signal.SIGKILL
    run = load_run(run_dir)
    assert run.record["status"] == "running" and run.status == "crashed"
    assert run.epochs == 3 == monitor.compare([run])["epochs"].iloc[0]
    assert run.best["epoch"] == int(run.history[run.history["is_best"]]["epoch"].iloc[-1])
    text = run.summary()
    assert "status      crashed" in text and "epochs      3" in text and "at epoch None" not in text


def test_a_failure_that_cannot_be_recorded_is_said_clearly_in_the_log(tmp_path, monkeypatch, caplog):
    s = tiny_setup()
    run_dir = tmp_path / "run"
    run = attach(s, run_dir, early_stopping=None, checkpoints=Checkpoints(background_writes=False))
    replace = os.replace

    def read_only(src, dst):
        if s["trainer"].state.epoch >= 2:
            raise OSError(errno.EROFS, "Read-only file system")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", read_only)
    with caplog.at_level(logging.ERROR, logger="monitor"), pytest.raises(OSError, match="Read-only file system: '"):
        with run:
            s["trainer"].run(s["train_loader"], max_epochs=5)
    assert "run.json still says 'running'" in caplog.text and "Read-only file system" in caplog.text
    monkeypatch.setattr(os, "replace", replace)
    assert load_run(run_dir).status == "crashed"


# -- 6. baseline and "best" agree ----------------------------------------------------------------------------

def test_a_value_that_does_not_beat_the_baseline_is_never_best(tmp_path):
    s = tiny_setup()
    evaluator = monitor.build_evaluator(s["model"], {"score": ScriptedMetric([0.4, 0.45, 0.6, 0.55])})
    run = attach_monitoring(
        s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("score", mode="max"), to_save={"model": s["model"]},
        early_stopping=EarlyStopping(patience=5, baseline=0.5),
    )
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=4)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["is_best"].tolist() == [False, False, True, False]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("best_*")] == ["best_epoch=3_val_score=0.6000.pt"]
    assert run.best.best_epoch == 3 and run.early_stopping.best_score == 0.6


# -- 7. the LR an epoch trained with -------------------------------------------------------------------------

def test_lr_is_the_one_the_epoch_trained_with_whatever_the_handler_order(tmp_path):
    s = tiny_setup()
    scheduler = torch.optim.lr_scheduler.StepLR(s["optimizer"], step_size=1, gamma=0.5)
    s["trainer"].add_event_handler(Events.EPOCH_COMPLETED, lambda _: scheduler.step())  # before attach, as users do
    run = attach(
        s, tmp_path / "run",
        to_save={"model": s["model"], "optimizer": s["optimizer"],
                                                               "scheduler": scheduler},
        early_stopping=None,
    )
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=3)
    assert pd.read_csv(tmp_path / "run" / "history.csv")["lr"].tolist() == [0.1, 0.05, 0.025]
    lr = load_run(tmp_path / "run").scalars
    assert lr[lr["tag"] == "lr"]["value"].tolist() == pytest.approx([0.1, 0.05, 0.025])


def halved_each_iteration(s):
    """A scheduler halving the rate after each iteration, and its handler (to attach where the test says)."""
    scheduler = torch.optim.lr_scheduler.StepLR(s["optimizer"], step_size=1, gamma=0.5)
    return scheduler, lambda _: scheduler.step()


@pytest.mark.parametrize("trainer", ["build_trainer", "own step"])
@pytest.mark.parametrize("when", ["before monitoring", "after monitoring"])
def test_lr_is_the_epochs_last_steps_with_a_scheduler_stepped_at_each_iteration(tmp_path, when, trainer):
    # Read in the optimizer's step, whatever the trainer's step function and the handlers' order: the lr
    # column is the last step's rate.
    s = tiny_setup()
    if trainer == "own step":
        s["trainer"] = own_step_trainer(s["model"], s["optimizer"], s["loss_fn"])
    scheduler, step_scheduler = halved_each_iteration(s)
    if when == "before monitoring":
        s["trainer"].add_event_handler(Events.ITERATION_COMPLETED, step_scheduler)
    run = attach(s, tmp_path / "run", to_save={"model": s["model"], "optimizer": s["optimizer"],
                                               "scheduler": scheduler}, early_stopping=None)
    if when == "after monitoring":
        s["trainer"].add_event_handler(Events.ITERATION_COMPLETED, step_scheduler)
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=2)
    # 4 steps an epoch: epoch e's last step is the (4e)-th, trained after 4e - 1 halvings
    assert pd.read_csv(tmp_path / "run" / "history.csv")["lr"].tolist() == pytest.approx([0.1 / 2**3, 0.1 / 2**7])


def test_lr_with_gradient_accumulation_is_the_last_optimizer_steps(tmp_path):
    s = tiny_setup()
    trainer = monitor.build_trainer(s["model"], s["optimizer"], s["loss_fn"], gradient_accumulation_steps=2)
    scheduler, step_scheduler = halved_each_iteration(s)
    three_batches = DataLoader(torch.utils.data.Subset(s["train_loader"].dataset, range(48)), batch_size=16)
    run = attach_monitoring(trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("loss", mode="min"), early_stopping=None,
                            to_save={"model": s["model"], "optimizer": s["optimizer"], "scheduler": scheduler})
    trainer.add_event_handler(Events.ITERATION_COMPLETED, step_scheduler)
    with run:
        trainer.run(three_batches, max_epochs=2)
    # the optimizer steps at iterations 2, 4 and 6: epoch 1's last at iteration 2 (after 1 halving), not 3
    assert pd.read_csv(tmp_path / "run" / "history.csv")["lr"].tolist() == pytest.approx([0.1 / 2, 0.1 / 2**5])


# -- 8 and 10. metrics and outputs of the wrong shape ----------------------------------------------------------

class Constant(Metric):
    def __init__(self, value):
        self.value = value
        super().__init__()

    def reset(self):
        pass

    def update(self, output):
        pass

    def compute(self):
        return self.value


def test_a_multi_element_metric_gets_a_column_per_element(tmp_path):
    s = tiny_setup()
    evaluator = monitor.build_evaluator(s["model"], {"loss": Constant(0.5), "precision": Constant(torch.tensor([0.2, 0.8]))})
    with attach_monitoring(s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path / "run",
                           objective=Objective("loss", mode="min"), to_save={"model": s["model"]}):
        s["trainer"].run(s["train_loader"], max_epochs=1)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history[["val_precision_0", "val_precision_1"]].values.tolist() == [[pytest.approx(0.2), pytest.approx(0.8)]]


@pytest.mark.parametrize("value, match", [
    (torch.tensor([0.2, 0.8]), r"Objective metric 'precision' should be one number, got a tensor of shape \(2,\)"),
    ({"a": 0.1, "b": 0.2}, r"Objective metric 'precision' should be one number, got a dict with keys \['a', 'b'\]"),
])
def test_an_objective_metric_that_is_not_one_number_is_named_at_the_first_validation(tmp_path, value, match):
    s = tiny_setup()
    evaluator = monitor.build_evaluator(s["model"], {"precision": Constant(value)})
    run = attach_monitoring(s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("precision", mode="max"), to_save={"model": s["model"]})
    with pytest.raises(TypeError, match=match), run:
        s["trainer"].run(s["train_loader"], max_epochs=3)
    assert s["trainer"].state.epoch == 1


def test_a_trainer_output_without_loss_is_named_at_the_first_iteration(tmp_path):
    s = tiny_setup()
    trainer = Engine(lambda e, b: {"total": torch.tensor(1.0), "acc": 0.5})
    run = attach_monitoring(trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                            objective=Objective("loss", mode="min"), to_save={"model": s["model"]})
    with pytest.raises(KeyError, match=r"trainer.state.output should hold the loss under 'loss'; got a mapping "
                                       r"with keys \['acc', 'total'\]"), run:
        trainer.run(s["train_loader"], max_epochs=2)
    assert trainer.state.iteration == 1


# -- 9, 14. refused at attach ------------------------------------------------------------------------------------

def test_an_empty_validation_loader_is_refused_at_attach(tmp_path):
    s = tiny_setup()
    empty = DataLoader(TensorDataset(torch.zeros(0, 8), torch.zeros(0).long()), batch_size=4)
    with pytest.raises(ValueError, match=r"val_loader should yield at least one batch, got an empty DataLoader \(len 0\)"):
        attach_monitoring(s["trainer"], s["evaluator"], empty, run_dir=tmp_path / "run",
                          objective=Objective("loss", mode="min"), to_save={"model": s["model"]})
    assert not (tmp_path / "run").exists()


def test_to_save_without_a_model_names_its_keys_not_their_repr(tmp_path):
    s = tiny_setup()
    with pytest.raises(ValueError) as error:
        attach(s, tmp_path / "run", to_save={"net": s["model"], "optimizer": s["optimizer"]})
    assert str(error.value) == ("Argument to_save should be a mapping with at least a 'model' entry, "
                                "got keys ['net', 'optimizer'].")


# -- 11, 12. what a resume may change -----------------------------------------------------------------------------

def test_resume_with_fewer_best_files_applies_the_new_n_saved(tmp_path, caplog):
    start(tmp_path, crash_at_iteration=30, patience=None)
    assert len(list((tmp_path / "checkpoints").glob("best_*.pt"))) >= 2
    s = tiny_setup(lr=0.5)
    with caplog.at_level(logging.INFO, logger="monitor"), attach(
        s, tmp_path, resume=True, early_stopping=None, checkpoints=Checkpoints(n_saved=1, restore_best=False),
    ):
        s["trainer"].run(s["train_loader"], max_epochs=10)
    assert "n_saved changed from 3 to 1" in caplog.text
    best = list((tmp_path / "checkpoints").glob("best_*.pt"))
    assert len(best) == 1 and json.loads((tmp_path / "run.json").read_text())["n_saved"] == 1
    assert best[0].name == json.loads((tmp_path / "run.json").read_text())["best"]["checkpoint"].split("/")[-1]


def test_resume_with_another_patience_applies_it_and_says_so(tmp_path, caplog):
    start(tmp_path, crash_at_iteration=10, patience=4)
    s = tiny_setup(lr=0.5)
    with caplog.at_level(logging.INFO, logger="monitor"), attach(
        s, tmp_path, resume=True, early_stopping=EarlyStopping(patience=2),
    ):
        s["trainer"].run(s["train_loader"], max_epochs=30)
    assert "patience changed from 4 to 2" in caplog.text
    assert json.loads((tmp_path / "run.json").read_text())["early_stopping"]["patience"] == 2


def test_resume_with_another_optimizer_is_refused_at_attach_naming_both(tmp_path):
    start(tmp_path, crash_at_iteration=10)
    s = tiny_setup()
    adam = torch.optim.Adam(s["model"].parameters())
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.raises(ValueError, match=r"to_save\['optimizer'\] is Adam; the run was saved with SGD"):
        attach(s, tmp_path, to_save={"model": s["model"], "optimizer": adam}, resume=True)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_resume_with_max_epochs_below_the_checkpoint_is_refused_and_changes_no_file(tmp_path):
    start(tmp_path, crash_at_iteration=23)  # epoch 5 saved; history has 5 rows
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"}
    s = tiny_setup(lr=0.5)
    with pytest.raises(ValueError, match=r"Cannot resume .* at epoch 5 with max_epochs=3: .*max_epochs >= 5"):
        with attach(s, tmp_path, resume=True):
            s["trainer"].run(s["train_loader"], max_epochs=3)
    # Every file is as it was (TensorBoard's new event file for this segment holds no point).
    assert {p: p.read_bytes() for p in before} == before


# -- 13. unique best filenames ---------------------------------------------------------------------------------------

def test_validations_within_an_epoch_keep_n_saved_distinct_best_files(tmp_path):
    s = tiny_setup()
    values = [0.50004, 0.50003, 0.50002, 0.50001]  # improvements that round to the same 4 decimals
    evaluator = monitor.build_evaluator(s["model"], {"loss": ScriptedMetric(values), "accuracy": Accuracy()})
    run = attach_monitoring(
        s["trainer"], evaluator, s["val_loader"], run_dir=tmp_path / "run", objective=Objective("loss", mode="min"),
        to_save={"model": s["model"]}, validate_on=Events.ITERATION_COMPLETED(every=1), early_stopping=None,
        checkpoints=Checkpoints(n_saved=3),
    )
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=1)  # 4 iterations, 4 validations, all in epoch 1
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("best_*.pt"))
    assert len(names) == 3, names
    assert math.isclose(load_run(tmp_path / "run").best["value"], 0.50001)

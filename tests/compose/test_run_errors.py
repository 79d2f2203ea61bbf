"""Bad input is refused when attaching, naming the value and what would be accepted."""
import pytest
import torch
from ignite.handlers import TensorboardLogger
from torch import nn

import monitor
from monitor import Checkpoints, Console, EarlyStopping, LROnPlateau, Objective, Record, attach_monitoring
from tests.conftest import tiny_setup


def attach(tmp_path, s=None, **overrides):
    s = s or tiny_setup()
    kwargs = dict(
        run_dir=tmp_path / "run", objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]},
    )
    kwargs.update(overrides)
    return attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], **kwargs)


def test_unknown_objective_metric_is_refused_at_attach_listing_the_metrics(tmp_path):
    with pytest.raises(KeyError, match=r"'val_loss' is not attached to the evaluator; available: \['accuracy', 'loss'\]"):
        attach(tmp_path, objective=Objective("val_loss", mode="min"))


def test_a_directory_holding_a_run_is_refused_without_resume_or_overwrite(tmp_path):
    s = tiny_setup()
    with attach(tmp_path, s):
        s["trainer"].run(s["train_loader"], max_epochs=1)
    with pytest.raises(ValueError, match=r"already holds a run \(status 'completed', 1 epochs\); pass resume=True"):
        attach(tmp_path)


def test_overwrite_replaces_the_previous_run(tmp_path):
    s = tiny_setup()
    with attach(tmp_path, s):
        s["trainer"].run(s["train_loader"], max_epochs=3)
    s = tiny_setup()
    with attach(tmp_path, s, overwrite=True):
        s["trainer"].run(s["train_loader"], max_epochs=1)
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 2
    assert [p.name for p in (tmp_path / "run" / "checkpoints").glob("last_*")] == ["last_epoch=1.pt"]


def test_run_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(ValueError, match="run_dir should be a directory, got the file"):
        attach(tmp_path)


def test_unwritable_run_dir_is_refused_at_attach(tmp_path, monkeypatch):
    # CI runs as root, where chmod proves nothing: inject the error the OS would give.
    import monitor.compose.rundir

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(monitor.compose.rundir.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match="cannot be written: .*Permission denied"):
        attach(tmp_path)


@pytest.mark.parametrize(
    "overrides, error, match",
    [
        (lambda: dict(early_stopping=EarlyStopping(patience=0)), ValueError,
         "patience should be a positive integer or None, got 0"),
        (lambda: dict(checkpoints=Checkpoints(n_saved=0)), ValueError, "n_saved should be a positive integer, got 0"),
        (lambda: dict(to_save={"optimizer": None}), ValueError,
         "to_save should be a mapping with at least a 'model' entry"),
        (lambda: dict(to_save={"model": "weights.pt"}), TypeError,
         r"to_save\['model'\] should be a torch.nn.Module, got str"),
        (lambda: dict(to_save={"model": nn.Linear(1, 1), "trainer": nn.Linear(1, 1)}), ValueError,
         "should not use the key 'trainer'"),
        (lambda: dict(objective="loss"), TypeError, "objective should be a monitor.Objective, got 'loss'"),
        (lambda: dict(console=Console(log_every=0)), ValueError, "log_every should be a positive integer, got 0"),
        (lambda: dict(early_stopping=EarlyStopping(target="high")), ValueError,
         "target should be a number or None, got .high."),
        (lambda: dict(resume=True, overwrite=True), ValueError, "resume and overwrite should not both be True"),
        (lambda: dict(checkpoints=Checkpoints(every="hourly")), TypeError,
         "Argument every should be an ignite event .* got 'hourly'"),
        (lambda: dict(record=Record(hparams=[("lr", 0.1)])), TypeError,
         r"hparams should be a mapping of names to values, got \[\('lr', 0.1\)\]"),
        (lambda: dict(early_stopping=10), TypeError, "early_stopping should be a monitor.EarlyStopping or None, got 10"),
        (lambda: dict(parts=[object()]), TypeError, "parts should hold parts .*got <object object"),
        (lambda: dict(parts=[LROnPlateau(), LROnPlateau()]), ValueError, "key 'lr_on_plateau' is taken"),
        # issue #29: accepted before, or failed late naming no argument
        (lambda: dict(resume="yes"), TypeError, "Argument resume should be True or False, got 'yes'"),
        (lambda: dict(run_dir=None), TypeError, r"Argument run_dir should be a folder .*, got None"),
        (lambda: dict(parts=[monitor.Recovery]), TypeError,
         r"parts should hold parts \(instances\), got the class Recovery; pass Recovery\(...\)"),
        (lambda: dict(record=Record(hparams={"lr": torch.tensor(0.1)})), TypeError,
         r"hparams should hold plain values .* got 'lr': tensor\(0.1000\) \(Tensor\)"),
        (lambda: dict(parts=[monitor.Tracker(TensorboardLogger)]), TypeError,
         "ignite_logger should be an Ignite logger .*got the class TensorboardLogger"),
        (lambda: dict(parts=[monitor.Tracker(_Logger(), tag=123)]), TypeError, "tag should be a non-empty name"),
        (lambda: dict(parts=[monitor.MLflow(123)]), TypeError, "tracking_uri should be a URI .*got 123"),
        (lambda: dict(parts=[monitor.MLflow("htp://localhost:5000")]), ValueError,
         "tracking_uri should have a scheme MLflow knows .*got 'htp://localhost:5000'"),
        (lambda: dict(parts=[monitor.MLflow("not a uri://x")]), ValueError, "tracking_uri should have a scheme"),
        (lambda: dict(parts=[monitor.MLflow(timeout=float("inf"))]), ValueError,
         "timeout should be a positive, finite number of seconds, got inf"),
        (lambda: dict(parts=[monitor.MLflow(log_checkpoint="no")]), TypeError,
         "log_checkpoint should be True or False, got 'no'"),
        (lambda: dict(parts=[monitor.MLflow(run_name=123)]), TypeError, "run_name should be a name"),
        (lambda: dict(parts=[monitor.OptunaPruning(_frozen_trial())]), TypeError,
         "trial should be the optuna.trial.Trial the study passes to its objective function"),
    ],
)
def test_bad_arguments(tmp_path, overrides, error, match):
    # (each setting checks itself where it is made, so the bad value fails on the line that wrote it)
    with pytest.raises(error, match=match):
        attach(tmp_path, **overrides())
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("keyword, replacement", [
    ("patience", r"early_stopping=EarlyStopping\(patience=...\)"),
    ("n_saved", r"checkpoints=Checkpoints\(n_saved=...\)"),
    ("checkpoint_every", r"checkpoints=Checkpoints\(every=...\)"),
    ("log_every", r"console=Console\(log_every=...\)"),
    ("seed", r"record=Record\(seed=...\)"),
    ("lr_on_plateau", r"parts=\[LROnPlateau\(...\)\]"),
])
def test_a_keyword_of_the_flat_api_names_its_replacement(tmp_path, keyword, replacement):
    with pytest.raises(TypeError, match=rf"no longer takes {keyword}=; pass {replacement} instead"):
        attach(tmp_path, **{keyword: 3})
    with pytest.raises(TypeError, match="unexpected keyword argument 'patiense'"):
        attach(tmp_path, patiense=3)
    assert not (tmp_path / "run").exists()


def test_a_folder_an_unprivileged_user_cannot_write_is_refused_at_start(tmp_path):
    # CI runs as root, for whom chmod proves nothing. The child imports everything as root (the
    # repository may not be readable by others), then drops to "nobody" before attaching.
    import os
    import subprocess
    import sys

    if os.geteuid() != 0:
        pytest.skip("needs root to start a child that drops to an unprivileged user")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o755)  # root's: others may read and enter, not write
    script = f"""
import os, sys
sys.path.insert(0, {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))!r})
from tests.conftest import tiny_setup
from monitor import Checkpoints, Console, EarlyStopping, LROnPlateau, Objective, Record, attach_monitoring
s = tiny_setup()
os.setgroups([]); os.setgid(65534); os.setuid(65534)
attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir={str(folder / "run")!r},
                  objective=Objective("loss", mode="min"), to_save={{"model": s["model"]}})
"""
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert child.returncode != 0
    assert f"PermissionError: Run directory '{folder / 'run'}' cannot be written" in child.stderr, child.stderr[-2000:]
    assert not (folder / "run").exists()


class _Logger:
    def attach_output_handler(self, *args, **kwargs):
        pass


def _frozen_trial():
    import optuna

    study = optuna.create_study()
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    return study.trials[0]  # a FrozenTrial: it has report() and should_prune() too, but they do nothing


def test_a_trainers_skip_step_or_scaler_is_kept_under_its_key_and_another_object_there_is_refused(tmp_path):
    s = tiny_setup()
    skip = monitor.SkipStep()
    trainer = monitor.build_trainer(s["model"], s["optimizer"], nn.CrossEntropyLoss(), skip_step=skip)
    other = monitor.SkipStep()
    with pytest.raises(ValueError, match=r"to_save\['skip_step'\] is a SkipStep that is not the trainer's "
                                         r"\(trainer.state.skip_step, a SkipStep\)"):
        attach(tmp_path, {**s, "trainer": trainer}, to_save={"model": s["model"], "optimizer": s["optimizer"],
                                                            "skip_step": other})
    assert not (tmp_path / "run").exists()  # refused before the folder

    class Scaler(monitor.Part):
        key = "scaler"

        def attach(self, context):
            pass

    with pytest.raises(ValueError, match="part whose key 'scaler' is taken"):
        attach(tmp_path, parts=[Scaler()])
    run = attach(tmp_path, {**s, "trainer": trainer}, to_save={"model": s["model"], "optimizer": s["optimizer"],
                                                               "skip_step": skip})  # the same object: the user's key
    run.close()

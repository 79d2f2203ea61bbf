"""Contract test over every optional part in monitor.parts, found by looking: it follows the Part
protocol, attaches through attach_monitoring(parts=[...]), records its settings in run.json, is in
the last checkpoint under its key, and a run stopped and resumed ends as the same run uninterrupted."""
import importlib
import inspect
import json
import pkgutil
import tempfile

import pandas as pd
import pytest
import torch
from ignite.engine import Events

import monitor.parts
from monitor import (
    Checkpoints,
    Console,
    GradNorm,
    LROnPlateau,
    MLflow,
    Objective,
    OptunaPruning,
    Part,
    Recovery,
    Tracker,
    attach_monitoring,
)
from monitor.store.history import TIMING_COLUMNS
from tests.conftest import tiny_setup

MLFLOW_FOLDER = tempfile.mkdtemp(prefix="test_parts_mlflow-")
MLFLOW_STORE = f"sqlite:///{MLFLOW_FOLDER}/mlflow.db"  # one store: a resume finds its run


def _mlflow_part():
    """The part, its experiment made first with artifacts in the temporary folder (MLflow's default
    for a SQLite store is ./mlruns in the working directory: the repository's, under pytest)."""
    mlflow = pytest.importorskip("mlflow")
    client = mlflow.MlflowClient(MLFLOW_STORE)
    if client.get_experiment_by_name("parts") is None:
        client.create_experiment("parts", artifact_location=f"{MLFLOW_FOLDER}/artifacts")
    return MLflow(MLFLOW_STORE, experiment="parts")


def _optuna_trial():
    return pytest.importorskip("optuna").create_study(direction="minimize").ask()


def _tensorboard_logger():
    from ignite.handlers import TensorboardLogger

    return TensorboardLogger(log_dir=tempfile.mkdtemp(prefix="test_parts_tracker-"))


MAKERS = {
    LROnPlateau: lambda: LROnPlateau(patience=1, factor=0.5),
    GradNorm: GradNorm,
    Recovery: lambda: Recovery(keep_every=4),
    MLflow: _mlflow_part,
    OptunaPruning: lambda: OptunaPruning(_optuna_trial()),
    Tracker: lambda: Tracker(_tensorboard_logger()),
}
# What may differ between a run and the same run resumed: another process's tracker run
DIFFERS = {MLflow: {"run_id"}}
# a column that shows the part at work (Recovery shows in run.json's recoveries: tests/handlers/test_recovery.py)
COLUMNS = {LROnPlateau: "lr", GradNorm: "train_grad_norm", Recovery: "train_loss", MLflow: "train_loss",
           OptunaPruning: "train_loss", Tracker: "train_loss"}


def same_state(a, b):
    """State dicts equal, tensors compared by value."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_state, a, b))
    return a == b


def discovered_parts():
    found = set()
    for info in pkgutil.iter_modules(monitor.parts.__path__):
        module = importlib.import_module(f"monitor.parts.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, Part) and cls is not Part:
                found.add(cls)
    return found


def test_every_part_has_a_maker_and_follows_the_protocol():
    assert discovered_parts() == set(MAKERS), "add a maker for each new part"
    for make in MAKERS.values():
        assert isinstance(make(), Part)


def run(run_dir, part, *, max_epochs, resume=False, crash_in_epoch=None):
    s = tiny_setup(lr=0.5)
    if crash_in_epoch is not None:  # killed in the middle of that epoch, after its last checkpoint
        at = (crash_in_epoch - 1) * len(s["train_loader"]) + len(s["train_loader"]) // 2

        @s["trainer"].on(Events.ITERATION_COMPLETED(once=at))
        def crash(_):
            raise RuntimeError("killed")
    watch = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, early_stopping=None, parts=[part],
        checkpoints=Checkpoints(every=Events.EPOCH_COMPLETED, restore_best=False), console=Console(log_every=1),
        resume=resume,
    )
    with watch:
        if crash_in_epoch is None:
            s["trainer"].run(s["train_loader"], max_epochs=max_epochs)
        else:
            with pytest.raises(RuntimeError, match="killed"):
                s["trainer"].run(s["train_loader"], max_epochs=max_epochs)
    return s


@pytest.mark.parametrize("cls", sorted(MAKERS, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_a_part_is_recorded_checkpointed_and_resumes_exactly(tmp_path, cls):
    whole = MAKERS[cls]()
    s_whole = run(tmp_path / "whole", whole, max_epochs=6)
    run(tmp_path / "split", MAKERS[cls](), max_epochs=6, crash_in_epoch=4)
    last = torch.load(next((tmp_path / "split" / "checkpoints").glob("last_*.pt")), weights_only=False)
    assert cls.key in last
    resumed = MAKERS[cls]()
    s_split = run(tmp_path / "split", resumed, max_epochs=6, resume=True)

    record = json.loads((tmp_path / "whole" / "run.json").read_text())
    assert record[cls.key] == dict(whole.config())
    histories = [pd.read_csv(tmp_path / name / "history.csv").drop(columns=list(TIMING_COLUMNS))
                 for name in ("whole", "split")]
    assert COLUMNS[cls] in histories[0]
    pd.testing.assert_frame_equal(histories[0], histories[1])
    differs = DIFFERS.get(cls, set())
    assert same_state({k: v for k, v in resumed.state_dict().items() if k not in differs},
                      {k: v for k, v in whole.state_dict().items() if k not in differs})
    for a, b in zip(s_whole["model"].parameters(), s_split["model"].parameters(), strict=True):
        assert torch.equal(a, b)


def test_lr_on_plateau_as_a_part_cuts_the_rate(tmp_path):
    run(tmp_path / "run", LROnPlateau(patience=1, factor=0.5), max_epochs=8)
    rates = pd.read_csv(tmp_path / "run" / "history.csv")["lr"]
    assert rates.iloc[-1] < rates.iloc[0]


class CountSteps(Part):
    """A part written with only what it must: a key and attach."""

    key = "count_steps"

    def __init__(self):
        self.steps = 0

    def attach(self, context):
        context.on_step(self.step)

    def step(self, trainer):
        self.steps += 1


def test_a_part_with_only_a_key_and_attach_runs_and_resumes(tmp_path):
    part = CountSteps()
    run(tmp_path / "run", part, max_epochs=2)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert part.steps == 2 * 4 and record["count_steps"] == {} and record["status"] == "completed"
    run(tmp_path / "run", CountSteps(), max_epochs=3, resume=True)  # its empty state is saved and loaded


@pytest.mark.parametrize("part, error, message", [
    (object(), TypeError, r"subclasses of monitor.Part, with a key and attach\), got <object object .*> \(object\)"),
    (type("NoKey", (Part,), {"attach": lambda self, context: None})(), ValueError,
     "Part NoKey should set key to a name .* got ''"),
    (type("NoAttach", (Part,), {"key": "no_attach"})(), NotImplementedError, r"NoAttach should define attach\(context\)"),
])
def test_a_part_missing_what_it_must_have_is_refused_by_name(tmp_path, part, error, message):
    with pytest.raises(error, match=message):
        run(tmp_path / "run", part, max_epochs=1)
    assert not (tmp_path / "run").exists()  # nothing left behind

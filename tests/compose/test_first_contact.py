"""What a first-time user meets with defaults only: the console talks, a kill costs at most one
validation, a finished run goes on, schedulers are kept, review finds the runs it is given."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests import warm

ROOT = Path(__file__).resolve().parents[2]

# The README's snippet, with data: defaults only, no logging configured.
SNIPPET = """
import sys
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from ignite.metrics import Accuracy, Loss
import monitor
{setup}
torch.manual_seed(0)
x = torch.randn(400, 8); y = (x[:, 0] > 0).long()
train_loader = DataLoader(TensorDataset(x[:300], y[:300]), batch_size=3, shuffle=True)
val_loader = DataLoader(TensorDataset(x[300:], y[300:]), batch_size=50)
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
loss_fn = nn.CrossEntropyLoss()
trainer = monitor.build_trainer(model, optimizer, loss_fn)
evaluator = monitor.build_evaluator(model, {{"accuracy": Accuracy(), "loss": Loss(loss_fn)}})
run = monitor.attach_monitoring(
    trainer, evaluator, val_loader, run_dir=sys.argv[1],
    objective=monitor.Objective("loss", mode="min"), to_save={{"model": model, "optimizer": optimizer}},
    early_stopping=None, {kwargs}
)
{after}
with run:
    trainer.run(train_loader, max_epochs={max_epochs})
"""


def run_snippet(tmp_path, *, setup="", kwargs="", after="", max_epochs=3, check=True, fresh=True):
    """The snippet in a fresh interpreter, as a user runs it (the logging tests need that), or not ``fresh``:
    forked from one with torch and Ignite imported (tests/warm.py), seconds sooner."""
    script = tmp_path / "snippet.py"
    script.write_text(textwrap.dedent(SNIPPET.format(setup=setup, kwargs=kwargs, after=after, max_epochs=max_epochs)))
    args = [sys.executable, str(script), str(tmp_path / "run")]
    if not fresh:
        done = warm.run(args, cwd=ROOT, timeout=300)
        assert not check or done.returncode == 0, done.stderr[-3000:]
        return done
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=check)


def test_with_no_logging_configured_the_snippet_prints_its_table_and_ignite_stays_quiet(tmp_path):
    out = run_snippet(tmp_path)
    lines = out.stderr.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "iter"])
    assert [line.split()[0] for line in lines[header + 1:] if line.split()[0].isdigit()] == ["1", "2", "3"]
    assert any(line.startswith(f"Run {tmp_path / 'run'} ended: completed (max_epochs)") for line in lines)
    assert "Engine run" not in out.stderr and out.stdout == ""


def test_logging_the_user_configured_wins_and_prints_each_line_once(tmp_path):
    setup = 'import logging; logging.basicConfig(level=logging.INFO, format="LOG %(message)s", stream=sys.stdout)'
    out = run_snippet(tmp_path, setup=setup)
    assert out.stderr == ""
    epoch_lines = [line for line in out.stdout.splitlines() if line.split()[1:2] == ["1"]]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("LOG ")


def test_console_quiet_prints_nothing(tmp_path):
    out = run_snippet(tmp_path, kwargs="console=monitor.Console(quiet=True),")
    assert (out.stdout, out.stderr) == ("", "")
    assert (tmp_path / "run" / "history.csv").exists()


def test_console_quiet_must_be_a_bool():
    import monitor

    with pytest.raises(TypeError, match=r"Argument quiet should be True or False, got 'yes'"):
        monitor.Console(quiet="yes")


# Steps of 30 ms (a real model's work): a save (the state gathered, copied and written: tens of ms on
# a loaded machine) stays within 1% of a 3 s epoch, and the kill comes 1.5 s after the third
# validation's save began.
SLOW_STEPS = """
import time
from ignite.engine import Events
trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: time.sleep(0.03))
"""
KILL_AT_350 = """
import os, signal
trainer.add_event_handler(Events.ITERATION_COMPLETED(once=350), lambda _: os.kill(os.getpid(), signal.SIGKILL))
"""


def test_a_kill_after_the_third_validation_with_defaults_resumes_from_the_third(tmp_path):
    killed = run_snippet(tmp_path, after=SLOW_STEPS + KILL_AT_350, max_epochs=5, check=False, fresh=False)
    assert killed.returncode == -9
    resumed = run_snippet(tmp_path, kwargs="resume=True,", max_epochs=5, check=False, fresh=False,
                          after="from ignite.engine import Events\n"
                                "trainer.add_event_handler(Events.ITERATION_STARTED, "
                                "lambda e: print(e.state.iteration, flush=True))")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {tmp_path / 'run'} from last_epoch=3.pt" in resumed.stderr, killed.stderr[-3000:]
    started = [int(line) for line in resumed.stdout.split()]
    assert started[0] == 301 and "dropped" not in resumed.stderr  # the three validations' rows are kept


def scheduled_run(run_dir, kind, *, crash_at=None, resume=False):
    """4 epochs of 4 steps with lr = 0.05 / (1 + step / 5), a per-step schedule: ``kind`` says how."""
    import torch
    from ignite.engine import Events
    from ignite.handlers import LRScheduler

    from monitor import Checkpoints, Objective, attach_monitoring
    from tests.conftest import tiny_setup
    from tests.runs import raise_at, run_or_crash

    s = tiny_setup(lr=0.05)
    trainer, optimizer = s["trainer"], s["optimizer"]
    raise_at(trainer, crash_at)
    decay = None if kind.endswith("after attach") else \
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step / 5))
    to_save = {"model": s["model"], "optimizer": optimizer}
    if kind == "torch, stepped by the user's handler, in to_save":
        to_save["scheduler"] = decay
    if kind.startswith("torch"):
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda _: decay.step())
    elif kind == "ignite handler, before attach":
        trainer.add_event_handler(Events.ITERATION_STARTED, LRScheduler(decay))
    run = attach_monitoring(
        trainer, s["evaluator"], s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save=to_save, early_stopping=None, resume=resume, checkpoints=Checkpoints(every=Events.EPOCH_COMPLETED),
    )
    if kind == "ignite handler, after attach":  # (its torch scheduler made after attach too)
        late = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step / 5))
        trainer.add_event_handler(Events.ITERATION_STARTED, LRScheduler(late))
    run_or_crash(run, trainer, s["train_loader"], max_epochs=4, crashing=crash_at is not None)


@pytest.mark.parametrize("kind", ["ignite handler, before attach", "ignite handler, after attach",
                                  "torch, stepped by the user's handler, in to_save"])
def test_a_scheduler_killed_and_resumed_gives_the_uninterrupted_lr_column(tmp_path, kind):
    import pandas as pd

    scheduled_run(tmp_path / "whole", kind)
    scheduled_run(tmp_path / "run", kind, crash_at=10)  # in epoch 3, after epoch 2's checkpoint
    scheduled_run(tmp_path / "run", kind, resume=True)
    whole, resumed = (pd.read_csv(d / "history.csv")["lr"] for d in (tmp_path / "whole", tmp_path / "run"))
    assert whole.is_monotonic_decreasing and whole.nunique() == 4  # a restart would show
    pd.testing.assert_series_equal(resumed, whole)


def test_a_torch_scheduler_left_out_of_to_save_is_refused_naming_it_and_the_line_to_add(tmp_path):
    with pytest.raises(ValueError, match=r"Argument to_save should hold the scheduler that steps "
                                         r"to_save\['optimizer'\]: found a LambdaLR .* to_save=\{\.\.\., 'scheduler'"):
        scheduled_run(tmp_path / "run", "torch, stepped by the user's handler, left out")
    assert not (tmp_path / "run").exists()


def test_compare_skips_a_folder_that_is_not_a_run_and_finds_nested_runs(tmp_path, capsys):
    from monitor.review.cli import main as cli_main
    from tests.runs import start

    runs = tmp_path / "runs"
    for name in ("a", "sweep/trial_0", "sweep/trial_1"):
        start(runs / name, max_epochs=2, patience=None)
    (runs / "broken").mkdir()
    (runs / "broken" / ".lock").write_text("")  # what a failed attach used to leave
    for args in ([str(runs / "*")], [str(runs)]):
        capsys.readouterr()
        assert cli_main(["compare", *args, "--format", "csv"]) == 0
        out = capsys.readouterr()
        assert sorted(line.split(",")[1] for line in out.out.splitlines()[1:]) == ["a", "trial_0", "trial_1"]
        if args[0].endswith("*"):
            assert out.err.strip() == f"monitor: skipping {str(runs / 'broken')!r}: is not a run (no run.json)"


def test_a_failed_attach_leaves_no_folder_behind(tmp_path):
    import monitor
    from tests.conftest import tiny_setup

    s = tiny_setup()
    with pytest.raises(KeyError, match="Objective metric 'nll' is not attached to the evaluator"):
        monitor.attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                                  objective=monitor.Objective("nll", mode="min"), to_save={"model": s["model"]})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value, name", [(-2.35641, "best_epoch=27_val_nll=-2.3564.pt"),
                                         (0.0000123456, "best_epoch=27_val_nll=1.2346e-05.pt")])
def test_best_checkpoint_names_show_the_value_itself(tmp_path, value, name):
    import torch
    from ignite.engine import Events

    from monitor import Objective
    from monitor.handlers.best import BestTracker
    from monitor.handlers.checkpoint import attach_best_checkpoint
    from monitor.store.layout import parse_checkpoint_name
    from tests.conftest import stub_engine

    trainer, evaluator = stub_engine(), stub_engine()
    best = BestTracker(Objective("nll", mode="min"), trainer)
    best.attach(evaluator)
    attach_best_checkpoint(evaluator, trainer, best, {"model": torch.nn.Linear(1, 1)}, tmp_path)
    trainer.state.epoch, trainer.state.iteration = 27, 270
    evaluator.state.metrics = {"nll": value}
    evaluator.fire_event(Events.COMPLETED)
    assert [p.name for p in tmp_path.glob("best_*.pt")] == [name]
    assert parse_checkpoint_name(name).epoch == 27


def test_a_run_with_no_best_says_so_in_words_in_the_text_and_the_page(tmp_path):
    import monitor
    from tests.conftest import tiny_setup
    from tests.runs import raise_at, run_or_crash

    s = tiny_setup()
    raise_at(s["trainer"], 2)  # fails before its first validation
    run = monitor.attach_monitoring(s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
                                    objective=monitor.Objective("loss", mode="min"), to_save={"model": s["model"]})
    run_or_crash(run, s["trainer"], s["train_loader"], max_epochs=2, crashing=True)
    loaded = monitor.load_run(tmp_path / "run")
    assert "best        no best value of val_loss (min)" in loaded.summary()
    page = monitor.review.to_html([loaded])
    assert "None" not in page.split("<table", 1)[1].split("</table>", 1)[0]  # the runs table: seed '-'


@pytest.mark.parametrize("when", ["attached after monitoring", "validation within epochs"])
def test_a_trainer_metric_in_the_history_is_the_epoch_s_own(tmp_path, when):
    import pandas as pd
    from ignite.engine import Events
    from ignite.metrics import Average

    import monitor
    from tests.conftest import tiny_setup

    s = tiny_setup()
    trainer = s["trainer"]
    seen = Average(output_transform=lambda out: float(trainer.state.epoch))  # the epoch number, averaged
    if when == "validation within epochs":
        seen.attach(trainer, "epoch_seen")
    run = monitor.attach_monitoring(
        trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / "run", early_stopping=None,
        objective=monitor.Objective("loss", mode="min"), to_save={"model": s["model"]},
        validate_on=Events.ITERATION_COMPLETED(every=4) if when == "validation within epochs" else Events.EPOCH_COMPLETED,
    )
    if when == "attached after monitoring":
        seen.attach(trainer, "epoch_seen")
    with run:
        trainer.run(s["train_loader"], max_epochs=3)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["train_epoch_seen"].tolist() == history["epoch"].astype(float).tolist()

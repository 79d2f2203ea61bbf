import json
import os
import signal
import time

import pytest
import torch
from ignite.engine import Engine

from monitor import Objective, attach_monitoring
from tests.conftest import tiny_setup


def monitored(tmp_path, step):
    s = tiny_setup()
    trainer = Engine(step)
    run = attach_monitoring(
        trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / "run", objective=Objective("loss", mode="min"),
        to_save={"model": s["model"]}, early_stopping=None,
    )
    return run, trainer, s["train_loader"]


def test_first_signal_finishes_the_iteration_and_records_interrupted(tmp_path):
    def step(engine, batch):
        if engine.state.iteration == 6:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # the handler runs here; the iteration still completes
        return {"loss": torch.tensor(0.5)}

    previous = signal.getsignal(signal.SIGTERM)
    run, trainer, loader = monitored(tmp_path, step)
    with run:
        trainer.run(loader, max_epochs=5)
    assert trainer.state.iteration == 6  # stopped right after the signalled iteration
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["status"], record["stop_reason"], record["epochs_completed"]) == ("interrupted", "interrupted", 1)
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers put back


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_second_ctrl_c_stops_at_once(tmp_path, monkeypatch):
    import monitor.handlers.signals

    clock = Clock()
    monkeypatch.setattr(monitor.handlers.signals.time, "monotonic", clock)

    def step(engine, batch):
        if engine.state.iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
            clock.now += 5  # a deliberate second Ctrl-C, a moment later
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # KeyboardInterrupt is raised in here
            raise AssertionError("the second Ctrl-C should have stopped this iteration")
        return {"loss": torch.tensor(0.5)}

    run, trainer, loader = monitored(tmp_path, step)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under a shell's background job
    with pytest.raises(KeyboardInterrupt, match="second SIGINT: stopping at once"):
        with run:
            trainer.run(loader, max_epochs=5)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # the handler there before the run, back


def test_a_burst_of_signals_is_one_stop_request(tmp_path):
    # A dying launcher, Ctrl-C to a process group, a scheduler: one event, several signals at once.
    def step(engine, batch):
        if engine.state.iteration == 3:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGINT):
                os.kill(os.getpid(), signum)
                time.sleep(0.01)
        return {"loss": torch.tensor(0.5)}

    run, trainer, loader = monitored(tmp_path, step)
    with run:
        trainer.run(loader, max_epochs=5)
    assert trainer.state.iteration == 3
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["status"], record["stop_reason"]) == ("interrupted", "interrupted")

"""A small monitored run to start, crash and resume in-process (shared by the resume, review and CLI tests)."""
import json

import pandas as pd
import pytest
from ignite.engine import Events

from monitor import Checkpoints, Console, EarlyStopping, Objective, attach_monitoring
from monitor.store.history import TIMING_COLUMNS
from tests.conftest import tiny_setup

TIME_COLUMNS = list(TIMING_COLUMNS)  # timings differ between runs; nothing else may


def raise_at(trainer, iteration):
    """Make ``trainer`` raise ``RuntimeError("killed")`` after ``iteration`` (before the handlers
    attached after this call: attach it before monitoring to crash before that iteration's save)."""
    if iteration is not None:
        @trainer.on(Events.ITERATION_COMPLETED(once=iteration))
        def crash(_):
            raise RuntimeError("killed")


def run_or_crash(run, trainer, loader, *, max_epochs, crashing):
    """``trainer.run`` inside the monitor's ``with``; when ``crashing``, the crash is expected."""
    with run:
        if not crashing:
            trainer.run(loader, max_epochs=max_epochs)
        else:
            with pytest.raises(RuntimeError, match="killed"):
                trainer.run(loader, max_epochs=max_epochs)


def start(run_dir, *, resume=False, crash_at_iteration=None, max_epochs=10, patience=4, objective=None):
    s = tiny_setup(lr=0.5)  # a fresh process: new model, optimizer, engines
    raise_at(s["trainer"], crash_at_iteration)
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir,
        objective=objective or Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, resume=resume,
        early_stopping=None if patience is None else EarlyStopping(patience=patience),
        # the tests count on a checkpoint per epoch
        checkpoints=Checkpoints(restore_best=False, every=Events.EPOCH_COMPLETED), console=Console(log_every=1),
    )
    run_or_crash(run, s["trainer"], s["train_loader"], max_epochs=max_epochs, crashing=crash_at_iteration is not None)
    return run, s


def final_state(run_dir, s):
    history = pd.read_csv(run_dir / "history.csv").drop(columns=TIME_COLUMNS)
    record = json.loads((run_dir / "run.json").read_text())
    return history, record, {k: v.clone() for k, v in s["model"].state_dict().items()}

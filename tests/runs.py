"""A small monitored run to start, crash and resume in-process (shared by the resume, review and CLI tests)."""
import json

import pandas as pd
import pytest
from ignite.engine import Events

from monitor import Checkpoints, Console, EarlyStopping, Objective, attach_monitoring
from monitor.store.history import TIMING_COLUMNS
from tests.conftest import tiny_setup

TIME_COLUMNS = list(TIMING_COLUMNS)  # timings differ between runs; nothing else may


def start(run_dir, *, resume=False, crash_at_iteration=None, max_epochs=10, patience=4, objective=None):
    s = tiny_setup(lr=0.5)  # a fresh process: new model, optimizer, engines
    if crash_at_iteration is not None:
        @s["trainer"].on(Events.ITERATION_COMPLETED(once=crash_at_iteration))
        def crash(_):
            raise RuntimeError("killed")
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir,
        objective=objective or Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, resume=resume,
        early_stopping=None if patience is None else EarlyStopping(patience=patience),
        # the tests count on a checkpoint per epoch
        checkpoints=Checkpoints(restore_best=False, every=Events.EPOCH_COMPLETED), console=Console(log_every=1),
    )
    with run:
        if crash_at_iteration is None:
            s["trainer"].run(s["train_loader"], max_epochs=max_epochs)
        else:
            with pytest.raises(RuntimeError, match="killed"):
                s["trainer"].run(s["train_loader"], max_epochs=max_epochs)
    return run, s


def final_state(run_dir, s):
    history = pd.read_csv(run_dir / "history.csv").drop(columns=TIME_COLUMNS)
    record = json.loads((run_dir / "run.json").read_text())
    return history, record, {k: v.clone() for k, v in s["model"].state_dict().items()}

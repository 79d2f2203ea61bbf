"""Checkpoints on a cadence, exact resume at any iteration, time limits and preemption (issue #10)."""
import collections
import itertools
import json
import logging
import multiprocessing
import os
import signal
import time
from datetime import timedelta

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Accuracy, Loss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import monitor
from monitor import Checkpoints, Console, Objective, attach_monitoring, load_run
from monitor.handlers.cadence import CheckpointCadence
from monitor.store.history import TIMING_COLUMNS
from tests.runs import raise_at, run_or_crash

TIME_COLUMNS = list(TIMING_COLUMNS)  # timings differ between runs; nothing else may


class Augmented(torch.utils.data.Dataset):
    """Random noise added to each sample when it is loaded, from torch's RNG: in a DataLoader worker,
    the worker's own (seeded from the loader's base seed), as any torchvision random transform."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x + 0.3 * torch.randn(x.shape), y


def long_setup(seed=0, *, own_generator=False, workers=0, plain_list=False, deterministic=False, augmented=False,
               persistent=False, batch=8):
    """40 iterations per epoch, dropout (the global RNG at every step), shuffled data."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(384, 8, generator=g)
    y = ((x[:, 0] + 0.3 * torch.randn(384, generator=g)) > 0).long()
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    train = TensorDataset(x[:320], y[:320])
    generator = torch.Generator().manual_seed(seed + 1) if own_generator else None
    train_loader = DataLoader(Augmented(train) if augmented else train, batch_size=batch, shuffle=True,
                              generator=generator, num_workers=workers, persistent_workers=persistent)
    if plain_list:
        train_loader = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 320, 8)]  # no order to replay
    val_loader = DataLoader(TensorDataset(x[320:], y[320:]), batch_size=32)
    trainer = monitor.build_trainer(model, optimizer, loss_fn, deterministic=deterministic)
    evaluator = monitor.build_evaluator(model, {"accuracy": Accuracy(), "loss": Loss(loss_fn)})
    return dict(model=model, optimizer=optimizer, trainer=trainer, evaluator=evaluator,
                train_loader=train_loader, val_loader=val_loader)


EVERY_7 = Events.ITERATION_COMPLETED(every=7)


def long_run(run_dir, *, resume=False, crash_at=None, max_epochs=3, every=EVERY_7, setup=None, **kwargs):
    s = setup or long_setup()
    raise_at(s["trainer"], crash_at)
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]},
        validate_on=Events.ITERATION_COMPLETED(every=10), resume=resume, early_stopping=None,
        checkpoints=Checkpoints(restore_best=False, every=every),
        console=Console(log_every=5, tqdm_kwargs={"disable": True}), **kwargs,
    )
    run_or_crash(run, s["trainer"], s["train_loader"], max_epochs=max_epochs, crashing=crash_at is not None)
    return run, s


def outcome(run_dir):
    record = json.loads((run_dir / "run.json").read_text())
    scalars = load_run(run_dir).scalars
    scalars = scalars[~scalars["tag"].str.startswith("perf/")]  # timings (samples_per_s, data_wait_frac)
    return {
        "history": pd.read_csv(run_dir / "history.csv").drop(columns=TIME_COLUMNS),
        "record": {k: record[k] for k in ("status", "stop_reason", "epochs_completed", "iterations_completed", "best")},
        "best": {p.name: torch.load(p) for p in sorted((run_dir / "checkpoints").glob("best_*.pt"))},
        "scalars": scalars.drop(columns="wall_time").reset_index(drop=True),
    }


def assert_same(resumed, whole):
    pd.testing.assert_frame_equal(resumed["history"], whole["history"])
    assert resumed["record"] == whole["record"]
    assert list(resumed["best"]) == list(whole["best"])
    for name, weights in resumed["best"].items():
        assert all(torch.equal(weights[k], whole["best"][name][k]) for k in weights), name
    pd.testing.assert_frame_equal(resumed["scalars"], whole["scalars"])


DATA = {"global_rng": {}, "own_generator": {"own_generator": True}, "two_workers": {"workers": 2},
        "augmented_in_the_process": {"augmented": True},
        "augmented_in_two_workers": {"workers": 2, "augmented": True},  # issue #21: their RNG replayed too
        "ignite_deterministic_engine": {"deterministic": True}, "deterministic_own_generator": {
            "deterministic": True, "own_generator": True}}


@pytest.mark.parametrize("data", sorted(DATA))
def test_a_crash_mid_epoch_resumes_exactly(tmp_path, data):
    options = DATA[data]
    long_run(tmp_path / "whole", setup=long_setup(**options))
    whole = outcome(tmp_path / "whole")
    run_dir = tmp_path / "resumed"
    for i, crash in enumerate([23, 57, 81]):  # mid-epoch 1, mid-epoch 2, the first iteration of epoch 3
        long_run(run_dir, resume=i > 0, crash_at=crash, setup=long_setup(**options))
    run, _ = long_run(run_dir, resume=True, setup=long_setup(**options))
    assert run.plan.from_iteration == 77  # the newest checkpoint before iteration 81 (every 7)
    assert_same(outcome(run_dir), whole)


def stop_workers():
    """End the DataLoader workers of the run that just ended, now. Left to the garbage collector, PyTorch
    waits 5 s for each worker of an iterator an exception left mid-epoch (as with Ignite alone): 30 s here."""
    for worker in multiprocessing.active_children():
        worker.terminate()


def test_persistent_workers_whose_state_carries_over_epochs_are_said_at_resume(tmp_path, caplog):
    options = {"workers": 2, "augmented": True, "persistent": True}
    long_run(tmp_path / "run", crash_at=23, setup=long_setup(**options))  # within epoch 1: fresh workers
    stop_workers()
    with caplog.at_level(logging.INFO, logger="monitor"):
        long_run(tmp_path / "run", resume=True, crash_at=57, setup=long_setup(**options))
    stop_workers()
    assert "loading the 21 batches this epoch already trained again" in caplog.text  # checkpoint at 21
    assert "The DataLoader has persistent_workers=True" not in caplog.text  # in epoch 1: nothing carried over
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="monitor"):
        long_run(tmp_path / "run", resume=True, setup=long_setup(**options))
    stop_workers()
    assert caplog.text.count("persistent_workers=True: its workers' random state carries over") == 1


def record_trained(setup, steps):
    """Append (epoch, iteration as the history counts it, sample indices) to ``steps`` after each step."""
    x = setup["train_loader"].dataset.tensors[0]
    index = {row.numpy().tobytes(): i for i, row in enumerate(x)}

    @setup["trainer"].on(Events.ITERATION_COMPLETED)
    def record(engine):
        rows = [index[row.numpy().tobytes()] for row in engine.state.batch[0]]
        steps.append((engine.state.epoch, monitor.core._position.run_iteration(engine.state), rows))
    return setup


def samples(steps, epoch, upto=None):
    """How often each sample was trained in ``epoch`` (by steps up to iteration ``upto``)."""
    counts = collections.Counter()
    for e, iteration, rows in steps:
        if e == epoch and (upto is None or iteration <= upto):
            counts.update(rows)
    return counts


@pytest.mark.slow
@pytest.mark.parametrize(("batch", "workers"), [(10, 0), (4, 0), (7, 0), (10, 2)])
def test_a_resume_with_another_batch_trains_the_rest_of_the_epoch_once_and_counts_steps_on(tmp_path, caplog, batch,
                                                                                          workers):
    # Issue #21: 40 steps of 8 an epoch, the last checkpoint at iteration 56 (16 steps into epoch 2:
    # 128 samples), resumed with batch 10 (32 steps; also with 2 DataLoader workers), 4 (80) or 7 (46,
    # the last one 5). Before, Ignite
    # kept 40 steps an epoch: samples trained twice or never, and with batch 10 the data ran out.
    first, second = [], []
    long_run(tmp_path / "run", crash_at=57, setup=record_trained(long_setup(workers=workers), first))
    with caplog.at_level(logging.INFO, logger="monitor"):
        long_run(tmp_path / "run", resume=True, setup=record_trained(long_setup(batch=batch, workers=workers), second))
    steps_an_epoch = -(-320 // batch)
    left = -(-(320 - 128) // batch)
    assert caplog.text.count(f"Resuming with another global batch: 1 process x 8 a step (8 in all, 40 steps an "
                             f"epoch) -> 1 process x {batch} a step ({batch} in all, {steps_an_epoch} steps an "
                             "epoch). Epoch 2 was 128 samples in (16 steps): its 192 samples not yet trained "
                             f"are trained once each, in {left} steps of the new layout") == 1
    epoch_2 = samples(first, 2, upto=56) + samples(second, 2)
    assert set(epoch_2) == set(range(320)) and set(epoch_2.values()) == {1}
    assert len(samples(second, 3)) == 320 and set(samples(second, 3).values()) == {1}
    # The iteration counts the steps taken: 56, then the rest of epoch 2, then epoch 3's.
    assert [it for _, it, _ in second] == list(range(57, 57 + left + steps_an_epoch))
    iterations = pd.read_csv(tmp_path / "run" / "history.csv")["iteration"].tolist()
    assert iterations == sorted(set(iterations)) and set(iterations[5:]) <= {it for _, it, _ in second}
    segment = json.loads((tmp_path / "run" / "run.json").read_text())["segments"][-1]
    assert segment["layout"] == {"processes": 1, "batch_size": batch, "batches": steps_an_epoch}
    assert segment["layout_change"]["exact"] and segment["layout_change"]["trained"] == 128


def test_a_resume_one_step_into_an_epoch_on_a_larger_batch_keeps_the_epoch_under_way(tmp_path):
    # 8 samples trained (checkpoint at 41, 1 step into epoch 2), resumed with batch 10: the 312 left
    # would be 32 steps, a whole epoch of the new layout, which Ignite would take for one not yet begun
    # (the epoch's loss sum would start anew). They are 31, the last one 12 samples.
    first, second, losses = [], [], {}
    at_41 = Events.ITERATION_COMPLETED(once=41)

    def with_losses(setup):
        @setup["trainer"].on(Events.ITERATION_COMPLETED)
        def keep(engine):
            losses[monitor.core._position.run_iteration(engine.state)] = float(engine.state.output["loss"])
        return setup

    long_run(tmp_path / "run", crash_at=42, every=at_41, setup=with_losses(record_trained(long_setup(), first)))
    long_run(tmp_path / "run", resume=True, every=at_41,
             setup=with_losses(record_trained(long_setup(batch=10), second)))
    epoch_2 = samples(first, 2, upto=41) + samples(second, 2)
    assert set(epoch_2) == set(range(320)) and set(epoch_2.values()) == {1}
    assert [len(rows) for e, _, rows in second if e == 2] == [10] * 30 + [12]
    assert [it for e, it, _ in second if e == 2][-1] == 41 + 31
    # the first validation after the resume (Ignite's step 40, 7 steps on) shows the mean of epoch 2's 8 steps
    row = pd.read_csv(tmp_path / "run" / "history.csv").set_index("iteration").loc[48]
    assert row["train_loss"] == pytest.approx(sum(losses[i] for i in range(41, 49)) / 8, rel=1e-6)


@pytest.mark.parametrize("third", [10, 4])
def test_an_epoch_continued_on_another_batch_and_killed_again_still_trains_each_sample_once(tmp_path, third):
    # Batch 8 killed in epoch 2 (checkpoint at 56), resumed with 10 and killed again within the rest of
    # epoch 2 (its checkpoint 5 steps of 10 on: iteration 61), resumed with 10 again or with 4.
    first, second, last = [], [], []
    long_run(tmp_path / "run", crash_at=57, setup=record_trained(long_setup(), first))
    # Ignite's own count is renumbered to 44 at the resume: its every-7 save is at 49, the crash at 51
    long_run(tmp_path / "run", resume=True, crash_at=51, setup=record_trained(long_setup(batch=10), second))
    assert "last_epoch=2_iteration=61.pt" in [p.name for p in (tmp_path / "run" / "checkpoints").glob("last_*")]
    long_run(tmp_path / "run", resume=True, setup=record_trained(long_setup(batch=third), last))
    epoch_2 = samples(first, 2, upto=56) + samples(second, 2, upto=61) + samples(last, 2)
    assert set(epoch_2) == set(range(320)) and set(epoch_2.values()) == {1}
    assert len(samples(last, 3)) == 320 and set(samples(last, 3).values()) == {1}
    assert [it for _, it, _ in last][0] == 62


class OwnBatchSampler(torch.utils.data.BatchSampler):
    """A batch sampler of the user's own: monitor cannot tell that its batches are stretches of an order."""


def with_own_batch_sampler(setup):
    loader = setup["train_loader"]
    sampler = OwnBatchSampler(torch.utils.data.RandomSampler(loader.dataset), loader.batch_size, drop_last=False)
    setup["train_loader"] = DataLoader(loader.dataset, batch_sampler=sampler)
    return setup


def test_a_resume_on_another_batch_that_cannot_be_exact_says_so_and_the_next_epochs_are_whole(tmp_path, caplog,
                                                                                              recwarn):
    first, second = [], []
    long_run(tmp_path / "run", crash_at=57, setup=record_trained(with_own_batch_sampler(long_setup()), first))
    with caplog.at_level(logging.WARNING):
        long_run(tmp_path / "run", resume=True,
                 setup=record_trained(with_own_batch_sampler(long_setup(batch=10)), second))
    assert caplog.text.count("This resume is not exact: its order came from a sampler monitor cannot draw again. "
                             "So the rest of epoch 2 is the new layout's order from step 14 of 32 (about 130 "
                             "samples in, where the checkpoint was 128 in)") == 1
    assert not [w for w in recwarn if "Data iterator can not provide" in str(w.message)]  # the new epoch length
    assert len(samples(second, 2)) > 150 and [it for _, it, _ in second][:1] == [57]
    assert len(samples(second, 3)) == 320 and set(samples(second, 3).values()) == {1}


def test_a_resume_with_the_same_batch_says_nothing_of_layouts(tmp_path, caplog):
    long_run(tmp_path / "same", crash_at=57)
    with caplog.at_level(logging.INFO, logger="monitor"):
        long_run(tmp_path / "same", resume=True)
    assert "another global batch" not in caplog.text and "laid out anew" not in caplog.text


def test_a_plain_list_cannot_be_replayed_so_it_resumes_from_the_epoch_boundary(tmp_path, caplog):
    long_run(tmp_path / "whole", setup=long_setup(plain_list=True))
    whole = outcome(tmp_path / "whole")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="monitor"):
        long_run(tmp_path / "run", crash_at=57, setup=long_setup(plain_list=True))
    assert caplog.text.count("cannot be replayed mid-epoch") == 1
    last = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("last_*.pt"))
    assert last == ["last_epoch=1.pt"]  # no checkpoint within an epoch it could not replay
    long_run(tmp_path / "run", resume=True, setup=long_setup(plain_list=True))
    assert_same(outcome(tmp_path / "run"), whole)


def test_sigterm_mid_epoch_writes_a_checkpoint_there_and_the_resume_redoes_nothing(tmp_path):
    long_run(tmp_path / "whole", every=None)
    whole = outcome(tmp_path / "whole")
    s = long_setup()
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED(once=53), lambda _: os.kill(os.getpid(), signal.SIGTERM))
    run, _ = long_run(tmp_path / "run", every=None, setup=s)  # the budget: a save at the first validation only
    assert s["trainer"].state.iteration == 53
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["status"], record["stop_reason"]) == ("interrupted", "interrupted")
    assert max((tmp_path / "run" / "checkpoints").glob("last_*.pt"), key=lambda p: p.stat().st_mtime_ns).name == \
        "last_epoch=2_iteration=53.pt"
    resumed = long_setup()
    trained = []
    resumed["trainer"].add_event_handler(Events.ITERATION_STARTED, lambda e: trained.append(e.state.iteration))
    long_run(tmp_path / "run", resume=True, every=None, setup=resumed)
    assert trained[0] == 54  # nothing redone
    assert_same(outcome(tmp_path / "run"), whole)


def test_max_time_stops_resumably_and_a_resume_with_more_time_finishes_the_run(tmp_path):
    long_run(tmp_path / "whole", every=None)
    whole = outcome(tmp_path / "whole")
    s = long_setup()
    # 10 ms a step, 0.5 s in all: about 40 steps (a loaded machine's slow start still leaves more than 10)
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED, lambda _: time.sleep(0.01))
    run, _ = long_run(tmp_path / "run", every=None, setup=s, max_time=0.5)
    stopped_at = s["trainer"].state.iteration
    assert 10 < stopped_at < 120
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (record["status"], record["stop_reason"]) == ("interrupted", "time_limit")
    assert run.status.is_finished is False
    with pytest.raises(ValueError, match=r"max_time should be more than the .* s .* has trained already, got 0.25"):
        long_run(tmp_path / "run", resume=True, every=None, max_time=0.25)
    long_run(tmp_path / "run", resume=True, every=None, max_time=timedelta(hours=1))
    assert_same(outcome(tmp_path / "run"), whole)


EVERY_10 = Events.ITERATION_COMPLETED(every=10)


def default_run(run_dir, s, *, validate_on=EVERY_10, cost_s=None, extra=None):
    """A run with the default cadence; returns it and the iterations its last checkpoints were saved at."""
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"], **(extra or {})}, validate_on=validate_on,
        early_stopping=None,
        checkpoints=Checkpoints(restore_best=False), console=Console(log_every=5, tqdm_kwargs={"disable": True}),
    )
    if cost_s is not None:
        run.cadence.cost_s = lambda: cost_s
    saved = []
    s["trainer"].add_event_handler(Events.ITERATION_STARTED,  # after any save of the step or epoch before
                                   lambda e: saved.append(run.cadence.saved_iteration))
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=3)
    return run, sorted({i for i in saved if i is not None})


def fake_clock(monkeypatch, s, seconds_per_step):
    import monitor.handlers.cadence as cadence_module

    clock = {"now": 0.0}
    monkeypatch.setattr(cadence_module.time, "monotonic", lambda: clock["now"])
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED,
                                   lambda _: clock.update(now=clock["now"] + seconds_per_step))


def test_the_default_saves_at_each_validation_while_a_save_is_cheap(tmp_path, monkeypatch):
    s = long_setup()
    fake_clock(monkeypatch, s, 1.0)  # 1 s a step: a save of a few ms is far below 1% of 10 steps
    run, saved_at = default_run(tmp_path / "run", s)
    assert saved_at == list(range(10, 121, 10))[:-1]  # each validation (the last one's save is at the end)
    assert run.cadence.saves == 12


def test_an_expensive_save_stretches_the_interval_and_says_so_once(tmp_path, monkeypatch, caplog):
    s = long_setup()
    fake_clock(monkeypatch, s, 1.0)
    with caplog.at_level(logging.INFO, logger="monitor"):
        run, saved_at = default_run(tmp_path / "run", s, cost_s=0.5)  # 0.5 s a save: at most every 50 s
    assert saved_at == [50, 100]
    assert caplog.text.count("to keep saving under 1% of the training time it is written at the first validation "
                             "about every 50 s instead of at each one") == 1


class SlowToGather:
    """State that takes 0.2 s to gather in the training thread (as a sharded model's shards written)."""

    def state_dict(self):
        time.sleep(0.2)
        return {}

    def load_state_dict(self, state):
        pass


def test_the_budget_counts_the_time_training_waits_for_the_state_of_a_save(tmp_path, monkeypatch, caplog):
    s = long_setup()
    fake_clock(monkeypatch, s, 1.0)  # 10 s between validations: a save of 0.2 s is 2% of that
    with caplog.at_level(logging.INFO, logger="monitor"):
        run, saved_at = default_run(tmp_path / "run", s, extra={"slow": SlowToGather()})
    assert 2 <= len(saved_at) <= 4 and all(b - a >= 20 for a, b in itertools.pairwise(saved_at))
    assert caplog.text.count("to keep saving under 1% of the training time") == 1


def test_within_long_epochs_the_default_saves_by_the_clock(tmp_path, monkeypatch):
    s = long_setup()
    fake_clock(monkeypatch, s, 100.0)  # 100 s per iteration, a validation per 40: a save every 600 s too
    run, _ = default_run(tmp_path / "slow", s, validate_on=Events.EPOCH_COMPLETED)
    names = sorted(p.name for p in (tmp_path / "slow" / "checkpoints").glob("last_*.pt"))
    assert names == ["last_epoch=3.pt", "last_epoch=3_iteration=116.pt"]
    assert run.cadence.saves == 3 * (6 + 1)  # 6, 12, ..., 36 and the epoch's end, in each epoch


def test_the_budget_keeps_saving_under_one_percent_of_the_time():
    cadence = CheckpointCadence(None)
    cadence.cost_s = lambda: 0.5
    assert cadence.interval() == 600.0
    cadence.cost_s = lambda: 9.0  # a save of 9 s: at most every 900 s
    assert cadence.interval() == pytest.approx(900.0)
    assert CheckpointCadence(timedelta(minutes=2)).interval() == 120.0


@pytest.mark.parametrize("every, match", [
    ("often", TypeError), (0, ValueError), (timedelta(seconds=-1), ValueError), (float("nan"), ValueError),
])
def test_bad_cadences_are_refused_at_attach(tmp_path, every, match):
    with pytest.raises(match, match="Argument every should be"):
        long_run(tmp_path / "run", every=every)
    assert not (tmp_path / "run").exists()


def test_best_files_wait_for_the_next_checkpoint_and_hold_the_weights_of_their_validation(tmp_path):
    s = long_setup()
    weights = {}
    s["evaluator"].add_event_handler(
        Events.COMPLETED, lambda _: weights.setdefault(s["trainer"].state.iteration,
                                                       {k: v.clone() for k, v in s["model"].state_dict().items()})
    )
    seen = []
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED(once=30), lambda _: seen.append(
        sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("best_*.pt"))))
    long_run(tmp_path / "run", every=Events.EPOCH_COMPLETED, setup=s)
    assert seen == [[]]  # bests of iterations 10, 20, 30 are held until the epoch's checkpoint
    for path in (tmp_path / "run" / "checkpoints").glob("best_*.pt"):
        iteration = monitor.store.layout.parse_checkpoint_name(path.name).iteration
        saved = torch.load(path)
        assert all(torch.equal(saved[k], weights[iteration][k]) for k in saved)


def test_the_amp_grad_scaler_is_in_the_last_checkpoint(tmp_path):
    s = long_setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**7)
    trainer = Engine(lambda e, b: {"loss": torch.tensor(0.5)})  # a user's engine, with Ignite's attribute
    trainer.state.scaler = scaler
    run = attach_monitoring(
        trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / "run", objective=Objective("loss", mode="min"),
        to_save={"model": s["model"]}, early_stopping=None,
    )
    with run:
        trainer.run(s["train_loader"], max_epochs=1)
    (path,) = (tmp_path / "run" / "checkpoints").glob("last_*.pt")
    assert torch.load(path, weights_only=False)["scaler"]["scale"] == scaler.state_dict()["scale"] == 2.0**7

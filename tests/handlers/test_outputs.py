"""Every scalar of the training step and every trainer metric reaches the history and TensorBoard;
throughput and data wait are columns of every run (issue #12, item 4)."""
import itertools
import time

import pandas as pd
import pytest
import torch
from ignite.engine import Engine, Events
from ignite.metrics import RunningAverage
from torch.utils.data import DataLoader, Dataset, TensorDataset

from monitor import Checkpoints, Console, Objective, attach_monitoring, load_run
from tests.conftest import tiny_setup


def own_trainer(s, grad_norms):
    """A hand-built step that returns more than the loss, as users' steps do."""
    model, optimizer, loss_fn = s["model"], s["optimizer"], torch.nn.CrossEntropyLoss()

    def step(engine, batch):
        x, y = batch
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e6)
        grad_norms.append((engine.state.epoch, float(norm)))
        optimizer.step()
        return {"loss": loss.detach(), "grad_norm": norm.detach(), "batch_mean": float(x.mean()), "note": "text"}

    return Engine(step)


def monitored(run_dir, s, trainer, **kwargs):
    return attach_monitoring(
        trainer, s["evaluator"], s["val_loader"], run_dir=run_dir, objective=Objective("loss", mode="min"),
        to_save={"model": s["model"], "optimizer": s["optimizer"]}, early_stopping=None, **kwargs,
    )


def test_every_scalar_output_and_trainer_metric_is_a_train_column_and_a_tensorboard_tag(tmp_path):
    s = tiny_setup()
    norms = []
    trainer = own_trainer(s, norms)
    RunningAverage(output_transform=lambda out: out["grad_norm"]).attach(trainer, "smooth_grad_norm")
    run = monitored(tmp_path / "run", s, trainer)
    with run:
        trainer.run(s["train_loader"], max_epochs=3)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert {"train_grad_norm", "train_batch_mean", "train_smooth_grad_norm"} <= set(history.columns)
    assert "train_note" not in history.columns  # not a number
    per_epoch = pd.DataFrame(norms, columns=["epoch", "norm"]).groupby("epoch")["norm"].mean()
    assert history["train_grad_norm"].tolist() == pytest.approx(per_epoch.tolist())  # the epoch's mean
    scalars = load_run(tmp_path / "run").scalars
    tags = set(scalars["tag"])
    assert {"train/grad_norm", "train/batch_mean", "train/smooth_grad_norm"} <= tags
    logged = scalars[scalars["tag"] == "train/grad_norm"]["value"].tolist()
    assert logged == pytest.approx(history["train_grad_norm"].tolist(), rel=1e-6)


class SlowDataset(Dataset):
    def __init__(self, data, delay_s):
        self.data, self.delay_s = data, delay_s

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        time.sleep(self.delay_s)
        return self.data[i]


def test_throughput_and_the_share_of_time_waiting_for_data_are_columns_of_every_run(tmp_path):
    def history(name, trainer, loader, s):
        run = monitored(tmp_path / name, s, trainer)
        with run:
            trainer.run(loader, max_epochs=2)
        assert {"perf/samples_per_s", "perf/data_wait_frac"} <= set(load_run(tmp_path / name).scalars["tag"])
        return pd.read_csv(tmp_path / name / "history.csv")

    s = tiny_setup()  # data-bound: 16 sleeps of 4 ms per batch, a step of about a millisecond
    slow_data = DataLoader(SlowDataset(s["train_loader"].dataset, 0.004), batch_size=16)
    data_bound = history("data_bound", s["trainer"], slow_data, s)
    s = tiny_setup()  # compute-bound: ready batches, a step of 8 ms
    batches = [(torch.randn(16, 8), torch.zeros(16, dtype=torch.long)) for _ in range(4)]
    slow_step = Engine(lambda e, b: (time.sleep(0.008), {"loss": torch.tensor(0.5)})[1])
    compute_bound = history("compute_bound", slow_step, batches, s)
    assert data_bound["data_wait_frac"].gt(0.5).all() and compute_bound["data_wait_frac"].lt(0.5).all()
    assert data_bound["samples_per_s"].lt(16 / 0.064).all()  # cannot beat its loader (64 ms a batch)
    assert compute_bound["samples_per_s"].between(0, 16 / 0.008).all()  # nor its step (8 ms a batch)
    # The other way round: a DataLoader (its batches timed as DataOrder draws them) in front of a slow
    # step, and slow data Ignite iterates itself (timed by the GET_BATCH events).
    s = tiny_setup()
    slow_step = Engine(lambda e, b: (time.sleep(0.008), {"loss": torch.tensor(0.5)})[1])
    assert history("compute_bound_loader", slow_step, s["train_loader"], s)["data_wait_frac"].lt(0.5).all()

    def slow_batches():
        while True:
            time.sleep(0.02)
            yield torch.randn(16, 8), torch.zeros(16, dtype=torch.long)
    s = tiny_setup()
    trainer = Engine(lambda e, b: {"loss": torch.tensor(0.5)})
    run = monitored(tmp_path / "data_bound_generator", s, trainer)
    with run:
        trainer.run(slow_batches(), max_epochs=2, epoch_length=4)
    generator = pd.read_csv(tmp_path / "data_bound_generator" / "history.csv")
    assert generator["data_wait_frac"].gt(0.5).all() and generator["samples_per_s"].lt(16 / 0.02).all()


@pytest.mark.parametrize("drop_last, epoch_length", [(False, None), (True, None), (False, 2)])
def test_a_torch_loaders_batches_counted_by_its_sampler_give_the_samples_read_from_each_batch(
        tmp_path, monkeypatch, drop_last, epoch_length):
    # Reading each batch's shape after the step costs about 8 us of CPU: a torch DataLoader's batches are
    # counted by what its batch sampler says once an epoch's first batch agrees. 70 samples in batches
    # of 16: the last has 6 (or is dropped; or epochs of 2 batches go on through one iterator); the
    # columns are those of every batch read.
    import monitor.handlers.data as data
    import monitor.handlers.outputs as outputs

    ticks = itertools.count()  # each clock read a millisecond on: the same busy time in both runs
    monkeypatch.setattr(outputs.time, "monotonic", lambda: next(ticks) / 1000)
    reads = []
    monkeypatch.setattr(outputs, "_batch_size", lambda batch, read=outputs._batch_size: reads.append(1) or read(batch))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(70, 8, generator=g), torch.randint(0, 2, (70,), generator=g)

    def columns(name):
        s = tiny_setup()
        reads.clear()
        run = monitored(tmp_path / name, s, s["trainer"], console=Console(tqdm_kwargs={"disable": True}),
                        checkpoints=Checkpoints(background_writes=False))  # (no thread reading the clock)
        with run:
            s["trainer"].run(DataLoader(TensorDataset(x, y), batch_size=16, drop_last=drop_last), max_epochs=3,
                             epoch_length=epoch_length)
        return pd.read_csv(tmp_path / name / "history.csv")[["samples_per_s", "data_wait_frac"]], len(reads)

    by_sampler, read_by_sampler = columns("by_sampler")
    monkeypatch.setattr(data, "_batch_sizes", lambda loader, first: None)
    each_read, _ = columns("each_read")
    pd.testing.assert_frame_equal(by_sampler, each_read)
    assert read_by_sampler == (3 if epoch_length is None else 2)  # one batch read an iterator (5 batches in one)


def test_batches_without_a_size_leave_samples_per_s_empty(tmp_path):
    s = tiny_setup()
    trainer = Engine(lambda e, batch: {"loss": torch.tensor(0.5)})
    run = monitored(tmp_path / "run", s, trainer)
    with run:
        trainer.run([{"text": "a"}, {"text": "b"}], max_epochs=1)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["samples_per_s"].isna().all() and history["data_wait_frac"].notna().all()


def test_the_output_means_survive_a_resume_mid_epoch(tmp_path):
    def run_once(run_dir, crash_at=None, resume=False):
        s = tiny_setup()
        trainer = own_trainer(s, [])
        if crash_at:
            trainer.add_event_handler(Events.ITERATION_COMPLETED(once=crash_at),
                                      lambda _: (_ for _ in ()).throw(RuntimeError("killed")))
        run = monitored(
            run_dir, s, trainer, resume=resume, checkpoints=Checkpoints(every=Events.ITERATION_COMPLETED(every=2)),
        )
        with run:
            if crash_at:
                with pytest.raises(RuntimeError):
                    trainer.run(s["train_loader"], max_epochs=3)
            else:
                trainer.run(s["train_loader"], max_epochs=3)
        return pd.read_csv(run_dir / "history.csv")[["epoch", "train_grad_norm", "train_batch_mean"]]

    whole = run_once(tmp_path / "whole")
    run_once(tmp_path / "run", crash_at=7)  # mid-epoch 2 (4 iterations per epoch), checkpoint at 6
    pd.testing.assert_frame_equal(run_once(tmp_path / "run", resume=True), whole)


def test_attach_grad_norm_gives_the_epoch_mean_of_the_true_gradient_norm(tmp_path):
    from monitor.parts import attach_grad_norm

    s = tiny_setup()
    norms = []  # the norm as torch computes it, after each step's backward
    s["trainer"].add_event_handler(Events.ITERATION_COMPLETED, lambda e: norms.append((e.state.epoch, float(
        torch.nn.utils.get_total_norm([p.grad for p in s["model"].parameters()])))))
    attach_grad_norm(s["trainer"], s["model"])
    run = monitored(tmp_path / "run", s, s["trainer"])
    with run:
        s["trainer"].run(s["train_loader"], max_epochs=3)
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    expected = pd.DataFrame(norms, columns=["epoch", "norm"]).groupby("epoch")["norm"].mean()
    assert history["train_grad_norm"].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert "train/grad_norm" in set(load_run(tmp_path / "run").scalars["tag"])


def test_the_epochs_highest_gradient_norm_leaves_nan_steps_out_and_survives_a_resume(tmp_path):
    from monitor.handlers.outputs import TrainOutputs

    norms = iter([1.0, 50.0, float("nan"), 2.0, 3.0, float("inf"), 1.0, 1.0])
    trainer = Engine(lambda e, b: {"loss": torch.tensor(0.5), "grad_norm": torch.tensor(next(norms))})
    outputs = TrainOutputs(trainer)
    trainer.add_event_handler(Events.EPOCH_STARTED, outputs.started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, outputs)
    highest = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: highest.append(outputs.values()["train_grad_norm_max"]))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: starts.append(outputs.values()["train_grad_norm_start"]))
    starts = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda e: e.terminate())
    trainer.run(range(4), max_epochs=2)
    saved, state = outputs.state_dict(), trainer.state_dict()
    trainer = Engine(lambda e, b: {"loss": torch.tensor(0.5), "grad_norm": torch.tensor(next(norms))})
    resumed = TrainOutputs(trainer)
    resumed.load_state_dict(saved)
    trainer.add_event_handler(Events.EPOCH_STARTED, resumed.started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, resumed)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: highest.append(resumed.values()["train_grad_norm_max"]))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: starts.append(resumed.values()["train_grad_norm_start"]))
    trainer.load_state_dict({**state, "epoch_length": 4})
    trainer.run(range(4), max_epochs=2)
    assert highest == [50.0, float("inf")]  # an infinite step counts: it is the blow-up
    assert starts == [1.0, 1.0]  # the run's first step's, kept through the resume (not the resumed one's 2.0)
    with pytest.raises(TypeError, match="peaks"):
        TrainOutputs(trainer, peaks="grad_norm")


def test_outputs_alone_sum_every_step_whatever_the_output_holds():
    # The one step handler skips the output sums only for build_trainer's {"loss": ...}; a step that
    # returns one other scalar, a float, or the loss beside others is summed as it was.
    from monitor.handlers.outputs import attach_throughput, attach_train_outputs
    from monitor.handlers.step import StepWork

    for outputs_of_steps, expected in (([{"accuracy": 0.5}, {"accuracy": 1.0}], {"train_accuracy": 0.75}),
                                       ([{"loss": 1.0}, {"loss": 2.0}], {}),
                                       ([{"loss": 1.0, "n": 2}, {"loss": 2.0, "n": 4}], {"train_n": 3.0}),
                                       ([0.5, 1.5], {})):
        trainer = Engine(lambda e, batch: batch)
        step = StepWork(log_every=10).attach(trainer)
        outputs = attach_train_outputs(trainer, step=step)
        trainer.run(outputs_of_steps, max_epochs=1)
        assert outputs.values() == expected
    attach_throughput(trainer, step=step)
    with pytest.raises(ValueError, match="one Throughput a trainer"):
        attach_throughput(trainer, step=step)

import math
import shutil

import pytest
from ignite.engine import Events
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monitor import Console, Objective, attach_monitoring
from tests.conftest import tiny_setup


def read_scalars(folder, tag):
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)] if tag in events.Tags()["scalars"] else []


def test_each_epoch_is_on_disk_before_its_last_checkpoint_while_the_writer_is_open(tmp_path):
    s = tiny_setup()
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("loss", mode="min"), to_save={"model": s["model"]}, early_stopping=None,
        console=Console(log_every=1),
    )
    seen = []

    @s["trainer"].on(Events.EPOCH_COMPLETED)
    def snapshot(trainer):
        # What a kill -9 right now would leave: copy the files as they are on disk.
        copy = tmp_path / f"copy{trainer.state.epoch}"
        shutil.copytree(tmp_path / "run" / "tb", copy)
        seen.append((read_scalars(copy, "val/loss"), read_scalars(copy, "train/loss")))

    with run:
        s["trainer"].run(s["train_loader"], max_epochs=3)
    assert len(seen) == 3  # one look at the disk per epoch
    for epoch, (val, train) in enumerate(seen, start=1):
        assert [step for step, _ in val] == [4 * e for e in range(1, epoch + 1)]
        assert [step for step, _ in train] == list(range(1, 4 * epoch + 1))


def test_train_loss_points_are_the_steps_own_losses(tmp_path):
    # train/loss every log_every steps is that step's loss (read once, at the NaN check's sum), not a
    # mean nor an earlier step's; a step the loss tensor of which the step changes in place too.
    import torch
    from ignite.engine import Engine

    losses = [1.0 + ((7 * i) % 13) / 10 for i in range(40)]
    shared = torch.zeros(())
    for name, make in (("fresh", torch.tensor), ("in_place", shared.fill_), ("number", float)):
        s = tiny_setup()
        trainer = Engine(lambda e, batch, make=make: {"loss": make(losses[e.state.iteration - 1])})
        with attach_monitoring(
            trainer, s["evaluator"], s["val_loader"], run_dir=tmp_path / name, objective=Objective("loss", mode="min"),
            to_save={"model": s["model"]}, early_stopping=None, console=Console(log_every=5, quiet=True),
        ):
            trainer.run(range(10), max_epochs=4)
        points = read_scalars(tmp_path / name / "tb", "train/loss")
        assert points == [(i, pytest.approx(losses[i - 1])) for i in range(5, 41, 5)], name


def test_a_kill_mid_epoch_keeps_every_train_loss_point_but_about_the_last_seconds(tmp_path, monkeypatch):
    # A step of 0.25 s on a fake clock, a point every 2 steps: the points are handed to the OS about every
    # second, not one by one, and not only at the epoch's end.
    import time

    import torch
    from torch.utils.data import DataLoader

    s = tiny_setup()
    clock = {"now": 1000.0}
    monkeypatch.setattr(time, "monotonic", lambda: clock["now"])
    forty_batches = DataLoader(torch.utils.data.Subset(s["train_loader"].dataset, list(range(40)) * 4), batch_size=4)
    run = attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run", objective=Objective("loss", mode="min"),
        to_save={"model": s["model"]}, early_stopping=None, console=Console(log_every=2, quiet=True),
    )
    losses, on_disk = {}, {}

    @s["trainer"].on(Events.ITERATION_COMPLETED)
    def step_done(trainer):
        losses[trainer.state.iteration] = trainer.state.output["loss"]
        if trainer.state.iteration in (17, 30):  # what a kill -9 now would leave
            copy = tmp_path / f"copy{trainer.state.iteration}"
            shutil.copytree(tmp_path / "run" / "tb", copy)
            on_disk[trainer.state.iteration] = read_scalars(copy, "train/loss")
        clock["now"] += 0.25

    with run:
        s["trainer"].run(forty_batches, max_epochs=1)
    for iteration, points in on_disk.items():
        last = points[-1][0]
        assert iteration - 6 <= last <= iteration, (iteration, points)  # about a second (4 steps) and a point
        assert points == [(i, pytest.approx(losses[i])) for i in range(2, last + 1, 2)]
    assert read_scalars(tmp_path / "run" / "tb", "train/loss") == [(i, pytest.approx(losses[i])) for i in range(2, 41, 2)]


def test_no_writer_thread_is_left_running(tmp_path):
    import threading

    before = {t.name for t in threading.enumerate()}
    s = tiny_setup()
    with attach_monitoring(
        s["trainer"], s["evaluator"], s["val_loader"], run_dir=tmp_path / "run",
        objective=Objective("loss", mode="min"), to_save={"model": s["model"]},
    ):
        s["trainer"].run(s["train_loader"], max_epochs=1)
    assert {t.name for t in threading.enumerate()} - before == set()


def test_a_train_loss_point_is_written_as_the_event_tensorboardx_add_scalar_makes(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboardX import summary
    from tensorboardX.proto.event_pb2 import Event

    from monitor.handlers.tb_writer import SyncEventFileWriter

    writer = SyncEventFileWriter(str(tmp_path), ".x")
    writer.add_point(("train/loss", 0.6931, 40, 1700000000.25))
    writer.close()
    [path] = tmp_path.glob("events*")
    records = [e for e in map(Event.FromString, RawEventFileLoader(str(path)).Load()) if e.HasField("summary")]
    expected = Event(summary=summary.scalar("train/loss", 0.6931), step=40, wall_time=1700000000.25)
    assert [r.SerializeToString() for r in records] == [expected.SerializeToString()]


@pytest.mark.parametrize("tag", ["train/loss", "train/∆loss", "t" * 200])
def test_each_points_bytes_are_those_protobuf_makes_of_its_event(tag):
    # A point's event is serialized by hand on the training thread (a third of tensorboardX's cost):
    # every value, step and time must give protobuf's bytes, the ones it leaves out or rounds included.
    from tensorboardX.proto.event_pb2 import Event

    from monitor.handlers.tb_writer import _serialized

    values = [0.6931, 0.0, -0.0, math.nan, -math.nan, math.inf, -math.inf, 1e39, -1e39, 1e-46, 3.4028235e38, 2.5e-8]
    for value in values:
        for step in (1, 127, 128, 300_000, 2**40, 0, -5):
            for wall_time in (1700000000.25, 0.0, -0.0, 1e-300):
                event = Event(step=step, wall_time=wall_time)
                event.summary.value.add(tag=tag, simple_value=value)
                assert _serialized((tag, value, step, wall_time)) == event.SerializeToString(), (value, step, wall_time)


def test_each_record_is_the_one_tensorboardx_writes(tmp_path):
    from tensorboardX.record_writer import RecordWriter

    from monitor.handlers.tb_writer import _record

    for size in (0, 1, 30, 30, 127, 128, 1023, 1024, 5000, 5000):  # sizes seen twice: their kept checksums
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        writer = RecordWriter(str(tmp_path / f"r{size}"))
        writer.write(data)
        writer.close()
        assert _record(data) == (tmp_path / f"r{size}").read_bytes(), size

"""The TensorBoard reader gives what TensorBoard's own EventAccumulator gives, purges included."""
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter

from monitor.review import read_scalars
from tests.runs import start


def accumulator_view(log_dir):
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def reader_view(log_dir):
    df = read_scalars(log_dir)
    return {tag: list(zip(g["step"], g["value"], strict=True)) for tag, g in df.groupby("tag", observed=True, sort=False)}


def test_a_resumed_run_reads_as_tensorboard_shows_it(tmp_path):
    start(tmp_path, crash_at_iteration=14)
    start(tmp_path, resume=True, crash_at_iteration=22)
    start(tmp_path, resume=True)
    expected = accumulator_view(tmp_path / "tb")
    assert reader_view(tmp_path / "tb") == expected
    steps = [s for s, _ in expected["val/loss"]]
    assert steps == sorted(set(steps))  # each step once


def test_purge_step_and_out_of_order_writes_as_tensorboard_treats_them(tmp_path):
    first = SummaryWriter(str(tmp_path), filename_suffix=".1")
    for step in range(100):
        first.add_scalar("a", step * 1.0, step)
        first.add_scalar("b", -step * 1.0, step)
    first.close()
    second = SummaryWriter(str(tmp_path), purge_step=60, filename_suffix=".2")
    for step in range(60, 130):
        second.add_scalar("a", step + 0.5, step)
    second.add_scalar("b", 7.0, 40)  # out of order, but version-2 files purge only on SessionLog START
    second.close()
    expected = accumulator_view(tmp_path)
    got = reader_view(tmp_path)
    assert got == expected
    assert got["b"][-2:] == [(59, -59.0), (40, 7.0)]
    assert got["a"][59:61] == [(59, 59.0), (60, 60.5)]  # the purge_step hid the first writer's 60..99


def test_a_record_cut_by_a_crash_ends_the_file_quietly(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    for step in range(10):
        writer.add_scalar("a", float(step), step)
    writer.close()
    (path,) = tmp_path.glob("*tfevents*")
    path.write_bytes(path.read_bytes()[:-7])
    got = reader_view(tmp_path)
    assert got["a"] == [(s, float(s)) for s in range(9)]


def test_an_empty_or_missing_folder_gives_an_empty_frame(tmp_path):
    assert read_scalars(tmp_path / "missing").empty
    assert list(read_scalars(tmp_path).columns) == ["tag", "step", "value", "wall_time"]


@pytest.mark.parametrize("tag", ["val/loss", "lr"])
def test_scalars_match_the_history(tmp_path, tag):
    import pandas as pd

    start(tmp_path, patience=None, max_epochs=4)
    history = pd.read_csv(tmp_path / "history.csv")
    df = read_scalars(tmp_path / "tb")
    points = df[df["tag"] == tag]
    assert points["step"].tolist() == history["iteration"].tolist()
    assert points["value"].tolist() == pytest.approx(history[tag.replace("/", "_")].tolist(), rel=1e-6)


def test_old_format_files_purge_out_of_order_steps_per_tag(tmp_path):
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary
    from tensorboardX.record_writer import RecordWriter

    writer = RecordWriter(str(tmp_path / "events.out.tfevents.1.host"))
    writer.write(Event(wall_time=1.0, file_version="brain.Event:1").SerializeToString())
    for step, tag, value in [(1, "a", 1.0), (2, "a", 2.0), (2, "b", 20.0), (3, "a", 3.0), (2, "a", 9.0), (4, "b", 40.0)]:
        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)])
        writer.write(Event(wall_time=1.0, step=step, summary=summary).SerializeToString())
    writer.close()
    assert reader_view(tmp_path) == accumulator_view(tmp_path) == {"a": [(1, 1.0), (2, 9.0)], "b": [(2, 20.0), (4, 40.0)]}


def test_every_step_size_and_tag_reads_as_tensorboard_reads_it(tmp_path):
    # One-scalar events take a fast path; steps of 0 (left out of the record) to 10 varint bytes,
    # long and non-ASCII tags and several values in one event take the protobuf path or test its checks.
    from tensorboardX.proto.summary_pb2 import Summary

    writer = SummaryWriter(str(tmp_path))
    steps = [-5, 0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152, 2**40, 2**62]
    for i, step in enumerate(steps):
        writer.add_scalar("loss", 0.1 * i, step)
        writer.add_scalar("perte/é", -0.3 * i, step)
        writer.add_scalar("t" * 130, 1.5 * i, step)
        pair = [Summary.Value(tag="x", simple_value=2.0 * i), Summary.Value(tag="y", simple_value=3.0 * i)]
        writer.file_writer.add_summary(Summary(value=pair), step)
    writer.close()
    expected = accumulator_view(tmp_path)
    got = reader_view(tmp_path)
    assert [s for s, _ in got["loss"]] == steps
    assert got == expected and set(got) == {"loss", "perte/é", "t" * 130, "x", "y"}

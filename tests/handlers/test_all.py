"""Contract test over every stateful handler: state_dict holds plain types, and a new instance loaded
from it behaves as the original would."""
import json
import math

import pytest
import torch
from ignite.engine import Events

from monitor import BestTracker, EarlyStopping, History, HistoryRecorder, Objective, TrainLoss
from monitor.handlers.rng import RNGState
from tests.conftest import drive, stub_engine

SCORES = [1.0, 0.8, 0.85, math.nan, 0.9, 0.7, 0.75]


def assert_plain(value):
    """Only plain Python values: no tensors, arrays, files or writers (STYLE convention 3)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert isinstance(key, str)
            assert_plain(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            assert_plain(item)
    else:
        assert value is None or type(value) in (int, float, str, bool, bytes), type(value)


def make_es(trainer):
    return EarlyStopping(Objective("loss", mode="min", on_nonfinite="ignore"), trainer, patience=3)


def make_best(trainer):
    return BestTracker(Objective("loss", mode="min"), trainer)


@pytest.mark.parametrize("factory", [make_es, make_best], ids=["EarlyStopping", "BestTracker"])
@pytest.mark.parametrize("split", range(1, len(SCORES)))
def test_round_trip_at_any_point_gives_the_same_decisions(factory, split):
    whole_trainer = stub_engine()
    whole = factory(whole_trainer)
    drive(whole, SCORES, trainer=whole_trainer)

    first_trainer = stub_engine()
    first = factory(first_trainer)
    stopped = drive(first, SCORES[:split], trainer=first_trainer)
    state = first.state_dict()
    assert_plain(state)
    second_trainer = stub_engine()
    second = factory(second_trainer)
    second.load_state_dict(state)
    if not stopped:
        drive(second, SCORES[split:], trainer=second_trainer, start=split + 1)
    assert second.state_dict() == whole.state_dict()


def test_train_loss_round_trip_keeps_a_stop_reason():
    tracker = TrainLoss(stub_engine())
    tracker._sum, tracker._count = torch.tensor(math.nan), 1
    tracker.check(tracker.trainer)
    other = TrainLoss(stub_engine())
    other.load_state_dict(json.loads(json.dumps(tracker.state_dict())))
    assert other.stop_reason is tracker.stop_reason is not None


def test_history_recorder_round_trip_keeps_elapsed_time(tmp_path):
    trainer = stub_engine()
    recorder = HistoryRecorder(History(tmp_path / "h.csv"), trainer, make_best(trainer))
    recorder._elapsed_before = 12.5
    other = HistoryRecorder(History(tmp_path / "h.csv"), trainer, make_best(trainer))
    other.load_state_dict(json.loads(json.dumps(recorder.state_dict())))
    assert other.elapsed_s == 12.5


def test_rng_state_round_trip_replays_the_same_numbers():
    state = RNGState().state_dict()
    assert_plain(state)
    expected = torch.rand(3)
    RNGState().load_state_dict(state)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("factory", [make_es, make_best], ids=["EarlyStopping", "BestTracker"])
def test_handlers_accept_an_engine_event(factory):
    trainer, evaluator = stub_engine(), stub_engine()
    handler = factory(trainer)
    evaluator.add_event_handler(Events.COMPLETED, handler)
    evaluator.state.metrics = {"loss": 0.5}
    trainer.state.epoch = 1
    evaluator.fire_event(Events.COMPLETED)
    assert handler.state_dict()["best_" + ("score" if factory is make_es else "value")] == 0.5

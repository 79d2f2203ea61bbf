"""Contract test over every stateful handler in monitor.handlers and monitor.parts, found by looking (as skorch's test_all
finds its callbacks): state_dict holds plain types, and a new instance loaded from it at any point takes
the same decisions as the original would have, the stop included."""
import importlib
import inspect
import itertools
import math
import pickle
import pkgutil
import random
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy
import pytest
import torch
from ignite.base.mixins import Serializable
from ignite.engine import Engine, Events
from ignite.engine.deterministic import DeterministicEngine, _set_rng_states
from torch.utils.data import DataLoader, TensorDataset

import monitor.handlers
import monitor.parts
from monitor import Objective
from monitor.handlers.best import BestTracker
from monitor.handlers.data import DataOrder, _ReplayableLoader
from monitor.handlers.history import HistoryRecorder
from monitor.handlers.loss import TrainLoss
from monitor.handlers.outputs import TrainOutputs
from monitor.handlers.rng import DeterministicEngineState, RNGState
from monitor.handlers.stopping import EarlyStoppingHandler
from monitor.parts.plateau import LROnPlateau
from monitor.store.history import TIMING_COLUMNS, History
from tests.conftest import stub_engine


def discovered_handlers():
    found = set()
    for package in (monitor.handlers, monitor.parts):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, Serializable) and cls.__module__ == module.__name__:
                    found.add(cls)
    return found


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


SCORES = [1.0, 0.8, 0.85, math.nan, 0.9, 0.7, 0.75, 0.76, 0.77, 0.5]
EPOCH_LOSSES = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5], [0.4, 0.3, 0.2], [0.2, math.nan, 0.1], [0.1, 0.1, 0.1]]


def validate(evaluator, trainer, epoch, value):
    trainer.state.epoch, trainer.state.iteration = epoch, 10 * epoch
    evaluator.state.metrics = {"loss": value, "other": 1.0}


@dataclass
class Scenario:
    """How to build a handler on a fresh trainer, drive step ``i`` (returning what a user would see),
    and which part of its state is comparable across processes."""

    make: Callable[[Engine, Any], Any]
    step: Callable[[Any, Engine, int], Any]
    steps: int
    comparable: Callable[[dict], dict] = lambda state: state


def es_step(handler, trainer, i):
    evaluator = stub_engine()
    validate(evaluator, trainer, i + 1, SCORES[i])
    handler(evaluator)
    return handler.counter, handler.best_score, handler.stop_reason


def best_step(handler, trainer, i):
    evaluator = stub_engine()
    validate(evaluator, trainer, i + 1, SCORES[i])
    handler(evaluator)
    return handler.is_best, handler.best_value, handler.best_epoch


def loss_step(handler, trainer, i):
    trainer.state.epoch = i + 1
    handler.started(trainer)
    for loss in EPOCH_LOSSES[i]:
        trainer.state.output = {"loss": torch.tensor(loss)}
        handler(trainer)
    handler.check(trainer)
    return handler.epoch_mean if handler.epoch_mean is None or math.isfinite(handler.epoch_mean) else "nonfinite", \
        handler.stop_reason


def history_step(handler, trainer, i):
    evaluator = stub_engine()
    validate(evaluator, trainer, i + 1, SCORES[i])
    handler.best(evaluator)
    handler.epoch_started(trainer)
    handler(evaluator)
    # is_best is the tracker's decision (its own round trip is tested); timings differ between runs
    row = {k: v for k, v in handler.last_row.items() if k not in ("elapsed_s", "epoch_s", "is_best")}
    return row, handler.elapsed_s >= 0


def rng_step(handler, trainer, i):
    return torch.rand(2).tolist(), random.random(), float(numpy.random.rand())


def make_order(trainer, _):
    loader = DataLoader(TensorDataset(torch.arange(12.0)), batch_size=4, shuffle=True,
                        generator=torch.Generator().manual_seed(3))  # the loader's own generator
    trainer.state.dataloader, trainer.state.epoch_length = loader, 3
    return DataOrder(trainer)


def order_step(order, trainer, i):
    if not isinstance(trainer.state.dataloader, _ReplayableLoader):
        order.started(trainer)  # the trainer's STARTED: after a resume's load_state_dict
    trainer.state.epoch, trainer.state.iteration = i + 1, 3 * i
    return [batch[0].tolist() for batch in trainer.state.dataloader]


def make_deterministic(trainer, _):
    engine = DeterministicEngine(lambda e, b: None)
    engine.state.epoch_length, engine.state.max_epochs = 4, 10
    return DeterministicEngineState(engine)


def deterministic_step(handler, trainer, i):
    engine = handler.engine
    # Each instance's engine starts once: Ignite draws a seed, a loaded one is put back. (Marked on the
    # engine: a set of id()s was flaky, as a new instance can reuse a collected one's id.)
    if not getattr(engine, "_test_started", False):
        engine._test_started = True
        engine.fire_event(Events.STARTED)
    if engine.state.rng_states is not None:  # what Ignite does on a resume mid-epoch
        _set_rng_states(engine.state.rng_states)
        engine.state.rng_states = None
    engine.state.iteration = i + 1
    return engine.state.seed, torch.rand(2).tolist(), random.random(), float(numpy.random.rand())


def outputs_step(handler, trainer, i):
    trainer.state.epoch_length, trainer.state.epoch, trainer.state.iteration = 3, i // 3 + 1, i
    handler.started(trainer)  # EPOCH_STARTED resets at an epoch's start only, not on a resume mid-epoch
    trainer.state.iteration = i + 1
    trainer.state.output = {"loss": torch.tensor(1.0), "grad_norm": torch.tensor(float(i) ** 2), "scale": 0.5 * i,
                            "per_class": torch.ones(3), "note": "text"}
    handler(trainer)
    return handler.values()


VERDICTS = [True, False, False, False, True, False, False, False, False, True, False, False]  # improvement or not


def make_plateau(trainer, _):
    # The tracker's verdicts are scripted: the plateau is judged on its own state alone.
    best = SimpleNamespace(is_best=False, trainer=trainer, objective=Objective("loss", mode="min"))
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0)
    return LROnPlateau(patience=2, factor=0.5, cooldown=1).bind(best, optimizer)


def plateau_step(handler, trainer, i):
    trainer.state.epoch = i + 1
    handler.best.is_best = VERDICTS[i]
    before = handler.scheduler.optimizer.param_groups[0]["lr"]
    handler(stub_engine())
    cut = handler.scheduler.optimizer.param_groups[0]["lr"] < before  # the optimizer's own lr is its state
    return cut, handler.improvements, handler.scheduler.num_bad_epochs, handler.scheduler.cooldown_counter


_FILES = itertools.count()


def make_history(trainer, tmp_path):
    best = BestTracker(Objective("loss", mode="min"), trainer)
    # a file of its own each time (random.random() repeats after the scenario's reseeding, and a file with
    # the rows of an earlier round is not the history of this one)
    return HistoryRecorder(History(tmp_path / f"h{next(_FILES)}.csv"), trainer, best)


SCENARIOS = {
    EarlyStoppingHandler: Scenario(
        lambda trainer, _: EarlyStoppingHandler(Objective("loss", mode="min", on_nonfinite="ignore"), trainer, patience=3),
        es_step, len(SCORES),
    ),
    BestTracker: Scenario(lambda trainer, _: BestTracker(Objective("loss", mode="min"), trainer), best_step, len(SCORES)),
    TrainLoss: Scenario(lambda trainer, _: TrainLoss(trainer), loss_step, len(EPOCH_LOSSES),
                        lambda state: {**state, "sum": repr(state["sum"])}),  # nan == nan, as text
    HistoryRecorder: Scenario(make_history, history_step, len(SCORES), lambda state: {
        # (timings differ from run to run, in the rows too; is_best is the BestTracker's, not round-tripped here)
        **state, "elapsed_s": None,
        "rows": [{k: v for k, v in row.items() if k not in (*TIMING_COLUMNS, "is_best")} for row in state["rows"]]}),
    RNGState: Scenario(lambda trainer, _: RNGState(), rng_step, 6),
    LROnPlateau: Scenario(make_plateau, plateau_step, len(VERDICTS),
                          lambda state: {**state, "scheduler": {k: v for k, v in state["scheduler"].items()
                                                                if k != "_last_lr"}}),
    TrainOutputs: Scenario(lambda trainer, _: TrainOutputs(trainer), outputs_step, 8),
    DeterministicEngineState: Scenario(make_deterministic, deterministic_step, 6,
                                       lambda state: {k: v for k, v in state.items() if k != "rng_states"}),
    # The global RNG in epoch_rng is RNGState's to restore; here the loader has its own generator.
    DataOrder: Scenario(make_order, order_step, 5, lambda state: {
        "generators": state["generators"], "epoch": (state["epoch_rng"] or {}).get("generators"),
    }),
}


def test_every_stateful_handler_has_a_scenario():
    assert discovered_handlers() == set(SCENARIOS), "add a Scenario for each new Serializable handler"


def drive(scenario, handler, trainer, steps):
    seen = []
    for i in steps:
        seen.append(scenario.step(handler, trainer, i))
        if trainer.should_terminate:
            return seen, i + 1
    return seen, 0


@pytest.mark.parametrize("cls", sorted(SCENARIOS, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_round_trip_at_any_point_gives_the_same_decisions_and_stop(cls, tmp_path):
    scenario = SCENARIOS[cls]
    torch.manual_seed(0), random.seed(0), numpy.random.seed(0)
    whole_trainer = stub_engine()
    whole = scenario.make(whole_trainer, tmp_path)
    expected, expected_stop = drive(scenario, whole, whole_trainer, range(scenario.steps))
    for split in range(1, len(expected)):
        torch.manual_seed(0), random.seed(0), numpy.random.seed(0)
        first_trainer = stub_engine()
        first = scenario.make(first_trainer, tmp_path)
        seen, stop = drive(scenario, first, first_trainer, range(split))
        state = first.state_dict()
        assert_plain(state)
        torch.rand(5), random.random(), numpy.random.rand()  # another process: its own RNG draws before loading
        second_trainer = stub_engine()
        second = scenario.make(second_trainer, tmp_path)
        second.load_state_dict(pickle.loads(pickle.dumps(state)))
        assert scenario.comparable(second.state_dict()) == scenario.comparable(state)
        if not stop:
            more, stop = drive(scenario, second, second_trainer, range(split, scenario.steps))
            seen += more
        assert seen == expected, f"split at {split}"
        assert stop == expected_stop, f"split at {split}"
        assert scenario.comparable(second.state_dict()) == scenario.comparable(whole.state_dict())


def test_the_scenarios_do_stop_where_a_stop_is_expected():
    # The round trips above compare stops: make sure there are stops to compare.
    for cls, epoch in ((EarlyStoppingHandler, 5), (TrainLoss, 4)):
        trainer = stub_engine()
        _, stop = drive(SCENARIOS[cls], SCENARIOS[cls].make(trainer, None), trainer, range(SCENARIOS[cls].steps))
        assert stop == epoch, cls.__name__


@pytest.mark.parametrize("cls", [EarlyStoppingHandler, BestTracker], ids=lambda c: c.__name__)
def test_evaluator_handlers_run_on_an_engine_event(cls):
    trainer, evaluator = stub_engine(), stub_engine()
    handler = SCENARIOS[cls].make(trainer, None)
    evaluator.add_event_handler(Events.COMPLETED, handler)
    evaluator.state.metrics = {"loss": 0.5}
    trainer.state.epoch = 1
    evaluator.fire_event(Events.COMPLETED)
    assert handler.state_dict()["best_" + ("score" if cls is EarlyStoppingHandler else "value")] == 0.5


def test_a_handler_reading_is_best_before_the_tracker_judged_the_run_is_an_error():
    from ignite.engine import Engine

    from monitor.handlers import attach_best_tracker

    trainer, evaluator = stub_engine(), Engine(lambda e, b: None)
    evaluator.add_event_handler(Events.COMPLETED, lambda _: best.is_best)  # attached too early
    best = attach_best_tracker(evaluator, trainer, Objective("loss", mode="min"))
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(loss=1.0))
    with pytest.raises(RuntimeError, match="read before the tracker judged this validation run"):
        evaluator.run([0])

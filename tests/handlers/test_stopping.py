import math

import pytest
from ignite.handlers import EarlyStopping as IgniteEarlyStopping

from monitor import Objective
from monitor.core import StopReason
from monitor.handlers import EarlyStoppingHandler
from tests.conftest import drive, stub_engine


def es(patience=3, mode="min", **kwargs):
    objective_kwargs = {k: kwargs.pop(k) for k in ("threshold", "threshold_mode", "warmup", "on_nonfinite") if k in kwargs}
    return EarlyStoppingHandler(Objective("loss", mode=mode, **objective_kwargs), stub_engine(), patience, **kwargs)


def test_is_an_ignite_early_stopping():
    assert isinstance(es(), IgniteEarlyStopping)


def test_stops_after_patience_validations_without_improvement():
    handler = es(patience=3)
    assert drive(handler, [1.0, 0.9, 0.95, 0.92, 0.91, 0.5]) == 5
    assert handler.stop_reason is StopReason.PATIENCE_EXHAUSTED
    assert handler.best_score == 0.9


def test_a_tie_is_no_improvement_so_a_flat_plateau_stops():
    # The tutorial's `<` counted ties as improvements: a flat plateau never stopped.
    assert drive(es(patience=2), [1.0, 0.5, 0.5, 0.5, 0.5]) == 4


def test_slow_steady_improvement_is_not_stopped_by_a_creeping_best():
    # Steps of 0.005 against threshold 0.01: every second step adds up to a real improvement on the
    # last best, so the run goes on. Ignite's default (cumulative=False) moves its best by each
    # sub-threshold step, never sees an improvement, and stops at epoch 4.
    values = [1.0, 0.995, 0.99, 0.985, 0.98, 0.975, 0.97]
    handler = es(patience=3, threshold=0.01)
    assert drive(handler, values) == 0
    assert handler.best_score == 0.97

    ignite_trainer = stub_engine()
    ignite_default = IgniteEarlyStopping(3, lambda e: -e.state.metrics["loss"], ignite_trainer, threshold=0.01)
    assert drive(ignite_default, values, trainer=ignite_trainer) == 4


def test_sub_threshold_changes_alone_exhaust_patience():
    handler = es(patience=3, threshold=0.01)
    assert drive(handler, [1.0, 0.998, 0.996, 0.994]) == 4
    assert handler.best_score == 1.0


def test_nan_is_never_best_and_stops_with_its_reason():
    handler = es(patience=5)
    assert drive(handler, [1.0, 0.8, math.nan, 0.1]) == 3
    assert handler.stop_reason is StopReason.NONFINITE_METRIC
    assert handler.best_score == 0.8


def test_nan_as_first_score_does_not_become_the_best():
    handler = es(patience=2, on_nonfinite="ignore")
    assert drive(handler, [math.nan, 1.0, 0.9]) == 0
    assert handler.best_score == 0.9


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_infinite_scores_stop_too(bad):
    handler = es(patience=5, mode="max")
    assert drive(handler, [0.5, bad]) == 2
    assert handler.stop_reason is StopReason.NONFINITE_METRIC


def test_ignore_policy_counts_nan_as_no_improvement():
    handler = es(patience=2, on_nonfinite="ignore")
    assert drive(handler, [1.0, math.nan, math.nan, 0.1]) == 3
    assert handler.stop_reason is StopReason.PATIENCE_EXHAUSTED


def test_warmup_neither_counts_patience_nor_sets_a_best():
    handler = es(patience=2, warmup=3)
    # Epochs 1-3 get worse and would exhaust patience 2 without warm-up.
    assert drive(handler, [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]) == 6
    assert handler.best_score == 0.8  # first best is epoch 4


def test_baseline_must_be_beaten():
    handler = es(patience=3, baseline=0.5)
    assert drive(handler, [0.9, 0.8, 0.7, 0.4]) == 3
    assert handler.best_score is None
    handler = es(patience=3, baseline=0.5)
    assert drive(handler, [0.9, 0.4, 0.45, 0.45, 0.45]) == 5
    assert handler.best_score == 0.4


def test_target_reached_stops_at_once():
    handler = es(patience=10, mode="max", target=0.95)
    assert drive(handler, [0.5, 0.9, 0.96, 0.97]) == 3
    assert handler.stop_reason is StopReason.TARGET_REACHED


def test_divergence_stops_when_worse_than_the_limit():
    handler = es(patience=10, divergence=10.0)
    assert drive(handler, [2.0, 1.0, 9.0, 11.0, 0.5]) == 4
    assert handler.stop_reason is StopReason.DIVERGED


def test_state_round_trip_resumes_the_count():
    first = es(patience=3)
    drive(first, [1.0, 0.9, 0.95, 0.96])  # counter 2
    second = es(patience=3)
    second.load_state_dict(first.state_dict())
    evaluator = stub_engine()
    evaluator.state.metrics = {"loss": 0.97}
    second.trainer.state.epoch = 5
    second(evaluator)
    assert second.trainer.should_terminate and second.stop_reason is StopReason.PATIENCE_EXHAUSTED


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(patience=0), "patience should be a positive integer, got 0"),
        (dict(patience=2.5), "patience should be a positive integer, got 2.5"),
        (dict(patience=3, target="0.9"), "target should be a number or None, got '0.9'"),
        (dict(patience=3, target=5.0, divergence=1.0), r"target \(5.0\) should be better than divergence \(1.0\)"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        es(**kwargs)


def test_attach_on_the_evaluator_stops_training_where_ignites_would_never_stop():
    # Ignite 0.5.5's attach(evaluator) also resets the counter on the evaluator's STARTED, i.e. before
    # every validation run, so it never reaches patience. Ours runs on COMPLETED and resets nothing.
    from ignite.engine import Engine, Events

    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    handler = EarlyStoppingHandler(Objective("loss", mode="min"), trainer, patience=2)
    handler.attach(evaluator)
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(loss=1.0))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    trainer.run([0, 1], max_epochs=10)
    assert trainer.state.epoch == 3 and handler.stop_reason is StopReason.PATIENCE_EXHAUSTED
    with pytest.raises(TypeError, match="there is no reset_engine"):
        handler.attach(evaluator, reset_engine=trainer)

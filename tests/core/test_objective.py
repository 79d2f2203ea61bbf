import math

import pytest

from monitor import Objective


@pytest.mark.parametrize(
    "mode, value, best, expected",
    [
        ("min", 0.3, 0.4, True),
        ("min", 0.4, 0.4, False),  # a tie is no improvement
        ("min", 0.5, 0.4, False),
        ("max", 0.9, 0.8, True),
        ("max", 0.8, 0.8, False),
        ("min", 1.0, None, True),  # the first finite value is the first best
        ("min", math.nan, None, False),
        ("max", math.inf, 0.5, False),
        ("min", -math.inf, 0.5, False),
    ],
)
def test_is_improvement(mode, value, best, expected):
    assert Objective("m", mode=mode).is_improvement(value, best) is expected


def test_absolute_threshold_needs_a_real_step():
    objective = Objective("loss", mode="min", threshold=0.01)
    assert not objective.is_improvement(0.395, 0.40)
    assert objective.is_improvement(0.389, 0.40)


def test_relative_threshold_is_relative_to_the_size_of_best_even_when_negative():
    objective = Objective("nll", mode="min", threshold=0.1, threshold_mode="rel")
    # best -2.0: an improvement must go below -2.2. Ignite's best*(1-t) would accept -1.9 (worse).
    assert not objective.is_improvement(-1.9, -2.0)
    assert not objective.is_improvement(-2.1, -2.0)
    assert objective.is_improvement(-2.3, -2.0)
    assert Objective("acc", mode="max", threshold=0.1, threshold_mode="rel").is_improvement(0.56, 0.5)


def test_warmup_epochs_are_never_an_improvement():
    objective = Objective("loss", mode="min", warmup=3)
    assert not objective.is_improvement(0.1, None, epoch=3)
    assert objective.is_improvement(0.1, None, epoch=4)


def test_score_is_higher_for_better_and_names_its_sign():
    assert Objective("loss", mode="min").score(0.4) == -0.4
    assert Objective("loss", mode="min").score_name == "neg_val_loss"
    assert Objective("accuracy", mode="max").score(0.9) == 0.9
    assert Objective("accuracy", mode="max").score_name == "val_accuracy"


def test_missing_metric_lists_what_is_available():
    with pytest.raises(KeyError, match=r"'los' not in evaluator.state.metrics; available: \['accuracy', 'loss'\]"):
        Objective("los", mode="min").value({"loss": 1.0, "accuracy": 0.5})


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(metric="loss", mode="auto"), ValueError, r"mode should be one of \('min', 'max'\), got 'auto'"),
        (dict(metric="", mode="min"), TypeError, "metric should be a non-empty metric name, got ''"),
        (dict(metric="loss", mode="min", threshold=-0.1), ValueError, "threshold should be a finite number >= 0, got -0.1"),
        (dict(metric="loss", mode="min", threshold="0.1"), TypeError, "threshold should be a number, got '0.1'"),
        (dict(metric="loss", mode="min", threshold_mode="pct"), ValueError, "threshold_mode should be one of"),
        (dict(metric="loss", mode="min", warmup=-1), ValueError, "warmup should be an integer >= 0, got -1"),
        (dict(metric="loss", mode="min", on_nonfinite="skip"), ValueError, "on_nonfinite should be one of"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        Objective(**kwargs)


def test_mode_is_required():
    with pytest.raises(TypeError):
        Objective("loss")  # type: ignore[call-arg]

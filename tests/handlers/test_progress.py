"""The progress bar redraws by time, not per iteration."""
import io

import pytest
import torch
from ignite.engine import Engine

from monitor import attach_progress_bar


def redraws(refresh_s, iterations=200):
    out = io.StringIO()
    engine = Engine(lambda e, b: {"loss": torch.tensor(0.5)})
    attach_progress_bar(engine, refresh_s=refresh_s, file=out, mininterval=0)  # tqdm itself would not wait
    engine.run(range(iterations), max_epochs=1)
    return out.getvalue().count("\r")


def test_a_fast_loop_is_redrawn_only_as_often_as_refresh_s_allows():
    assert redraws(refresh_s=0) >= 200  # every iteration
    assert redraws(refresh_s=3600) <= 10  # the first iteration and the end of the epoch (a few \r each)


def test_a_negative_refresh_is_refused_at_once():
    with pytest.raises(ValueError, match="refresh_s should be a number of seconds >= 0, got -1"):
        attach_progress_bar(Engine(lambda e, b: None), refresh_s=-1)

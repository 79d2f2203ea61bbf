"""Where a trainer is within its epoch, from its state: one place for the arithmetic. Pure Python.

``state`` is an Ignite ``State`` (or anything with ``epoch``, ``iteration`` and ``epoch_length``);
``epoch_length`` is ``None`` while the first epoch of data of unknown length runs.

Examples:
    .. code-block:: python

        done_in_epoch(trainer.state)   # 37: a resume 37 iterations into the epoch
        is_mid_epoch(trainer.state)    # True: a checkpoint here is within the epoch
"""
from __future__ import annotations

from typing import Any

__all__ = ["done_in_epoch", "is_mid_epoch", "is_last_of_epoch"]


def done_in_epoch(state: Any) -> int:
    """Iterations of the current epoch already run (0 at its start, or while its length is unknown)."""
    if not state.epoch_length:
        return 0
    return int(state.iteration - (state.epoch - 1) * state.epoch_length)


def is_mid_epoch(state: Any) -> bool:
    """Whether the iteration is inside an epoch of known length, not at its end."""
    return state.epoch_length is not None and state.iteration % state.epoch_length != 0


def is_last_of_epoch(state: Any) -> bool:
    """Whether the iteration is the last of an epoch of known length."""
    return state.epoch_length is not None and state.iteration % state.epoch_length == 0

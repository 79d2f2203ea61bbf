"""Where a trainer is within its epoch, from its state: one place for the arithmetic. Pure Python.

``state`` is an Ignite ``State`` (or anything with ``epoch``, ``iteration`` and ``epoch_length``);
``epoch_length`` is ``None`` while the first epoch of data of unknown length runs.

Examples:
    .. code-block:: python

        done_in_epoch(trainer.state)   # 37: a resume 37 iterations into the epoch
        is_mid_epoch(trainer.state)    # True: a checkpoint here is within the epoch
        run_iteration(trainer.state)   # 1250: the steps the run took, the history's ``iteration``
"""
from __future__ import annotations

from typing import Any

__all__ = ["done_in_epoch", "is_mid_epoch", "is_last_of_epoch", "run_iteration"]


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


def run_iteration(state: Any) -> int:
    """The steps the run took: the ``iteration`` monitor records (history, checkpoint names, TensorBoard,
    trackers). It is Ignite's ``state.iteration`` unless a resume changed the steps an epoch has (another
    global batch): Ignite's count is then renumbered so that its epoch arithmetic holds, and
    ``state.iteration_offset`` keeps the difference."""
    return int(state.iteration) + int(getattr(state, "iteration_offset", 0))

"""StepWork: everything monitor does after a training step, in one Ignite handler.

Ignite calls each handler of an event through its own dispatch (and a filtered one through a
wrapper that runs its filter on every step): nine handlers and a filter each cost more than the
work they did. Here the work of every part runs from one ``ITERATION_COMPLETED`` handler, in a fixed
order, and what is due only every ``log_every`` steps is a modulo, not a filtered handler.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from ignite.engine import Engine, Events

from monitor.core._checks import positive_int

__all__ = ["StepWork", "step_for"]

Work = Callable[[Engine], None]


class BusyClock(Protocol):
    """A clock of the time spent on steps: ``asked`` when a step asked for its batch, ``busy`` the sum."""

    asked: float
    busy: float


class StepWork:
    """The per-step work of the attached parts, called in this order after each training step:

    1. ``first``: the parts' own work (e.g. gradient norms added to the step's output);
    2. ``every_step``: the loss sum; ``outputs``, only where the step's output is more than
       ``{"loss": ...}`` (build_trainer's): the other outputs' sums; ``clock``'s busy time
       (:class:`~monitor.handlers.outputs.Throughput`'s, inline: no call of its own);
    3. ``checks`` (every ``log_every`` iterations and at an epoch's last one; empty unless a part
       asks): e.g. :class:`~monitor.parts.recovery.Recovery` judging the steps since the last check,
       before monitor's own NaN check can stop the run;
    4. ``every_log`` (every ``log_every`` iterations): the NaN check, TensorBoard's ``train/loss``;
    5. ``last``: the stop request, the time limit, the checkpoint cadence (which may save here).

    Attach it before the handlers that read this step's sums (a validation within the epoch). When
    such a handler runs on ``ITERATION_COMPLETED`` (``last_apart``), ``last`` must follow it, so it is
    attached after it as a second handler (:meth:`attach_last`); otherwise it is part of the one.

    Examples:
        .. code-block:: python

            step = StepWork(log_every=10)
            step.every_step.append(train_loss)
            step.every_log.append(train_loss.check)
            step.attach(trainer)          # one handler on the *trainer*'s ITERATION_COMPLETED
    """

    def __init__(self, *, log_every: int = 10, last_apart: bool = False) -> None:
        self.log_every = positive_int("log_every", log_every)
        self.last_apart = last_apart
        self.first: list[Work] = []
        self.every_step: list[Work] = []
        self.outputs: list[Work] = []
        self.clock: BusyClock | None = None
        self.checks: list[Work] = []
        self.every_log: list[Work] = []
        self.last: list[Work] = []

    def __call__(self, engine: Engine) -> None:
        for work in self.first:
            work(engine)
        for work in self.every_step:
            work(engine)
        if self.outputs:  # each a call a step to find nothing but the loss: the guard here instead
            output: Any = engine.state.output
            if type(output) is not dict or len(output) != 1 or "loss" not in output:
                for work in self.outputs:
                    work(engine)
        clock = self.clock
        if clock is not None:
            clock.busy += time.perf_counter() - clock.asked
        if self.checks:  # each log_every steps and at an epoch's last (is_last_of_epoch, inlined)
            state = engine.state
            if state.iteration % self.log_every == 0 or (
                    state.epoch_length is not None and state.iteration % state.epoch_length == 0):
                for work in self.checks:
                    work(engine)
        if engine.state.iteration % self.log_every == 0:
            for work in self.every_log:
                work(engine)
        if not self.last_apart:
            for work in self.last:
                work(engine)

    def run_last(self, engine: Engine) -> None:
        for work in self.last:
            work(engine)

    def attach(self, trainer: Engine) -> StepWork:
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self)
        return self

    def attach_last(self, trainer: Engine) -> None:
        """With ``last_apart``: ``last`` as a handler of its own, after those attached so far."""
        if self.last_apart:
            trainer.add_event_handler(Events.ITERATION_COMPLETED, self.run_last)


def step_for(trainer: Engine, step: StepWork | None, every: int | None, name: str) -> StepWork:
    """The :class:`StepWork` a handler's per-step work joins: ``step`` (monitor's one, whose ``log_every``
    is then the handler's cadence), or, for a handler attached alone, one of its own on ``trainer``
    every ``every`` steps (default 10). An ``every`` that disagrees with ``step``'s is refused: one
    setting, one owner.

    Examples:
        .. code-block:: python

            step = step_for(trainer, None, 5, "check_every")   # alone: its own StepWork, every 5 steps
    """
    if every is not None:
        positive_int(name, every)
    if step is None:
        return StepWork(log_every=10 if every is None else every).attach(trainer)
    if every is not None and every != step.log_every:
        raise ValueError(f"Argument {name}={every} disagrees with step's log_every={step.log_every}: with step=, its "
                         f"log_every is the cadence; pass {name} only to a handler attached alone.")
    return step


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
    """A clock of the time spent on steps: ``asked`` when a step asked for its batch, ``busy`` the sum
    (``time.monotonic()``, the cadence's clock: one read a step for both)."""

    asked: float
    busy: float


class LossSink(Protocol):
    """The training loss: ``inline``, once open, the list a step's finite ``{"loss": float}`` joins without
    a call (:class:`~monitor.handlers.loss.TrainLoss`'s numbers); any other output is its call. ``check``
    every ``log_every`` steps, unless the steps since were all inline and fewer than ``fold_every``
    are waiting (finite numbers on one process: nothing to check until they are summed)."""

    inline: list[float] | None
    fold_every: int

    def __call__(self, engine: Engine, /) -> None: ...

    def check(self, engine: Engine, /) -> None: ...


class PointSink(Protocol):
    """The ``train/loss`` point every ``log_every`` steps: ``inline``, once open, the list of points waiting
    for the OS that a step's inline loss joins as ``(tag, value, step, wall time)`` without a call (the
    trainer's ``iteration`` plus ``offset``; the step's clock plus ``wall_offset``), handed over once
    ``time.monotonic()`` reaches ``due_at`` (:class:`~monitor.handlers.tensorboard.TrainLossPoints`'s);
    any other step's point is its call."""

    tag: str
    inline: list[Any] | None
    offset: int
    wall_offset: float
    due_at: float

    def __call__(self, engine: Engine, /) -> None: ...

    def hand_over(self, now: float, /) -> None: ...


class DueCheck(Protocol):
    """A save made by the clock: ``at_step(engine)`` is called after a step once ``pending`` or once
    ``time.monotonic()`` reaches ``due_at`` (the checkpoint cadence's; a clock read a step, no call)."""

    pending: bool
    due_at: float

    def at_step(self, engine: Engine) -> None: ...


class StepWork:
    """The per-step work of the attached parts, called in this order after each training step:

    1. ``first``: the parts' own work (e.g. gradient norms added to the step's output);
    2. ``loss``: the training loss (build_trainer's finite ``{"loss": float}`` appended to its list inline,
       any other output its call); ``outputs``, only where the output is more than ``{"loss": ...}``:
       the other outputs' sums; ``clock``'s busy time (:class:`~monitor.handlers.outputs.Throughput`'s,
       inline);
    3. ``checks`` (every ``log_every`` iterations and at an epoch's last one; empty unless a part
       asks): e.g. :class:`~monitor.parts.recovery.Recovery` judging the steps since the last check,
       before monitor's own NaN check can stop the run;
    4. every ``log_every`` iterations: ``loss``'s NaN check (where a step since was not inline, see
       ``LossSink``), ``points``' ``train/loss`` (TensorBoard's; inline after an inline step), then
       ``every_log``;
    5. ``due``'s save, when the clock says so (the checkpoint cadence's: it may save here), then ``last``:
       the time limit, the stop request.

    What is inline costs no Python call: after the step's own work each call finds its code out of the
    caches. Attach it before the handlers that read this step's sums (a validation within the epoch).
    When such a handler runs on ``ITERATION_COMPLETED`` (``last_apart``), ``due`` and ``last`` must
    follow it, so they are attached after it as a second handler (:meth:`attach_last`); otherwise they
    are part of the one.

    Examples:
        .. code-block:: python

            step = StepWork(log_every=10)
            step.loss = train_loss        # its sum, and its NaN check every 10 steps
            step.every_log.append(stop.honour)
            step.attach(trainer)          # one handler on the *trainer*'s ITERATION_COMPLETED
    """

    def __init__(self, *, log_every: int = 10, last_apart: bool = False) -> None:
        self.log_every = positive_int("log_every", log_every)
        self.last_apart = last_apart
        self.first: list[Work] = []
        self.loss: LossSink | None = None
        self.outputs: list[Work] = []
        self.clock: BusyClock | None = None
        self.checks: list[Work] = []
        self.points: PointSink | None = None
        self.every_log: list[Work] = []
        self.due: DueCheck | None = None
        self.last: list[Work] = []

    def __call__(self, engine: Engine) -> None:
        for work in self.first:
            work(engine)
        # Type tests, len(), `in` and subscripts: the interpreter's own paths, not methods or C functions
        # that are out of the caches after the step's own work (each about 1-4 us there).
        output: Any = engine.state.output
        numbers = self.loss.inline if self.loss is not None else None
        # build_trainer's {"loss": float}, finite (x - x is 0.0 for a finite x, NaN for the others): nothing
        # else to sum, nothing to check
        if numbers is not None and type(output) is dict and len(output) == 1 and "loss" in output and (
                type(value := output["loss"]) is float) and value - value == 0.0:
            numbers.append(value)
        else:
            numbers = None
            if self.loss is not None:
                self.loss(engine)
            if self.outputs and (type(output) is not dict or len(output) != 1 or "loss" not in output):
                for work in self.outputs:  # (the guard: a call a step to find nothing but the loss otherwise)
                    work(engine)
        # One clock read a step for the busy clock and the cadence (a clock function costs about 4 us of
        # CPU here, after the step's own work); read before the checks, so a save that they make due by
        # taking long waits for the next step.
        now = time.monotonic()
        clock = self.clock
        if clock is not None:
            clock.busy += now - clock.asked
        state = engine.state
        if state.iteration % self.log_every == 0:
            for work in self.checks:
                work(engine)
            loss = self.loss
            if loss is not None and (numbers is None or len(numbers) >= loss.fold_every):
                loss.check(engine)  # (after inline steps only: their numbers summed once fold_every wait)
            points = self.points
            if points is not None:
                waiting = points.inline
                if numbers is None or waiting is None:
                    points(engine)
                else:  # a tuple the writer makes an event of when it hands the points over
                    waiting.append((points.tag, value, state.iteration + points.offset, now + points.wall_offset))
                    if now >= points.due_at:
                        points.hand_over(now)
            for work in self.every_log:
                work(engine)
        elif self.checks and state.epoch_length is not None and state.iteration % state.epoch_length == 0:
            for work in self.checks:  # at an epoch's last iteration too (is_last_of_epoch, inlined)
                work(engine)
        if not self.last_apart:
            due = self.due
            if due is not None and (due.pending or now >= due.due_at):
                due.at_step(engine)
            for work in self.last:
                work(engine)

    def run_last(self, engine: Engine) -> None:
        due = self.due
        if due is not None and (due.pending or time.monotonic() >= due.due_at):
            due.at_step(engine)
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


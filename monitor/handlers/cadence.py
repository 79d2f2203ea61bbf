"""CheckpointCadence: when the last (resume) checkpoint is written: an Ignite event, a wall-clock
interval, or by default at each validation within a budget of time and cost."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import ignite.distributed as idist
from ignite.engine import Engine, Events
from ignite.engine.events import CallableEventWithFilter, EventsList

from monitor.core._position import is_last_of_epoch, is_mid_epoch, run_iteration
from monitor.handlers.step import StepWork, step_for

__all__ = ["CheckpointCadence", "DEFAULT_INTERVAL_S", "DEFAULT_MAX_SHARE"]

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 600.0  # by default a save at each validation, and within epochs at most this far apart
DEFAULT_MAX_SHARE = 0.01  # never so often that saving takes more than this share of the time


class CheckpointCadence:
    """When the last checkpoint is due; the save itself is the caller's (``save(trainer)``).

    ``every`` is an Ignite event with its filters (``Events.ITERATION_COMPLETED(every=500)``,
    ``Events.EPOCH_COMPLETED(every=2)``), a wall-clock interval (``timedelta`` or seconds), or
    ``None``: the budget, a save after each validation (``validate_on``) and once ``interval_s`` of
    training has passed since the previous one (within long epochs), but never so often that saving
    takes more than ``max_share`` of the time (the cost of a save is measured as the run goes,
    ``cost_s()``; when it stretches the interval past a validation, that is said once at INFO). A due
    save is made at the next iteration; at the last
    iteration of an epoch it waits for that epoch's own work (validation, history row, early
    stopping) and is made at the epoch's end, so a resume never skips it. Where the data cannot be
    replayed mid-epoch (``mid_epoch()`` false) it waits for the epoch's end too.

    The check that runs every iteration is a clock read. Under ``ignite.distributed`` every rank must
    save at the same iteration: a time-based decision is rank 0's, broadcast every ``agree_every``
    iterations.

    Examples:
        .. code-block:: python

            cadence = CheckpointCadence(Events.ITERATION_COMPLETED(every=500))
            cadence.attach(trainer, save=lambda engine: last_checkpoint(engine))
    """

    def __init__(
        self,
        every: Any = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_share: float = DEFAULT_MAX_SHARE,
        agree_every: int | None = None,
        validate_on: Any = None,
    ) -> None:
        self.event: CallableEventWithFilter | EventsList | None = None
        self.validate_on = validate_on  # the budget saves after each validation (this trainer event)
        self.interval_s: float | None = None  # a fixed interval; None with the budget or an event
        if isinstance(every, (CallableEventWithFilter, EventsList)):
            self.event = every
        elif isinstance(every, timedelta):
            self.interval_s = every.total_seconds()
        elif isinstance(every, (int, float)) and not isinstance(every, bool):
            self.interval_s = float(every)
        elif every is not None:
            raise TypeError(
                "Argument every should be an ignite event (e.g. Events.ITERATION_COMPLETED(every=500)), "
                f"a datetime.timedelta, a number of seconds or None (the budget), got {every!r}."
            )
        if self.interval_s is not None and not (math.isfinite(self.interval_s) and self.interval_s > 0):
            raise ValueError(f"Argument every should be a positive time, got {every!r}.")
        if not (isinstance(max_share, (int, float)) and 0 < max_share <= 1):
            raise ValueError(f"Argument max_share should be a share in (0, 1], got {max_share!r}.")
        self.budget_interval_s = interval_s
        # no save sooner than this after the last (interval() is never below it): the per-step check's bound
        self._floor_s = self.interval_s if self.interval_s is not None else interval_s
        self.max_share = max_share
        self.agree_every = agree_every
        self.pending = False
        self.saved_iteration: int | None = None  # the iteration of the newest last checkpoint
        self.saves = 0
        self.saving_s = 0.0  # training-thread time spent in saves (the state gathered, the copy, the hand-over)
        self.last_stall_s = 0.0  # the training thread's time in the newest save
        self._last_save = self.due_at = 0.0  # due_at: no save by the clock before it (a plain attribute: read a step)
        self._restart_clock()
        self.cost_s: Callable[[], float] = lambda: 0.0
        self.mid_epoch: Callable[[], bool] = lambda: True
        self._stretched = False  # said once: a save at each validation would cost more than max_share

    def interval(self) -> float:
        """Seconds of training between two saves now."""
        if self.interval_s is not None:
            return self.interval_s
        return max(self.budget_interval_s, self.cost_s() / self.max_share)

    def attach(
        self,
        trainer: Engine,
        save: Callable[[Engine], None],
        *,
        cost_s: Callable[[], float] | None = None,
        mid_epoch: Callable[[], bool] | None = None,
        step: StepWork | None = None,
    ) -> None:
        """Register on ``trainer``: a mark when a save is due, and the save at the next safe point.
        What runs after each iteration joins ``step`` (whose ``log_every`` is then ``agree_every``), or a
        :class:`~monitor.handlers.step.StepWork` of its own when attached alone; a user's event marks
        as a handler of its own, and its save follows at the same iteration."""
        if cost_s is not None:
            self.cost_s = cost_s
        if mid_epoch is not None:
            self.mid_epoch = mid_epoch
        self._save = save
        trainer.add_event_handler(Events.STARTED, self._started)
        if self.event is not None:
            # the user's event marks; the save follows it at the same iteration (so after the mark,
            # as a handler of its own: a step handler would have run before the mark)
            trainer.add_event_handler(self.event, self._mark)
            when: CallableEventWithFilter | EventsList = Events.EPOCH_COMPLETED(event_filter=lambda *_: self.pending)
            # An epoch event marks only at an epoch's end, where it is saved: no filtered handler on every
            # iteration for it (Ignite's filter dispatch cost about 12,000 instructions a step, for nothing)
            if not _at_epoch_end(self.event):
                when = Events.ITERATION_COMPLETED(event_filter=self._due_within_epoch) | when
            trainer.add_event_handler(when, self.save_now)
            return
        step = step_for(trainer, step, self.agree_every, "agree_every")
        if idist.get_world_size() > 1:
            step.every_log.append(self._mark_by_rank_0)
            step.last.append(self._save_if_due)
        else:
            if step.due is not None:
                raise ValueError("Argument step already keeps a CheckpointCadence's clock: one cadence a trainer.")
            step.due = self  # its clock read inline in the step's one handler; at_step once a save may be due
        if self.interval_s is None and self.validate_on is not None:
            # after the validation's own handlers (attached before), before the save at the next step
            trainer.add_event_handler(self.validate_on, self._mark_after_validation)
        trainer.add_event_handler(Events.EPOCH_COMPLETED(event_filter=lambda *_: self.pending), self.save_now)

    def _started(self, _: Engine) -> None:
        self._restart_clock()  # a segment's training starts: count from here

    def _restart_clock(self) -> None:
        self._last_save = time.monotonic()
        self.due_at = self._last_save + self._floor_s  # interval() is never below the floor

    def _mark(self, _: Engine) -> None:
        self.pending = True

    def _time_is_up(self) -> bool:
        elapsed = time.monotonic() - self._last_save
        # interval() is never below the fixed or budget interval: only past it is the cost asked for
        return elapsed >= self._floor_s and elapsed >= self.interval()

    def at_step(self, engine: Engine) -> None:
        """A single process's work after a step once ``pending`` or past ``due_at``: mark a save due by
        time, then make a due one."""
        if not self.pending:
            if not self._time_is_up():  # (past the floor, not yet past a stretched interval)
                return
            self.pending = True
        if self._due_within_epoch(engine, 0):
            self.save_now(engine)

    def _validation_save_fits(self) -> bool:
        """Whether a save now keeps saving within ``max_share`` of the time since the last one."""
        elapsed = time.monotonic() - self._last_save
        fits = elapsed * self.max_share >= self.cost_s()
        if not fits and not self._stretched:
            self._stretched = True
            logger.info(
                "A last checkpoint takes %.2f s to save: to keep saving under %g%% of the training time it is "
                "written at the first validation about every %.0f s instead of at each one (a kill loses about "
                "that much, up to one validation more), and the best checkpoints of the validations in between "
                "are written with it.",
                self.cost_s(), self.max_share * 100, self.cost_s() / self.max_share,
            )
        return fits

    def _mark_after_validation(self, _: Engine) -> None:
        if self.pending:
            return
        if idist.get_world_size() > 1:  # every rank saves at the same iteration: rank 0's verdict
            due = self._validation_save_fits() if idist.get_rank() == 0 else False
            self.pending = bool(idist.broadcast(int(due), src=0))
        else:
            self.pending = self._validation_save_fits()

    def _mark_by_rank_0(self, _: Engine) -> None:
        due = self._time_is_up() if idist.get_rank() == 0 else False
        if bool(idist.broadcast(int(due), src=0)):
            self.pending = True

    def can_save_at(self, engine: Engine) -> bool:
        """Whether a checkpoint may be made at ``engine``'s iteration: at an epoch's end always;
        within an epoch only where the data can be replayed from there (``mid_epoch()``)."""
        return not is_mid_epoch(engine.state) or self.mid_epoch()

    def _due_within_epoch(self, engine: Engine, _: int) -> bool:
        return self.pending and not is_last_of_epoch(engine.state) and self.mid_epoch()

    def _save_if_due(self, engine: Engine) -> None:
        if self.pending and self._due_within_epoch(engine, 0):
            self.save_now(engine)

    def save_now(self, engine: Engine) -> None:
        """Save at once (a due save, or the end of training); nothing if this iteration is saved."""
        if self.saved_iteration != run_iteration(engine.state):
            started = time.perf_counter()
            self._save(engine)
            self.last_stall_s = time.perf_counter() - started
            self.saving_s += self.last_stall_s
            self.saved_iteration = run_iteration(engine.state)
            self.saves += 1
        self.pending = False
        self._restart_clock()


def _at_epoch_end(event: CallableEventWithFilter | EventsList) -> bool:
    """Whether ``event`` fires only at an epoch's end (``EPOCH_COMPLETED``, with a filter or not).

    >>> _at_epoch_end(Events.EPOCH_COMPLETED(every=2)), _at_epoch_end(Events.ITERATION_COMPLETED(every=100))
    (True, False)
    """
    return all(e == Events.EPOCH_COMPLETED for e in (event if isinstance(event, EventsList) else [event]))

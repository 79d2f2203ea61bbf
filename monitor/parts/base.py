"""Part: the base class of an optional part (``attach_monitoring(parts=[...])``), and what it is handed.

A part is a subclass of :class:`Part` that sets:

- ``key``: its entry in the last checkpoint and in ``run.json``'s configuration (unique; not a key of
  ``to_save`` nor one monitor reserves);
- ``attach(context)``: registers its handlers on ``context.trainer`` / ``context.evaluator``
  (evaluator ``COMPLETED`` handlers run after monitor's own: best tracking, the history row, the
  log line, TensorBoard, the best checkpoint, early stopping), and its per-step work, if any, with
  ``context.on_step`` (run first in monitor's one step handler, never as a handler of its own).

and overrides what it needs of the rest (each does nothing by default):

- ``check(context)``: refuse what it cannot work with (a clear ``ValueError``), before monitor touches
  the run folder; ``attach`` follows it;
- ``config()``: its settings as plain types, recorded in ``run.json``;
- ``columns()``: the columns it adds to each history row;
- ``state_dict()`` / ``load_state_dict()``: plain types, saved in every last checkpoint and loaded on
  resume (a part new at a resume starts from its own defaults);
- ``record()``: top-level fields it keeps in ``run.json`` (e.g. ``recoveries``), read at each write;
- ``stop_reason``: a :class:`~monitor.core.status.StopReason` once it stopped the run (``None``
  before), which ``Monitor`` reports as the run's;
- ``ended(run)``: called with the :class:`~monitor.compose.Monitor` once the run's end is recorded (status,
  stop reason, findings and ``run.json`` final): where a tracker logs the outcome.

Examples:
    .. code-block:: python

        class CountSteps(monitor.Part):          # a part that counts optimizer steps
            key = "count_steps"
            def __init__(self): self.steps = 0
            def attach(self, context): context.on_step(self.step)
            def step(self, trainer): self.steps += 1
            def columns(self): return {"steps": self.steps}
            def state_dict(self): return {"steps": self.steps}
            def load_state_dict(self, state): self.steps = int(state["steps"])
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine

from monitor.core.objective import Objective
from monitor.core.status import StopReason
from monitor.handlers.best import BestTracker

__all__ = ["Part", "PartContext"]


class Part:
    """The base of a part (Keras's and skorch's ``Callback``): set ``key`` and write ``attach``; the rest
    does nothing unless overridden (see the module's docstring)."""

    key: str = ""
    stop_reason: StopReason | None = None

    def attach(self, context: PartContext) -> None:
        raise NotImplementedError(f"{type(self).__name__} should define attach(context), where it registers "
                                  f"its handlers (see monitor.Part).")

    def check(self, context: PartContext) -> None:
        """Refuse what the part cannot work with (a ``ValueError``), before the run folder is touched."""

    def config(self) -> Mapping[str, Any]:
        """Its settings, as plain types, for ``run.json``."""
        return {}

    def columns(self) -> Mapping[str, Any]:
        """The columns it adds to each history row."""
        return {}

    def state_dict(self) -> Mapping[str, Any]:
        """Its state, as plain types, for the last checkpoint."""
        return {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Its state back from the last checkpoint, at a resume."""

    def record(self) -> Mapping[str, Any]:
        """Top-level fields it keeps in ``run.json``."""
        return {}

    def ended(self, run: Any) -> None:
        """Called with the Monitor once the run's end is recorded."""


@dataclass
class PartContext:
    """What a part may use when it checks and attaches: the engines, the objective and its tracker,
    the model, the first optimizer of ``to_save`` (``None`` if there is none), ``to_save`` and its keys,
    :meth:`on_step` and :meth:`on_check`, ``objects``: the objects of the last checkpoint by key,
    filled once all are built (before training starts; empty while the parts attach), the run
    folder and the settings ``run.json`` records (``config``: objective, hparams, seed...)."""

    trainer: Engine
    evaluator: Engine
    objective: Objective
    best: BestTracker
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer | None
    step_work: list[Callable[[Engine], None]] = field(default_factory=list)
    to_save_keys: tuple[str, ...] = ()  # what the user saves (for a part's messages)
    check_work: list[Callable[[Engine], None]] = field(default_factory=list)
    objects: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None  # the run folder
    resume: bool = False  # attach_monitoring(resume=True): the folder's run is continued
    config: Mapping[str, Any] = field(default_factory=dict)  # the settings run.json records (hparams, seed...)
    # to_save as the user gave it: a sharded model and its optimizers themselves (``objects`` holds what the
    # checkpoint writes of them: a shards folder's entries, or the full state)
    to_save: Mapping[str, Any] = field(default_factory=dict)

    def on_step(self, work: Callable[[Engine], None]) -> None:
        """Run ``work(trainer)`` after every training step, before monitor reads the step's output."""
        self.step_work.append(work)

    def on_check(self, work: Callable[[Engine], None]) -> None:
        """Run ``work(trainer)`` every ``log_every`` steps and at each epoch's last step, after the
        step's loss is summed and before monitor's own check of it (which stops on a NaN)."""
        self.check_work.append(work)

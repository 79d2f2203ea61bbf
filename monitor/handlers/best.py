"""BestTracker: applies the Objective to each validation run and marks the new bests."""
from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ignite.base.mixins import Serializable
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from monitor.core._checks import optional_number
from monitor.core._position import run_iteration
from monitor.core.objective import Objective

__all__ = ["BestTracker", "attach_best_tracker", "attached_metric_names"]

logger = logging.getLogger(__name__)


def attached_metric_names(evaluator: Engine) -> set[str]:
    """Names of the ``ignite.metrics.Metric`` objects attached to ``evaluator``.

    Ignite keeps no public list of them; each attached metric registers its bound ``completed``
    method with its name as the last argument, which is what is read here.
    """
    names = set()
    for handler, args, _ in evaluator._event_handlers.get(Events.EPOCH_COMPLETED, []):
        if isinstance(getattr(handler, "__self__", None), Metric) and args and isinstance(args[-1], str):
            names.add(args[-1])
    return names


class BestTracker(Serializable):
    """After each validation run: the Objective's value, whether it is a new best, and the best so far.

    Best checkpoints, the history's ``is_best`` column and ``run.json`` all read this one tracker,
    so they can never disagree on which epoch was best. Handlers that read :attr:`is_best` on the
    evaluator's ``COMPLETED`` must be attached after it: :func:`attach_best_tracker` also clears the
    verdict when a validation run starts, so a handler that reads it too early gets a
    ``RuntimeError`` instead of the previous run's answer.

    Args:
        objective: what "better" means.
        trainer: engine whose ``state.epoch``/``state.iteration`` label the validation run.
        baseline: a value to beat before anything is a best (the same as early stopping's, so that
            the two agree). Default None.

    Examples:
        .. code-block:: python

            best = BestTracker(Objective("loss", mode="min"), trainer=trainer).attach(evaluator)
            best.is_best, best.best_value, best.best_epoch
    """

    _state_dict_all_req_keys = ("best_value", "best_epoch", "best_iteration")

    def __init__(self, objective: Objective, trainer: Engine, *, baseline: float | None = None) -> None:
        if not isinstance(objective, Objective):
            raise TypeError(f"Argument objective should be a monitor.Objective, got {objective!r}.")
        if not isinstance(trainer, Engine):
            raise TypeError(f"Argument trainer should be an ignite Engine, got {type(trainer).__name__}.")
        self.objective = objective
        self.trainer = trainer
        self.baseline = optional_number("baseline", baseline)
        self.value: float | None = None
        self._is_best: bool | None = False  # None: a validation run is under way, not yet judged
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_iteration: int | None = None

    @property
    def is_best(self) -> bool:
        """Whether the last validation run gave a new best.

        Raises:
            RuntimeError: read during a validation run before this tracker judged it (attach order).
        """
        if self._is_best is None:
            raise RuntimeError(
                "BestTracker.is_best was read before the tracker judged this validation run: attach the "
                "BestTracker to the evaluator (Events.COMPLETED) before the handlers that read it."
            )
        return self._is_best

    def started(self, _: Engine) -> None:
        """A validation run starts: no verdict until it completes."""
        self._is_best = None

    def __call__(self, evaluator: Engine) -> None:
        self.value = self.objective.value(evaluator.state.metrics)
        epoch = self.trainer.state.epoch
        reference = self.best_value if self.best_value is not None else self.baseline
        self._is_best = self.objective.is_improvement(self.value, reference, epoch=epoch)
        if self._is_best:
            self.best_value, self.best_epoch = self.value, epoch
            self.best_iteration = run_iteration(self.trainer.state)

    def state_dict(self) -> OrderedDict[str, Any]:
        return OrderedDict(
            best_value=self.best_value, best_epoch=self.best_epoch, best_iteration=self.best_iteration
        )

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_value = state_dict["best_value"]
        self.best_epoch = state_dict["best_epoch"]
        self.best_iteration = state_dict["best_iteration"]


    def attach(self, evaluator: Engine) -> BestTracker:
        """Judge each validation run of ``evaluator`` (``COMPLETED``; the verdict is cleared on
        ``STARTED``); attach it before the handlers that read :attr:`is_best`.

        Raises:
            KeyError: the objective's metric is not among the metrics attached to ``evaluator``
                (when they can be seen; otherwise at the first validation run).
        """
        names = attached_metric_names(evaluator)
        if names and self.objective.metric not in names:
            raise KeyError(
                f"Objective metric {self.objective.metric!r} is not attached to the evaluator; "
                f"available: {sorted(names)}."
            )
        evaluator.add_event_handler(Events.STARTED, self.started)
        evaluator.add_event_handler(Events.COMPLETED, self)
        return self


def attach_best_tracker(
    evaluator: Engine, trainer: Engine, objective: Objective, *, baseline: float | None = None
) -> BestTracker:
    """A :class:`BestTracker` attached to ``evaluator`` (see :meth:`BestTracker.attach`)."""
    return BestTracker(objective, trainer, baseline=baseline).attach(evaluator)

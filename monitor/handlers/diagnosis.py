"""LiveDiagnosis: each new training problem logged once (WARNING) as soon as the history shows it."""
from __future__ import annotations

import logging
from collections import deque

from ignite.engine import Engine, Events

from monitor.diagnosis import Finding, diagnose
from monitor.handlers.history import HistoryRecorder

__all__ = ["LiveDiagnosis", "attach_live_diagnosis"]

logger = logging.getLogger(__name__)


class LiveDiagnosis:
    """After each history row, :func:`monitor.diagnosis.diagnose` on the last ``window`` rows; a kind
    found for the first time is logged at WARNING with its evidence and advice.

    It reads only the row just written (no device work, nothing per iteration); its cost per
    validation is bounded by ``window``.

    Examples:
        .. code-block:: python

            live = attach_live_diagnosis(evaluator, recorder)   # on the *evaluator*, after the history
            live.reported                                      # {"overfitting": Finding(...)}
    """

    def __init__(self, recorder: HistoryRecorder, *, window: int = 200) -> None:
        self.recorder = recorder
        self.rows: deque[dict[str, object]] = deque(maxlen=window)
        self.reported: dict[str, Finding] = {}

    def __call__(self, _: Engine) -> None:
        self.rows.append(dict(self.recorder.last_row))
        objective = self.recorder.best.objective
        for finding in diagnose(list(self.rows), objective_column=objective.column, mode=objective.mode):
            if finding.kind not in self.reported:
                self.reported[finding.kind] = finding
                logger.warning("Training problem: %s", finding.message())


def attach_live_diagnosis(evaluator: Engine, recorder: HistoryRecorder, *, window: int = 200) -> LiveDiagnosis:
    """A :class:`LiveDiagnosis` on ``evaluator``'s ``COMPLETED`` (attach it after ``recorder``)."""
    live = LiveDiagnosis(recorder, window=window)
    evaluator.add_event_handler(Events.COMPLETED, live)
    return live

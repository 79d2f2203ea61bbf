"""LiveDiagnosis: each new training problem logged once (WARNING) as soon as the history shows it."""
from __future__ import annotations

import logging
import math
import time
from collections import deque

from ignite.engine import Engine, Events

from monitor.diagnosis import Finding, diagnose
from monitor.handlers.history import HistoryRecorder

__all__ = ["LiveDiagnosis", "attach_live_diagnosis"]

logger = logging.getLogger(__name__)


class LiveDiagnosis:
    """After each history row, :func:`monitor.diagnosis.diagnose` on the last ``window`` rows; a
    problem of a kind found for the first time is logged at WARNING with its evidence and advice (a
    note at INFO).

    It reads only the row just written (no device work, nothing per iteration), and keeps its own
    cost under ``max_share`` of the training time: a diagnosis of 200 rows takes about 1 ms, so with
    validations every 20 ms it runs every few of them (a new problem is then said a few validations
    later), with validations of a second or more at each one.

    Examples:
        .. code-block:: python

            live = attach_live_diagnosis(evaluator, recorder)   # on the *evaluator*, after the history
            live.reported                                      # {"overfitting": Finding(...)}: the problems
    """

    def __init__(self, recorder: HistoryRecorder, *, window: int = 200, max_share: float = 0.01) -> None:
        self.recorder = recorder
        self.rows: deque[dict[str, object]] = deque(maxlen=window)
        self.reported: dict[str, Finding] = {}  # the problems logged, by kind
        self.said: set[tuple[str, str]] = set()  # (kind, level) of every finding logged
        self.max_share = max_share
        self._cost_s = 0.0
        self._last = -math.inf

    def __call__(self, _: Engine) -> None:
        self.rows.append(dict(self.recorder.last_row))
        now = time.perf_counter()
        if (now - self._last) * self.max_share < self._cost_s:
            return  # too soon after the last diagnosis for its cost
        self._last = now
        objective = self.recorder.best.objective
        findings = diagnose(list(self.rows), objective_column=objective.column, mode=objective.mode)
        self._cost_s = time.perf_counter() - now
        for finding in findings:
            self.report(finding)

    def report(self, finding: Finding) -> None:
        """Log a problem at WARNING (a note at INFO), unless one of its kind and level was logged
        already: a note (a bump at a schedule's peak) that turns out a problem is then warned of."""
        if (finding.kind, finding.level) not in self.said:
            self.said.add((finding.kind, finding.level))
            if finding.is_problem:
                self.reported[finding.kind] = finding
                logger.warning("Training problem: %s", finding.message())
            else:
                logger.info("Training note: %s", finding.message())


def attach_live_diagnosis(evaluator: Engine, recorder: HistoryRecorder, *, window: int = 200) -> LiveDiagnosis:
    """A :class:`LiveDiagnosis` on ``evaluator``'s ``COMPLETED`` (attach it after ``recorder``)."""
    live = LiveDiagnosis(recorder, window=window)
    evaluator.add_event_handler(Events.COMPLETED, live)
    return live

"""OptunaPruning: a run that is one trial of an Optuna study reports its objective at each epoch, and
ends cleanly when the study's pruner says it is not worth finishing.

Optuna's own pruning handler for Ignite raises ``TrialPruned`` inside an evaluator handler: the run
then ends as a crash (status ``failed``, no checkpoint of its end, best weights not restored). Here
pruning is early stopping across trials: the trainer is terminated, the run ends with status
``early_stopped`` and stop reason ``pruned``, its files whole; :meth:`OptunaPruning.result` then
raises ``TrialPruned`` for Optuna, outside the engine, or returns the best objective value.

The objective's value of each validation at an epoch's end is reported at step = epoch (a step
Optuna's pruners compare across trials, whatever the batch size); the trial's user attribute
``run_dir`` names the run folder, so ``monitor compare`` over the study's folders ranks its trials.

Examples:
    .. code-block:: python

        def objective(trial):
            lr = trial.suggest_float("lr", 1e-3, 1e-1, log=True)
            ...
            pruning = monitor.OptunaPruning(trial)
            run = monitor.attach_monitoring(..., run_dir=f"reports/sweep/trial_{trial.number}",
                                            record=monitor.Record(hparams=trial.params), parts=[pruning])
            with run:
                trainer.run(train_loader, max_epochs=50)
            return pruning.result(run)       # raises optuna.TrialPruned for a pruned trial

        optuna.create_study(direction="minimize", pruner=optuna.pruners.MedianPruner()).optimize(objective, 10)
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ignite.engine import Engine, Events

from monitor.core._position import is_mid_epoch
from monitor.core.status import StopReason
from monitor.parts.base import Part, PartContext
from monitor.store.record import read_record

__all__ = ["OptunaPruning"]

logger = logging.getLogger(__name__)


class OptunaPruning(Part):
    """A part: report the objective to an Optuna ``trial`` at each epoch's validation; stop the run
    (stop reason ``pruned``) when ``trial.should_prune()``.

    Args:
        trial: an ``optuna.trial.Trial`` (the argument of the study's objective function).

    Raises:
        ValueError: at attach, a study whose direction is not the Objective's mode.
    """

    key = "optuna"

    def __init__(self, trial: Any) -> None:
        if isinstance(trial, type) or type(trial).__name__ == "FrozenTrial" or not all(
                callable(getattr(trial, name, None)) for name in ("report", "should_prune", "set_user_attr")):
            raise TypeError(f"Argument trial should be the optuna.trial.Trial the study passes to its objective "
                            f"function, got {trial!r}.")
        self.trial = trial
        self.stop_reason: StopReason | None = None
        self.pruned_at: int | None = None  # the epoch it was pruned at
        self._context: PartContext | None = None
        self._reported_earlier = False  # the epochs of earlier segments, reported at the first validation

    def check(self, context: PartContext) -> None:
        study = getattr(getattr(self.trial, "study", None), "study_name", None)
        held = ((read_record(context.run_dir) or {}).get(self.key) or {}) if context.run_dir is not None else {}
        if held.get("study") == study and held.get("trial") not in (None, getattr(self.trial, "number", None)) and \
                not context.resume:
            raise ValueError(
                f"Argument run_dir {str(context.run_dir)!r} holds trial {held['trial']} of study {study!r}: a trial "
                "never takes another's folder. Give each trial its own, e.g. run_dir=f'.../trial_{trial.number}'.")
        directions = getattr(getattr(self.trial, "study", None), "directions", None)
        if directions:  # a study of one objective, in the Objective's direction
            names = [getattr(d, "name", str(d)).lower() for d in directions]
            wanted = "minimize" if context.objective.mode == "min" else "maximize"
            if names != [wanted]:
                raise ValueError(
                    f"Argument trial belongs to a study with direction {names}, but the objective "
                    f"{context.objective.column} is mode={context.objective.mode!r}: create the study with "
                    f"direction={wanted!r}.")

    def attach(self, context: PartContext) -> None:
        self.check(context)
        self._context = context
        self._refuse_other_hparams(context)
        self._fail_killed_trial(context)
        if context.run_dir is not None:
            self.trial.set_user_attr("run_dir", str(context.run_dir))
        context.evaluator.add_event_handler(Events.COMPLETED, self._validated)

    def _refuse_other_hparams(self, context: PartContext) -> None:
        """A trial resuming a folder whose run was recorded with other hyper-parameters would report that
        run's curve for its own parameters: refused, naming each change."""
        recorded = (read_record(context.run_dir) or {}).get("hparams") if context.run_dir is not None else None
        if not context.resume or not isinstance(recorded, Mapping):
            return
        now = json.loads(json.dumps(dict(context.config.get("hparams") or {}), default=str))  # as run.json has them
        changed = {k: (recorded.get(k), now.get(k)) for k in sorted({*recorded, *now}) if recorded.get(k) != now.get(k)}
        if changed:
            raise ValueError(
                f"Cannot resume {str(context.run_dir)!r} in this trial: its run has other hyper-parameters; changed "
                f"(was, now): {changed}. Give each trial its own run_dir.")

    def _fail_killed_trial(self, context: PartContext) -> None:
        """A trial resuming the folder of another trial of its study, killed (the folder is locked now, so
        its process is gone): that trial is marked FAIL, not left RUNNING in the study for ever."""
        study = getattr(self.trial, "study", None)
        held = ((read_record(context.run_dir) or {}).get(self.key) or {}) if context.run_dir is not None else {}
        killed = held.get("trial")
        if not context.resume or study is None or held.get("study") != getattr(study, "study_name", None) or \
                killed in (None, getattr(self.trial, "number", None)):
            return
        try:
            import optuna

            study.tell(int(killed), state=optuna.trial.TrialState.FAIL)
        except Exception as e:  # already finished, or a storage that refuses: nothing to mark
            logger.debug("Trial %s of the folder not marked FAIL: %s", killed, e)
            return
        logger.info("Trial %s, killed in %s, marked FAIL in the study; trial %s goes on from its checkpoint.",
                    killed, context.run_dir, getattr(self.trial, "number", "?"))

    def config(self) -> dict[str, Any]:
        study = getattr(self.trial, "study", None)
        return {"study": getattr(study, "study_name", None), "trial": getattr(self.trial, "number", None)}

    def _report_earlier_epochs(self, epoch: int) -> None:
        """A trial resuming a folder: the epochs of earlier segments, as they were reported (the best so far
        at each epoch's end), so that the pruner judges the whole curve."""
        assert self._context is not None
        history = self._context.objects.get("history")
        objective = self._context.objective
        ends: dict[int, float] = {}
        for row in history.history.read_rows() if history is not None else []:
            value = row.get(objective.column)
            if row.get("epoch") is not None and int(row["epoch"]) < epoch and isinstance(value, (int, float)):
                ends[int(row["epoch"])] = float(value)  # the epoch's last validation
        best = None
        with warnings.catch_warnings():  # a step this trial has already is ignored by Optuna, with a warning
            warnings.simplefilter("ignore")
            for step, value in sorted(ends.items()):
                if math.isfinite(value) and (best is None or objective.is_better_or_equal(value, best)):
                    best = value
                if best is not None:
                    self.trial.report(best, step=step)

    def _validated(self, _: Engine) -> None:
        assert self._context is not None
        trainer, best = self._context.trainer, self._context.best
        if not self._reported_earlier:
            self._reported_earlier = True
            self._report_earlier_epochs(int(trainer.state.epoch))
        if is_mid_epoch(trainer.state) or best.value is None or trainer.should_terminate:
            return  # reported at epoch ends (a step Optuna compares across trials); not after another stop
        epoch = int(trainer.state.epoch)
        self.trial.report(float(best.value), step=epoch)
        if self.trial.should_prune():
            self.stop_reason, self.pruned_at = StopReason.PRUNED, epoch
            logger.info("Optuna pruned trial %s at epoch %d (%s %.6g).", getattr(self.trial, "number", "?"), epoch,
                        self._context.objective.column, best.value)
            trainer.terminate()

    def result(self, run: Any) -> float:
        """The value the study's objective function returns: the run's best objective value; raises
        ``optuna.TrialPruned`` if the pruner ended it (after the run recorded its end)."""
        if self.stop_reason is StopReason.PRUNED:
            import optuna

            raise optuna.TrialPruned(f"pruned at epoch {self.pruned_at}")
        value = run.best.best_value
        if value is None:
            raise ValueError(f"Run {run.run_dir} has no best {run.objective.column}: nothing to return to Optuna.")
        return float(value)

    def state_dict(self) -> OrderedDict[str, Any]:
        return OrderedDict(pruned_at=self.pruned_at)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.pruned_at = state_dict.get("pruned_at")
        self.stop_reason = StopReason.PRUNED if self.pruned_at is not None else None

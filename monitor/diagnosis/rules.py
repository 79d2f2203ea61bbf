"""Diagnosis: the common training problems, found in a run's history, with when they started and what
to do. Pure Python (the review and a live run both use it; no torch, no pandas).

Every rule reads only the history's columns (one row per validation) and is documented here, with
its thresholds, the premise it rests on and the case that would break it. The thresholds were set on
the first half of a labelled suite of runs (``benchmarks/bench_diagnosis.py``) and checked on the
second, held-out half and on shifted seeds: a healthy run gives no finding, fine-tuned starts and
learning-rate schedules included. A run that stopped between two validations (a NaN mid-epoch) also
has the training columns of its last steps (``run.json``'s ``after_last_row``), which the rules of a
broken run read: that is where a loss or a gradient blew up.

Three columns see inside an epoch, at no extra host sync per step: ``train_loss_spike``, the epoch's
highest step loss over the run's first step loss; ``train_loss_start``, that first step loss; and
``train_grad_norm_max``, the epoch's highest gradient norm (with :func:`~monitor.parts.attach_grad_norm`).
An epoch's mean hides a loss that blows up for a few steps and then settles (often dead, at the loss
of a constant prediction).

=====================  ======================================================================
kind                   rule (``n`` = validations so far)
=====================  ======================================================================
nonfinite              the first row where ``train_loss``, the objective or ``train_grad_norm``
                       is NaN or infinite, or a stop reason ``nonfinite_loss``/``nonfinite_metric``.
                       No premise: a NaN is never healthy. (A metric that is NaN by design on
                       some validations, e.g. a score of an empty class, would be reported.)
divergence             (a) the training loss (or a loss objective) reaches 10x its lowest value
                       so far, and by 5% of its first: an order of magnitude, which noise does
                       not do (but near 0, where a memorising model's 1e-4 becomes 1e-3, it does).
                       (b) a spike: an epoch's ``train_loss_spike`` at least 5x the run's typical
                       one, the median of its spikes but at least 1 (the first step). Premises:
                       an untrained network's first loss is as high as a healthy run's steps go
                       (about log(classes)), so a from-scratch run's spikes stay near 1-2; a run
                       from trained weights (fine-tuning) has a heavy tail, a hard batch 10-40x
                       its first step, but in *every* epoch, so its median is as high. A blow-up
                       is one epoch far above the others. Breaks when most epochs blow up (then
                       (a) or nonfinite sees it), and cannot judge the first 2 validations of a
                       run whose first epoch blew up (the median is that epoch's own).
                       (c) a dead start: a run whose loss sits at 10x its first step loss or more
                       with every batch alike (the epoch's highest step under 2x its mean: a
                       constant prediction), as when a fine-tuned network is knocked out by a
                       rate far too high. A heavy-tailed run whose first batch was a lucky one
                       has a mean 10x its first step too, but its batches are not alike.
                       Or stop reason ``diverged``.
overfitting            after the objective's best, for at least 5 validations: validation loss
                       at least 1.5x its best while the training loss fell to at most 0.7x its
                       value at the best. (Early stopping's usual tail, a few validations 10-30%
                       above the best, is not a problem: it is what early stopping is for.)
                       Premise: the objective is a loss of the same kind as the training loss.
                       Breaks on a slow overfit that stays under 1.5x (a miss, not an alarm),
                       and on a validation set drawn from other data than training (a gap from
                       the start is then no overfit, but a growing one still reads as one).
plateau                in the first 10 validations (at least 5): the training loss never got 1%
                       below its first value, and never rose 10% above it either. The loss did
                       not move: the rate is likely far too low, or the model cannot learn from
                       the data. A loss that rose is an instability, never a plateau (raising the
                       rate would make it worse). And the batches alike (a typical
                       ``train_loss_spike`` of 2 or less, where the column is): a network that
                       learned nothing predicts about the same on every batch (the suite's
                       plateaus: 1.0-1.1), while a trained one at its floor (a converged model
                       fine-tuned at a small rate, flat to 1%) has hard batches 2-7x its first
                       step: nothing left to lose, no plateau. Premise: a run learns most in its
                       first validations. Breaks on a long warm-up from a rate near 0 (the
                       advice to raise the rate is then premature) and on a small-batch
                       regression whose untrained batches differ by 2x or more (a miss).
oscillation            the training loss, which steps of the right size keep bringing down, goes
                       back up: an epoch's mean at least 1.5x the lowest before it, and above it
                       by 5% of the first (a loss near 0 going from 0.001 to 0.002 is noise);
                       not within 2 validations of a rise of the learning rate (a warm restart
                       or a warm-up does that on purpose). Or, in a window of 8 validations: the
                       loss changed direction at least 5 times, by a swing of at least 20% of its
                       median and 5% of the run's first, and ended no lower than 95% of where the
                       window began: steps too large to settle. A *note*, not a problem, when a
                       schedule held the rate at its peak then (``lr`` within 10% of the run's
                       highest, the rate not constant, at some validation from the lowest loss
                       before the rise, or in the swings' window) and the loss later went below
                       the lowest before the bump (a bump, the schedule's doing), or the bump is
                       in the last 3 validations (it may still come back down: a live run warns
                       only if it does not). A warm-up to a rate too high that the loss never
                       recovers from stays a problem. Premise: an epoch's mean is a fair
                       summary of its steps. Breaks on very noisy epochs (a few batches an
                       epoch: use validation within epochs or longer epochs) and on a schedule
                       whose rise the ``lr`` column does not show (a rate set outside the first
                       param group). A rise the objective does not confirm is a ``loss_shift``
                       note instead (see there).
data_bound             over at least 3 validations, the median ``data_wait_frac`` is 0.5 or more
                       and the loader delivers under 50,000 samples/s (the median wait is 20 us a
                       sample or more): the loop waits for data more than it trains, and the data
                       is slow (a tiny model on in-memory tensors waits "most" of a short step:
                       no problem worth a change). Premise: the clock sees the whole wait.
                       Breaks when the step itself waits for data (a device sync in the step on a
                       GPU that the loader starved), which reads as compute.
exploding_gradients    ``train_grad_norm`` (from the 4th validation) or ``train_grad_norm_max``
                       (a single step's norm, an infinite one included) at least 100x the median
                       of the first 3 validations' ``train_grad_norm``: two orders of magnitude,
                       where a healthy run's norms change by a few times. In those first 3
                       validations a step is also judged against the run's first step's norm
                       (``train_grad_norm_start``), at 1000x: a blow-up in epoch 1 (an RNN without
                       clipping) raises that epoch's mean with it, and there is no earlier epoch;
                       a fine-tune's first batch may be an easy one (a hard one's norm 191x it,
                       with batches of 8), hence the third order of magnitude. Premise:
                       the first validations (or the first step) are healthy. Breaks on a run
                       whose gradients are huge from the start (a bad initialisation: nothing to
                       compare with) and on losses scaled up on purpose (AMP's scaler: use the
                       unscaled norm).
vanishing_gradients    ``train_grad_norm_first`` (the first layer's, from :func:`~monitor.parts.attach_grad_norm`)
                       under 1/1000 of ``train_grad_norm`` for 3 validations in a row, or the whole
                       norm under 1e-4 while the training loss is above 0.01: the first layers
                       learn (almost) nothing. Premise: the first parameter tensor is the input
                       layer's. Breaks on a model whose first parameter is something else (an
                       embedding that most batches barely touch reads as vanishing).
loss_shift             a *note*: a divergence (a) or an oscillation's rise that the objective does
                       not confirm: at the row of the rise it is as good as its best before the
                       rise (within 1%), or it comes back to that best later while the training
                       loss stays at 1.5x its lowest or more (a new level, not a swing). The data
                       changed (a curriculum, an augmentation or mixup switched on); nothing to
                       undo, and Recovery does not act on it. Breaks on an objective that cannot
                       see the damage (a metric saturated at its best).
not_learning           the last 5 validations' training loss within 1% of their mean (and not
                       down by 1% from the first of them to the last: a slow fall is learning) and at least
                       half the run's first step loss (a constant prediction), after the run had
                       learned (a loss 10% lower before): a model that stopped learning (dead
                       units after a rate too high, a rollback that did not help). Or one that
                       never learned: that flat loss at 0.9x its first step's or more, the
                       objective no better over the flat stretch than where it began, and the
                       batches alike (typical ``train_loss_spike`` 2 or less; a converged model
                       fine-tuned at a small rate is as flat, but has hard batches): random
                       labels, inputs that do not reach the model. Its advice is to check the
                       data, not the rate; a plateau (the loss never moved) says it instead.
                       Not said beside an instability (its consequence). Premise: an untrained
                       network's first loss is about a constant prediction's. Breaks on a model
                       that converged in its first epoch to a loss near that level (labels that
                       are mostly noise: it is told to check its labels, which is then right).
recovered              a rollback by :class:`~monitor.Recovery` (``run.json``'s ``recoveries``): a
                       *note*, with the trouble's iteration and loss, where the run went back to
                       and the rate it went on with. The rows show nothing of it (the epoch's
                       sums were restored with the weights), so without this a recovered run
                       would read as healthy. A rollback given up on is not a note: the run then
                       stopped, and ``nonfinite``/``divergence`` is its problem, whose advice
                       says how many rollbacks were tried.
=====================  ======================================================================

One story per event: what follows a divergence or a NaN is its consequence and is not reported again
(the other rules read the rows before its rise began), and a plateau is never reported beside an
instability. Each finding has a ``level``: ``problem`` (logged at WARNING as soon as seen) or
``note`` (a borderline pattern the run itself explains; said apart, at INFO). Advice about the
learning rate reads the ``lr`` column: the rate at the time, since when, a value to try, the epoch to
roll back to and the best checkpoint to keep.

Examples:
    >>> rows = [{"epoch": e, "iteration": 10 * e, "train_loss": x, "val_loss": x}
    ...         for e, x in enumerate([0.9, 0.8, float("nan")], start=1)]
    >>> [(f.level, f.kind, f.epoch) for f in diagnose(rows, objective_column="val_loss", mode="min")]
    [('problem', 'nonfinite', 3)]
    >>> diagnose(rows, objective_column="val_loss", mode="min")[0].advice.startswith("Lower the learning rate")
    True
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["Finding", "diagnose", "diverging", "as_good", "rollbacks", "by_level", "steps_after", "KINDS", "ADVICE",
           "LEVELS"]

KINDS = (
    "nonfinite", "divergence", "overfitting", "plateau", "oscillation", "data_bound",
    "exploding_gradients", "vanishing_gradients", "recovered", "loss_shift", "not_learning",
)

LEVELS = ("problem", "note")

ADVICE = {
    "nonfinite": "Lower the learning rate, clip gradients (torch.nn.utils.clip_grad_norm_), and check the "
                 "inputs and the loss for log(0), division by zero or overflow (AMP: keep the GradScaler).",
    "divergence": "Lower the learning rate (by 10x), or add a warm-up or gradient clipping.",
    "overfitting": "Regularise (weight decay, dropout, data augmentation), get more data or a smaller model; "
                   "the best checkpoint is the model to keep.",
    "plateau": "Raise the learning rate (by 10x); if the loss still does not move, check the labels, the inputs "
               "and the loss function.",
    "oscillation": "Lower the learning rate (by 3-10x) or raise the batch size; a schedule that decays the rate helps.",
    "data_bound": "Feed the loop faster: DataLoader(num_workers>0, pin_memory=True, persistent_workers=True), "
                  "or decode and cache the data once.",
    "exploding_gradients": "Clip gradients (torch.nn.utils.clip_grad_norm_), lower the learning rate, "
                           "or normalise (BatchNorm/LayerNorm) and check the initialisation.",
    "vanishing_gradients": "Use ReLU-like activations instead of sigmoid/tanh, residual connections or "
                           "normalisation, and a suitable initialisation (Kaiming/Xavier).",
    "recovered": "The run was rolled back and went on; if it happens again, start from the lower rate.",
    "not_learning": "The model has stopped learning: its loss sits at the level of its first steps (a "
                    "constant prediction). After a rate too high, its units may be dead (ReLU): restart from the "
                    "initial weights at a 10x lower rate; else check the labels, the inputs and the loss function.",
    "loss_shift": "The objective does not confirm the rise (it held, or came back to its best while the training loss "
                  "stayed at its new level), so this is no instability: did the data change (a curriculum, an "
                  "augmentation or mixup switched on, another mix)? Nothing to undo.",
}

# not_learning, for a run that never learned: the rate is not the first suspect.
NEVER_LEARNED_ADVICE = ("The model has learned nothing: its objective is no better than at its first validation and "
                        "its loss sits at the level of its first steps (a constant prediction). Check that the labels "
                        "match the inputs (one shuffled without the other?), that the inputs reach the model (not "
                        "constant or all zeros) and the loss function; only then try a 10x higher rate.")

# The factor each kind's advice applies to the rate of the run (None: it says nothing of the rate).
RATE_FACTOR: dict[str, float | None] = {
    "nonfinite": 0.1, "divergence": 0.1, "oscillation": 1 / 3, "exploding_gradients": 0.1, "plateau": 10.0,
    "overfitting": None, "data_bound": None, "vanishing_gradients": None, "recovered": None, "loss_shift": None,
    "not_learning": 0.1,
}
# The thresholds of the rules, named beside what they measure (the table above says why each).
# A change counts only if by this share of the run's first loss (near 0, 1e-4 -> 1e-3 is noise).
NOTICEABLE = 0.05
# Batches alike (a constant prediction): the epoch's highest step under this many times its mean, or a
# typical train_loss_spike at most this.
ALIKE = 2
# divergence: (a) the loss at this many times its lowest (or, a dead start, its first step's);
# (b) an epoch's spike this many times the run's typical one.
DIVERGENCE = 10
SPIKE = 5
# overfitting: at least OVERFIT_VALIDATIONS after the best with the validation loss OVERFIT_VAL x its
# best while the training loss is at most OVERFIT_TRAIN x its value at the best.
OVERFIT_VALIDATIONS = 5
OVERFIT_VAL = 1.5
OVERFIT_TRAIN = 0.7
# plateau: in the first PLATEAU_WINDOW validations (at least PLATEAU_MIN), the training loss never
# PLATEAU_DOWN below its first value and never PLATEAU_UP above it.
PLATEAU_WINDOW = 10
PLATEAU_MIN = 5
PLATEAU_DOWN = 0.01
PLATEAU_UP = 0.1
# oscillation's swings: in SWING_WINDOW validations, SWING_TURNS changes of direction by SWING_SIZE of
# the median, ending no lower than SWING_END of where the window began.
SWING_WINDOW = 8
SWING_TURNS = 5
SWING_SIZE = 0.2
SWING_END = 0.95
# A schedule's peak: the rate within AT_PEAK of the run's highest; a rate that moved less than
# SCHEDULED is constant; a bump in the last RECENT validations may still come back down.
AT_PEAK = 0.9
SCHEDULED = 1.01
RECENT = 3
# data_bound: over DATA_VALIDATIONS, a median wait share of DATA_WAIT or more, DATA_WAIT_PER_SAMPLE_S
# or more a sample (under 50,000 samples/s).
DATA_VALIDATIONS = 3
DATA_WAIT = 0.5
DATA_WAIT_PER_SAMPLE_S = 20e-6
# vanishing_gradients: VANISHING_VALIDATIONS in a row with the first layer's norm under FIRST_LAYER x the
# whole, or the whole under TINY_NORM while the training loss is above TINY_NORM_LOSS.
VANISHING_VALIDATIONS = 3
FIRST_LAYER = 1e-3
TINY_NORM = 1e-4
TINY_NORM_LOSS = 0.01
# not_learning: at least this many last validations whose training loss stays within 1% of their
# mean and at least half the run's first step loss (the untrained, constant-prediction level).
NOT_LEARNING_VALIDATIONS = 5
NOT_LEARNING_SPREAD = 0.01
NOT_LEARNING_LEVEL = 0.5
# ... after a loss under LEARNED x that level before (it had learned; else it never did);
LEARNED = 0.9
# ... and, for a run that never learned (no lower loss before), at least this share of its first step's.
NEVER_LEARNED_LEVEL = 0.9
# oscillation: an epoch's training loss this many times the lowest before it is a rise.
RISE = 1.5
# exploding_gradients: a gradient norm this many times its early level (the median of the first
# EXPLODING_EARLY validations' means; in those validations, also the run's first step's norm).
EXPLODING = 100
EXPLODING_EARLY = 3
# ... and against the run's first step's norm, in those first validations: a weaker reference (a fine-tune's
# first batch may be an easy one for a converged model, 191x under a hard one's with batches of 8).
EXPLODING_FROM_START = 1000
# A rollback is judged by the objective over this many validations after it: back to its best from
# before the trouble (within OBJECTIVE_HOLDS) is "undone"; fewer validations cannot tell.
RECOVERY_VALIDATIONS = 3
# How far the objective may be from its best before a rise and still be "as good" (a rise it does not
# confirm is no divergence): 1% of the best.
OBJECTIVE_HOLDS = 0.01
# The kinds whose trouble a rollback undoes: the advice names the epoch to go back to.
_ROLL_BACK = ("nonfinite", "divergence", "oscillation", "exploding_gradients")


@dataclass(frozen=True)
class Finding:
    """A problem seen in the history: its ``kind``, where it started, the evidence, what to do, and its
    ``level`` (``"problem"``, or ``"note"`` for a pattern the run itself explains)."""

    kind: str
    epoch: int | None
    iteration: int | None
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: str = ""
    level: str = "problem"

    @property
    def is_problem(self) -> bool:
        return self.level == "problem"

    def message(self) -> str:
        where = f"epoch {self.epoch}" + (f", iteration {self.iteration}" if self.iteration is not None else "")
        numbers = ", ".join(f"{k} {_show(v)}" for k, v in self.evidence.items())
        label = "" if self.is_problem else "(note) "
        return f"{label}{self.kind} from {where}: {numbers}. {self.advice}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # "level" is the last key: older readers, which take the others by name, skip it

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(str(data["kind"]), data.get("epoch"), data.get("iteration"), dict(data.get("evidence") or {}),
                   str(data.get("advice") or ""), str(data.get("level") or "problem"))


def _show(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _number(value: Any) -> float | None:
    """A float, NaN included; ``None`` for a missing cell."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _series(rows: Sequence[Mapping[str, Any]], column: str) -> list[tuple[int, float]]:
    """(row index, value) of the rows that have ``column`` (NaN kept: it is evidence)."""
    out = []
    for i, row in enumerate(rows):
        value = _number(row.get(column))
        if value is not None:
            out.append((i, value))
    return out


def _finding(kind: str, rows: Sequence[Mapping[str, Any]], i: int, **evidence: Any) -> Finding:
    row = rows[i] if 0 <= i < len(rows) else {}  # a stop before the first validation has no row
    epoch, iteration = row.get("epoch"), row.get("iteration")
    return Finding(kind, None if epoch is None else int(epoch), None if iteration is None else int(iteration),
                   {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in evidence.items()},
                   ADVICE[kind])


def _nonfinite(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], stop_reason: str | None) -> Finding | None:
    for column in columns:
        values = _series(rows, column)
        for i, value in values:
            if not math.isfinite(value):
                return _finding("nonfinite", rows, i, column=column, value=str(value))
    if stop_reason in ("nonfinite_loss", "nonfinite_metric"):  # perhaps before the first validation
        return _finding("nonfinite", rows, len(rows) - 1, stop_reason=stop_reason)
    return None


def _typical_spike(rows: Sequence[Mapping[str, Any]], column: str) -> float:
    """The run's typical ``<column>_spike``: the median of its finite spikes, and at least 1 (the
    first step: an untrained network's loss is as high as a healthy run goes)."""
    spikes = [v for _, v in _series(rows, f"{column}_spike") if math.isfinite(v)]
    return max(1.0, statistics.median(spikes)) if spikes else 1.0


def _dead_start(rows: Sequence[Mapping[str, Any]], column: str) -> int | None:
    """The first row whose loss sits at 10x the run's first step loss or more with every batch alike
    (the epoch's highest step under 2x its mean): a network knocked out to a constant prediction."""
    starts = dict(_series(rows, f"{column}_start"))
    spikes = dict(_series(rows, f"{column}_spike"))
    for i, value in _series(rows, column):
        start, spike = starts.get(i), spikes.get(i)
        if start is None or spike is None or not start > 0 or not math.isfinite(value):
            continue
        if value >= DIVERGENCE * start and spike * start < ALIKE * value:
            return i
    return None


def as_good(value: float, reference: float, mode: str) -> bool:
    """Whether ``value`` is as good as ``reference`` for the objective's ``mode``: better, or within
    :data:`OBJECTIVE_HOLDS` of it."""
    margin = OBJECTIVE_HOLDS * abs(reference)
    return value <= reference + margin if mode == "min" else value >= reference - margin


def _objective_holds(
    rows: Sequence[Mapping[str, Any]], i: int, began: int, objective: str | None, mode: str | None,
    column: str = "train_loss", lowest: float | None = None,
) -> dict[str, Any] | None:
    """Evidence that the ``objective`` does not confirm a rise of ``column`` seen at row ``i`` (from
    its ``lowest`` before row ``began``): at row ``i`` it is as good as its best before the rise
    (within :data:`OBJECTIVE_HOLDS`), or, later, it came back to that best while ``column`` stayed at
    its new level (never back under :data:`RISE` x its lowest: the data changed, the loss did not
    swing). ``None``: it confirms, or cannot tell (no value before the rise, or none now)."""
    if objective is None or mode not in ("min", "max") or not 0 <= i < len(rows):
        return None
    before = [v for _, v in _series(rows[:began], objective) if math.isfinite(v)]
    now = _number(rows[i].get(objective))
    if not before or now is None or not math.isfinite(now):
        return None
    best = min(before) if mode == "min" else max(before)
    if as_good(now, best, mode):
        return {"objective": objective, "objective_best_before": best, "objective_now": now}
    if lowest is None:
        return None
    later = _series(rows[i + 1:], objective)
    stayed = all(not math.isfinite(v) or v >= RISE * lowest for _, v in _series(rows[i + 1:], column))
    back = next(((k, v) for k, v in later if math.isfinite(v) and as_good(v, best, mode)), None)
    if not stayed or back is None:
        return None
    return {"objective": objective, "objective_best_before": best, "objective_now": now,
            "objective_back_at_epoch": rows[i + 1 + back[0]].get("epoch"), "objective_then": back[1]}


def _divergence(
    rows: Sequence[Mapping[str, Any]], column: str, stop_reason: str | None,
    objective: str | None = None, mode: str | None = None,
) -> tuple[Finding, int] | None:
    """The divergence, and the row its rise began at (the lowest before it): from there on, what the
    other rules would see (a rising loss, a gap) is the divergence's doing. A rise of ``column`` to
    10x its lowest that the ``objective`` does not confirm (it is as good as before the rise) is a
    ``loss_shift`` note instead (the data changed), and the rows after it are judged as usual."""
    lowest, lowest_at = math.inf, 0
    finite = [v for _, v in _series(rows, column) if math.isfinite(v)]
    first = finite[0] if finite else 0.0
    spikes = dict(_series(rows, f"{column}_spike"))
    typical = _typical_spike(rows, column)
    dead = _dead_start(rows, column)
    shift: Finding | None = None
    for i, value in _series(rows, column):
        spike = spikes.get(i)
        if spike is not None and spike >= SPIKE * typical:  # within the epoch, before its mean shows it (or is NaN)
            return _finding("divergence", rows, i, column=f"{column}_spike", spike=spike, typical_spike=typical), i
        if i == dead:
            return _finding("divergence", rows, i, column=column, start=float(rows[i][f"{column}_start"]),
                            value=value, ratio=value / float(rows[i][f"{column}_start"])), i
        if not math.isfinite(value):
            break
        if value > 0 and lowest < math.inf and value >= DIVERGENCE * lowest and value - lowest >= NOTICEABLE * first:
            holds = _objective_holds(rows, i, lowest_at + 1, objective, mode, column, lowest) \
                if objective != column else None
            if holds is None:
                return _finding("divergence", rows, i, column=column, lowest=lowest, value=value,
                                ratio=value / lowest), lowest_at + 1
            if shift is None:
                shift = replace(_finding("loss_shift", rows, i, column=column, lowest=lowest, value=value,
                                         ratio=value / lowest, **holds), level="note")
            lowest, lowest_at = value, i  # the new level is the one a later rise is measured from
            continue
        if 0 < value < lowest:
            lowest, lowest_at = value, i
    if stop_reason in ("diverged", "recovery_failed"):
        return _finding("divergence", rows, len(rows) - 1, stop_reason=stop_reason), len(rows) - 1
    return (shift, len(rows)) if shift is not None else None


def diverging(rows: Sequence[Mapping[str, Any]], *, objective_column: str, mode: str) -> tuple[Finding, int] | None:
    """The divergence rule alone (the training loss, and a loss objective), cheap enough to run at
    every validation (what :class:`~monitor.Recovery` acts on): the finding, and the index of the row
    its rise began at (the last healthy row is the one before it)."""
    found = _divergence(rows, "train_loss", None, objective_column, mode)
    if found is not None and not found[0].is_problem:  # a rise the objective does not confirm: nothing to undo
        found = None
    found = found or (_divergence(rows, objective_column, None) if mode == "min" else None)
    if found is not None and "start" in found[0].evidence:
        return found[0], 0  # a dead start: knocked out from its first steps, not from the row that shows it
    return found


def _overfitting(rows: Sequence[Mapping[str, Any]], val: str, train: str) -> Finding | None:
    pairs: list[tuple[int, float, float]] = []
    for i, row in enumerate(rows):
        v, t = _number(row.get(val)), _number(row.get(train))
        if v is not None and t is not None and math.isfinite(v) and math.isfinite(t):
            pairs.append((i, v, t))
    if len(pairs) < OVERFIT_VALIDATIONS + 1:
        return None
    best_at = min(range(len(pairs)), key=lambda k: pairs[k][1])
    _, best_val, train_at_best = pairs[best_at]
    after = pairs[best_at + 1:]
    bad = [p for p in after if p[1] >= OVERFIT_VAL * best_val and p[2] <= OVERFIT_TRAIN * train_at_best]
    if len(bad) < OVERFIT_VALIDATIONS or best_val <= 0:
        return None
    i, v, t = bad[-1]
    return _finding("overfitting", rows, pairs[best_at][0], best_val=best_val, val_now=v, train_at_best=train_at_best,
                    train_now=t, gap_now=v - t)


def _plateau(rows: Sequence[Mapping[str, Any]], train: str) -> Finding | None:
    values = [(i, v) for i, v in _series(rows, train)[:PLATEAU_WINDOW] if math.isfinite(v)]
    if len(values) < PLATEAU_MIN:
        return None
    first = values[0][1]
    lowest = min(v for _, v in values)
    highest = max(v for _, v in values)
    spikes = [v for _, v in _series(rows[: values[-1][0] + 1], f"{train}_spike") if math.isfinite(v)]
    if spikes and statistics.median(spikes) > ALIKE:  # a trained network's hard batches: a floor, not a plateau
        return None
    if first > 0 and lowest > (1 - PLATEAU_DOWN) * first and highest <= (1 + PLATEAU_UP) * first:  # neither way
        return _finding("plateau", rows, values[0][0], first=first, lowest=lowest,
                        change=(lowest - first) / first, validations=len(values))
    return None


def _epoch_ends(rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """The index of each epoch's last row (a row within an epoch has the mean of fewer steps)."""
    return [i for i, row in enumerate(rows) if i + 1 == len(rows) or rows[i + 1].get("epoch") != row.get("epoch")]


def _rates_rose(rows: Sequence[Mapping[str, Any]], i: int) -> bool:
    """Whether a learning rate rose at row ``i`` or in the 2 rows before (a warm restart, a warm-up)."""
    for k in range(max(1, i - 2), i + 1):
        for column, value in rows[k].items():
            before = _number(rows[k - 1].get(column))
            now = _number(value)
            if column.startswith("lr") and now is not None and before is not None and now > before:
                return True
    return False


def _rise(rows: Sequence[Mapping[str, Any]], train: str, objective: str | None = None,
          mode: str | None = None) -> Finding | None:
    """The training loss back at :data:`RISE` x its lowest or more (and by 5% of its first value); a
    ``loss_shift`` note instead where the objective does not confirm it (see :func:`_objective_holds`)."""
    ends = set(_epoch_ends(rows))
    values = [(i, v) for i, v in _series(rows, train) if math.isfinite(v) and i in ends]
    if not values:
        return None
    first, lowest, lowest_at = values[0][1], values[0][1], values[0][0]
    for i, v in values[1:]:
        if lowest > 0 and v >= RISE * lowest and v - lowest >= NOTICEABLE * first and not _rates_rose(rows, i):
            evidence = dict(lowest=lowest, lowest_epoch=rows[lowest_at].get("epoch"), value=v, ratio=v / lowest)
            holds = _objective_holds(rows, i, lowest_at + 1, objective, mode, train, lowest)
            if holds is not None:
                return replace(_finding("loss_shift", rows, i, column=train, **evidence, **holds), level="note")
            return _finding("oscillation", rows, i, **evidence)
        if v < lowest:
            lowest, lowest_at = v, i
    return None


def _oscillation(rows: Sequence[Mapping[str, Any]], train: str) -> Finding | None:
    values = [(i, v) for i, v in _series(rows, train) if math.isfinite(v)]
    first_loss = values[0][1] if values else 0.0
    for start in range(0, max(0, len(values) - SWING_WINDOW + 1)):
        window = values[start:start + SWING_WINDOW]
        numbers = [v for _, v in window]
        steps = [b - a for a, b in zip(numbers, numbers[1:], strict=False)]
        turns = sum(1 for a, b in zip(steps, steps[1:], strict=False) if a * b < 0)
        median = statistics.median(numbers)
        swing = (max(numbers) - min(numbers)) / median if median > 0 else 0.0
        wide = max(numbers) - min(numbers) >= NOTICEABLE * first_loss
        if turns >= SWING_TURNS and swing >= SWING_SIZE and wide and numbers[-1] >= SWING_END * numbers[0]:
            return _finding("oscillation", rows, window[0][0], turns=turns, swing=swing, first=numbers[0],
                            last=numbers[-1], validations=len(window))
    return None


def _data_bound(rows: Sequence[Mapping[str, Any]]) -> Finding | None:
    values = [(i, v) for i, v in _series(rows, "data_wait_frac") if math.isfinite(v)]
    if len(values) < DATA_VALIDATIONS:
        return None
    median = statistics.median(v for _, v in values)
    speeds = dict(_series(rows, "samples_per_s"))
    waits = [v / speeds[i] for i, v in values if speeds.get(i)]  # seconds of waiting per sample
    wait = statistics.median(waits) if waits else math.inf  # no sizes: the share alone decides
    if median >= DATA_WAIT and wait >= DATA_WAIT_PER_SAMPLE_S:
        first = next(i for i, v in values if v >= DATA_WAIT)
        evidence: dict[str, Any] = {"median_data_wait_frac": median}
        if waits:
            evidence["wait_per_sample_ms"] = wait * 1e3
        return _finding("data_bound", rows, first, **evidence)
    return None


def _exploding(rows: Sequence[Mapping[str, Any]]) -> Finding | None:
    norms = [(i, v) for i, v in _series(rows, "train_grad_norm") if math.isfinite(v)]
    starts = [v for _, v in _series(rows, "train_grad_norm_start") if math.isfinite(v) and v > 0]
    if len(norms) < 2 and not starts:
        return None
    early = statistics.median(v for _, v in norms[:EXPLODING_EARLY]) if len(norms) >= 2 else 0.0
    highest = dict(_series(rows, "train_grad_norm_max"))  # a step's norm (inf counts; NaN steps are left out)
    means = dict(norms[EXPLODING_EARLY:])
    for i in range(len(rows)):
        step = highest.get(i)
        # In the first validations, whose own steps make the early median, a step is also judged against the
        # run's first step: a blow-up in the first epoch raises that epoch's mean with it.
        if starts and i < EXPLODING_EARLY and step is not None and not math.isnan(step) and \
                step >= EXPLODING_FROM_START * starts[0]:
            return _finding("exploding_gradients", rows, i, column="train_grad_norm_max", first_step=starts[0],
                            value=step, ratio=step / starts[0])
        for column, v in (("train_grad_norm_max", step), ("train_grad_norm", means.get(i))):
            if early > 0 and v is not None and not math.isnan(v) and v >= EXPLODING * early:
                return _finding("exploding_gradients", rows, i, column=column, early_median=early, value=v,
                                ratio=v / early)
    return None


def _vanishing(rows: Sequence[Mapping[str, Any]], train: str) -> list[Finding]:
    norms = [(i, v) for i, v in _series(rows, "train_grad_norm") if math.isfinite(v)]
    found: list[Finding] = []
    losses = dict(_series(rows, train))
    firsts = dict(_series(rows, "train_grad_norm_first"))
    run, started = 0, 0
    for i, v in norms:
        loss = losses.get(i)
        first = firsts.get(i)
        tiny = (first is not None and math.isfinite(first) and first < FIRST_LAYER * v) or (
            v < TINY_NORM and (loss is None or loss > TINY_NORM_LOSS))
        started = i if run == 0 else started
        run = run + 1 if tiny else 0
        if run == VANISHING_VALIDATIONS:
            evidence: dict[str, Any] = {"grad_norm": v}
            if first is not None:
                evidence.update(first_layer_grad_norm=first, first_layer_share=first / v if v else 0.0)
            found.append(_finding("vanishing_gradients", rows, started, **evidence))
            break
    return found


def _not_learning(rows: Sequence[Mapping[str, Any]], train: str, objective: str | None = None,
                  mode: str | None = None) -> Finding | None:
    """The last validations' training loss flat at about its first step's (untrained) level: a model that
    learns nothing any more (dead units after a rate too high, a rollback that did not help), or one that
    never learned (its objective never got better than at its first validation: random labels)."""
    starts = [v for _, v in _series(rows, f"{train}_start") if math.isfinite(v) and v > 0]
    values = [(i, v) for i, v in _series(rows, train)]
    tail = values[-NOT_LEARNING_VALIDATIONS:]
    if not starts or len(tail) < NOT_LEARNING_VALIDATIONS or not all(math.isfinite(v) for _, v in tail):
        return None
    mean = statistics.fmean(v for _, v in tail)
    flat = all(abs(v - mean) <= NOT_LEARNING_SPREAD * mean for _, v in tail)
    falling = tail[0][1] - tail[-1][1] > NOT_LEARNING_SPREAD * mean  # slowly, but learning (a weak signal)
    if not flat or falling or mean < NOT_LEARNING_LEVEL * starts[0]:
        return None
    start = len(values) - NOT_LEARNING_VALIDATIONS  # where the flat stretch began, among the values
    while start > 0 and math.isfinite(values[start - 1][1]) and \
            abs(values[start - 1][1] - mean) <= NOT_LEARNING_SPREAD * mean:
        start -= 1
    if any(math.isfinite(v) and v < LEARNED * mean for _, v in values[:start]):
        return _finding("not_learning", rows, values[start][0], loss=mean, first_step_loss=starts[0],
                        validations=len(values) - start, learned=True)
    return _never_learned(rows, train, objective, mode, mean, starts[0], values[start][0])


def _never_learned(rows: Sequence[Mapping[str, Any]], train: str, objective: str | None, mode: str | None,
                   loss: float, first_step: float, start: int) -> Finding | None:
    """:func:`_not_learning` for a run that never learned: its training loss flat at
    :data:`NEVER_LEARNED_LEVEL` x its first step's or more (an untrained network's first loss is about
    a constant prediction's), its objective no better over that stretch (from row ``start``) than
    where it began, and its batches alike (a typical ``train_loss_spike`` of 2 or less: a constant
    prediction; a converged model fine-tuned at a small rate is as flat, but its hard batches are 2-7x
    its first step)."""
    if objective is None or mode not in ("min", "max") or loss < NEVER_LEARNED_LEVEL * first_step:
        return None
    scores = [v for _, v in _series(rows[start:], objective) if math.isfinite(v)]
    spikes = [v for _, v in _series(rows, f"{train}_spike") if math.isfinite(v)]
    if len(scores) < NOT_LEARNING_VALIDATIONS or not spikes or statistics.median(spikes) > ALIKE:
        return None
    best = min(scores) if mode == "min" else max(scores)
    if not as_good(scores[0], best, mode):
        return None  # the objective got better over the stretch: it learns something
    return replace(_finding("not_learning", rows, 0, loss=loss, first_step_loss=first_step, objective=objective,
                            objective_first=scores[0], objective_best=best, learned=False),
                   advice=NEVER_LEARNED_ADVICE)


def _row_index(rows: Sequence[Mapping[str, Any]], finding: Finding) -> int:
    for i, row in enumerate(rows):
        if row.get("iteration") == finding.iteration and row.get("epoch") == finding.epoch:
            return i
    return len(rows)


def _rate_at(rows: Sequence[Mapping[str, Any]], i: int) -> tuple[float, int | None] | None:
    """The first group's rate (``lr``) at row ``i`` (or the last row before it that has one) and the
    epoch since which it had that value."""
    rates = [(k, v) for k, v in _series(rows, "lr") if k <= i and math.isfinite(v)]
    if not rates:
        return None
    k, rate = rates[-1]
    since = k
    for j, v in reversed(rates[:-1]):
        if not math.isclose(v, rate, rel_tol=1e-9):
            break
        since = j
    epoch = rows[since].get("epoch")
    return rate, None if epoch is None else int(epoch)


def _schedule_peak(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The run's highest rate, if the rate was not constant over the run (a schedule)."""
    rates = [v for _, v in _series(rows, "lr") if math.isfinite(v)]
    return max(rates) if rates and max(rates) > min(rates) * SCHEDULED else None


def _at_schedule_peak(rows: Sequence[Mapping[str, Any]], rate: float) -> float | None:
    """The schedule's peak, if ``rate`` is within 10% of it (a schedule held the rate at its peak)."""
    peak = _schedule_peak(rows)
    return peak if peak is not None and rate >= AT_PEAK * peak else None


def _recovered_after(rows: Sequence[Mapping[str, Any]], i: int, train: str) -> bool:
    """Whether the training loss went below its lowest before row ``i`` later on."""
    values = [(k, v) for k, v in _series(rows, train) if math.isfinite(v)]
    before = [v for k, v in values if k < i]
    return bool(before) and any(v < min(before) for k, v in values if k > i)


def _best_before(
    rows: Sequence[Mapping[str, Any]], column: str, mode: str, end: int
) -> tuple[int, float] | None:
    """The epoch and value of the best objective in ``rows[:end]``."""
    values = [(k, v) for k, v in _series(rows[:end], column) if math.isfinite(v)]
    if not values:
        return None
    k, v = (min if mode == "min" else max)(values, key=lambda kv: kv[1])
    return int(rows[k].get("epoch") or 0), v


def _explained(
    finding: Finding, rows: Sequence[Mapping[str, Any]], train: str, objective: str, mode: str,
    kept_epochs: Collection[int] | None = None,
) -> Finding:
    """The finding with its level and advice for this run: the rate at the time and a value to try,
    the epoch to roll back to, the best checkpoint to keep; a note where the run explains it."""
    i = min(_row_index(rows, finding), len(rows) - 1)
    if i < 0:
        return finding
    advice, evidence = finding.advice, dict(finding.evidence)
    rate, factor = _rate_at(rows, i), RATE_FACTOR[finding.kind]
    if finding.evidence.get("learned") is False:
        factor = None  # a model that never learned: no rate advice before the data is checked
    # The rate while it happened: the highest from where the loss was lowest before a rise, or over a
    # swing's window of validations (a rise is seen once 1.5x: often after the peak it began at).
    start = max((k for k, row in enumerate(rows[:i]) if row.get("epoch") == finding.evidence.get("lowest_epoch")),
                default=i)
    span = range(start, min(len(rows), i + int(finding.evidence.get("validations") or 1)))
    during = max((v for k, v in _series(rows, "lr") if k in span and math.isfinite(v)), default=None)
    peak = _at_schedule_peak(rows, during) if during is not None and finding.kind == "oscillation" else None
    last = span[-1] if span else i
    recovered = peak is not None and _recovered_after(rows, last, train)
    if rate is not None and peak is not None and (recovered or last >= len(rows) - RECENT):
        evidence["lr"] = during
        then = ("the loss came back down after it: the schedule's doing" if recovered else
                "if the loss does not come back down within a few validations, it is a problem")
        advice = (f"The rate was at its schedule's peak then (lr {_show(during)}, the run's highest {_show(peak)}); "
                  f"{then}. If the bump matters, lower the peak (try lr {_show(peak / 3)}) or lengthen the warm-up.")
        return replace(finding, evidence=evidence, advice=advice, level="note")
    if rate is not None and factor is not None:
        value, since = rate
        evidence["lr"] = value
        # The generic "(by 10x)" gives way to the value to try: a rate held since some epoch, or, where
        # a schedule was moving it then, the schedule's peak.
        peak = _schedule_peak(rows)
        moving = peak is not None and since == rows[i].get("epoch") and i > 0
        tried = (f"lr was {_show(value)} at epoch {since}, under a schedule that peaked at {_show(peak)}; try a "
                 f"peak of {_show(peak * factor)}." if moving and peak is not None else
                 f"lr was {_show(value)} from epoch {since}; try {_show(value * factor)}.")
        advice = f"{tried} {advice.replace('Lower the learning rate (by 10x)', 'Lower the rate')}"
    if finding.kind in _ROLL_BACK:
        # Only a state from before the trouble, and one whose best file is kept (when that is known).
        usable = rows[:i] if kept_epochs is None else [r for r in rows[:i] if r.get("epoch") in kept_epochs]
        best = _best_before(usable, objective, mode, len(usable))
        if best is not None:
            advice += f" Roll back to epoch {best[0]} ({objective} {_show(best[1])}), the best checkpoint before it."
        else:
            advice += (" No checkpoint from before it is kept: restart from the initial (or pre-trained) weights "
                       "at the lower rate.")
    return replace(finding, evidence=evidence, advice=advice)


def _one_story(findings: list[Finding]) -> list[Finding]:
    """The findings reconciled: a loss that rose (an oscillation or divergence) is not also a plateau,
    a rise the objective did not confirm (a ``loss_shift``) is not also an oscillation, and a model
    that never learned is said once, by its plateau or its vanishing gradients where either is found."""
    shifts = {f.epoch for f in findings if f.kind == "loss_shift"}
    findings = [f for f in findings if not (f.kind == "oscillation" and f.epoch in shifts)]
    findings = [f for k, f in enumerate(findings)  # the divergence rule and the rise rule may both see a shift
                if f.kind != "loss_shift" or all(g.kind != "loss_shift" or g.epoch != f.epoch for g in findings[:k])]
    unstable = any(f.kind in ("divergence", "oscillation", "nonfinite") and f.is_problem for f in findings)
    # Flat since a divergence or a NaN: their consequence, said once.
    # A plateau's advice says it, and vanishing gradients are why it learns nothing: not twice.
    flat = any(f.kind in ("plateau", "vanishing_gradients") for f in findings)
    return [f for f in findings if not (unstable and f.kind in ("plateau", "not_learning"))
            and not (flat and f.kind == "not_learning" and f.evidence.get("learned") is False)]


def by_level(findings: Sequence[Finding]) -> tuple[list[Finding], list[Finding]]:
    """``findings`` split into the problems and the notes, each in its order."""
    return [f for f in findings if f.is_problem], [f for f in findings if not f.is_problem]


def steps_after(
    rows: Sequence[Mapping[str, Any]], after_last_row: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``after_last_row`` if its steps come after the last of ``rows`` (else it is a past segment's, or
    has no steps of its own: ``None``)."""
    last = int(_number(rows[-1].get("iteration")) or 0) if rows else 0
    tail = _number(after_last_row.get("iteration")) if after_last_row else None
    return after_last_row if tail is not None and tail > last else None


def rollbacks(recoveries: Any) -> list[Mapping[str, Any]]:
    """The rollbacks in ``run.json``'s ``recoveries`` (:class:`~monitor.Recovery`'s): the entries it
    went back on, not an attempt it gave up on."""
    return [e for e in recoveries or () if isinstance(e, Mapping) and not e.get("gave_up")]


def _recovered(recoveries: Sequence[Mapping[str, Any]], findings: list[Finding], rows: Sequence[Mapping[str, Any]],
               **how: Any) -> list[Finding]:
    """A note for each rollback. A run that went on after its last rollback: the troubles that began
    before it are notes (they were undone), and its rows after it are judged again on their own. A
    run that still ended broken (an attempt given up on, a NaN, a divergence stop): its problem's
    advice says how many rollbacks were tried."""
    notes, done = [], rollbacks(recoveries)
    for entry in done:
        rates = (entry.get("changes") or {}).get("lr")
        evidence = {"reason": str(entry.get("reason")), "loss": entry.get("loss"),
                    "rolled_back_to": entry.get("rolled_back_to"), "attempt": entry.get("attempt")}
        if rates:
            evidence["lr"] = f"{_show(rates[0][0])} -> {_show(rates[1][0])}"
        advice = ADVICE["recovered"] if not rates else (
            f"The run was rolled back and went on at lr {_show(rates[1][0])}; if it happens again, start there.")
        notes.append(Finding("recovered", _int(entry.get("epoch")), _int(entry.get("iteration")), evidence,
                             advice, level="note"))
    if not done:
        return notes
    if recoveries[-1].get("gave_up") or how.get("stop_reason") in ("nonfinite_loss", "nonfinite_metric", "diverged",
                                                                       "recovery_failed"):
        last = next((e for e in reversed(done) if (e.get("changes") or {}).get("lr")), None)
        rate = "" if last is None else f" (the last at lr {_show(last['changes']['lr'][1][0])})"
        for i, finding in enumerate(findings):
            if finding.kind in ("nonfinite", "divergence"):
                findings[i] = replace(finding, advice=f"{finding.advice} Recovery rolled back {len(done)} times{rate} "
                                                     "and the trouble came back each time: look for its cause in the "
                                                     "data or the model, not only in the rate.")
        return notes
    cut = max(_int(e.get("epoch")) or 0 for e in done)  # the last rollback: what came before it was undone
    after = [row for row in rows if (_number(row.get("epoch")) or 0) > cut]
    again = [f for f in diagnose(after, **how) if f.kind in _ROLL_BACK and f.is_problem] \
        if len(after) >= 2 else []  # judged again from the rollback on
    stuck_at = _not_learning(rows, "train_loss")  # flat at the untrained level since (it had learned before)
    if stuck_at is not None and (stuck_at.epoch or 0) > cut:
        again.append(_explained(stuck_at, rows, "train_loss", str(how.get("objective_column")), str(how.get("mode"))))
    # "Undone" only where the objective shows it: it came back to its best from before the trouble.
    objective, mode = str(how.get("objective_column")), str(how.get("mode"))
    before = _best_before(rows, objective, mode, len(rows) - len(after))  # (rows are in epoch order)
    since = _best_before(after, objective, mode, len(after))
    came_back = not after or (before is not None and since is not None and as_good(since[1], before[1], mode))
    stuck = any(f.kind == "not_learning" for f in again)
    for i, finding in enumerate(findings):
        if finding.is_problem and finding.kind in _ROLL_BACK and (finding.epoch or 0) <= cut:
            if came_back and not stuck:
                findings[i] = replace(finding, level="note", advice=f"Undone: the run was rolled back at epoch "
                                                                    f"{cut} and went on. {finding.advice}")
            elif len(after) < RECOVERY_VALIDATIONS and not stuck:  # too soon to tell
                findings[i] = replace(finding, level="note", advice=(
                    f"Rolled back at epoch {cut}; the run ended {len(after)} validation(s) later, too soon to see "
                    f"the objective come back to its best from before. {finding.advice}"))
            else:
                findings[i] = replace(finding, advice=f"{finding.advice} Recovery rolled back at epoch {cut}, but "
                                                      f"the objective did not come back to its best from before.")
    seen = {(f.kind, f.epoch) for f in findings}
    notes += [f for f in again if (f.kind, f.epoch) not in seen]
    return notes


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def diagnose(
    rows: Sequence[Mapping[str, Any]], *, objective_column: str, mode: str, stop_reason: str | None = None,
    after_last_row: Mapping[str, Any] | None = None, recoveries: Sequence[Mapping[str, Any]] = (),
    kept_epochs: Collection[int] | None = None,
) -> list[Finding]:
    """The findings in a history (``rows``: one mapping per validation, as ``history.csv``'s), in
    the order they started; empty for a healthy run. See the table in this module's docstring.

    Args:
        rows: the history rows.
        objective_column: the Objective's column, e.g. ``"val_loss"``.
        mode: ``"min"`` or ``"max"``.
        stop_reason: ``run.json``'s stop reason, if the run ended.
        after_last_row: the training columns of the steps after the last row (``run.json``'s
            ``after_last_row``: a run stopped between validations, by a NaN mid-epoch), read by
            the rules of a broken run (nonfinite, divergence, exploding gradients) only.
        recoveries: ``run.json``'s ``recoveries`` (:class:`~monitor.Recovery`'s rollbacks): a note each.
        kept_epochs: the epochs whose best checkpoint is on disk: rollback advice names only those
            (``None``: not known, any epoch before the trouble).
    """
    train = "train_loss"
    val_loss = objective_column if mode == "min" else "val_loss"
    tail = steps_after(rows, after_last_row)
    with_tail = [*rows, tail] if tail is not None else rows
    nonfinite = _nonfinite(with_tail, [train, objective_column, "train_grad_norm"], stop_reason)
    shift = _divergence(with_tail, train, stop_reason, objective_column, mode)
    divergence = shift if shift is not None and shift[0].is_problem else (
        _divergence(rows, objective_column, None) if mode == "min" else None)
    shift = shift if shift is not None and not shift[0].is_problem else None
    # What follows a divergence or a NaN is its consequence (swings, a growing gap): the other rules
    # read only the rows before the first of them (before the divergence's rise began).
    starts = [_row_index(rows, nonfinite)] if nonfinite is not None else []
    starts += [divergence[1]] if divergence is not None else []
    healthy = rows[: min(starts)] if starts else rows
    found = [
        nonfinite,
        divergence[0] if divergence is not None else None,
        shift[0] if shift is not None else None,
        _overfitting(healthy, val_loss, train),
        _plateau(healthy, train),
        _oscillation(healthy, train) or _rise(healthy, train, objective_column, mode),
        _data_bound(rows),
        _exploding(with_tail),
        *_vanishing(healthy, train),  # after a divergence or a NaN, small gradients are its consequence
        _not_learning(rows, train, objective_column, mode),  # the state at the end, after any trouble
    ]
    findings = [_explained(f, with_tail, train, objective_column, mode, kept_epochs) for f in found if f is not None]
    findings = _one_story(findings)
    if recoveries:
        findings += _recovered(recoveries, findings, rows, objective_column=objective_column, mode=mode,
                               stop_reason=stop_reason, after_last_row=after_last_row)
    return sorted(findings, key=lambda f: (f.iteration if f.iteration is not None else -1, KINDS.index(f.kind)))

"""Diagnosis: the common training problems, found in a run's history, with when they started and what
to do. Pure Python (the review and a live run both use it; no torch, no pandas).

Every rule reads only the history's columns (one row per validation) and is documented here, with
its thresholds and the reasoning behind them. The thresholds are set so that a healthy run gives no
finding (the case study, which early stopping ends 26% above its best validation loss, among them)
and checked on a labelled suite of runs in ``benchmarks/bench_diagnosis.py``. A run that stopped
between two validations (a NaN mid-epoch) also has the training columns of its last steps
(``run.json``'s ``after_last_row``), which the rules of a broken run read: that is where a loss or
a gradient blew up.

Two columns see inside an epoch, at no extra host sync per step: ``train_loss_spike``, the epoch's
highest step loss over the run's first, and ``train_grad_norm_max``, the epoch's highest gradient
norm (with :func:`~monitor.attach_grad_norm`). An epoch's mean hides a loss that blows up for a few
steps and then settles (often dead, at the loss of a constant prediction).

=====================  ======================================================================
kind                   rule (``n`` = validations so far)
=====================  ======================================================================
nonfinite              the first row where ``train_loss``, the objective or ``train_grad_norm``
                       is NaN or infinite, or a stop reason ``nonfinite_loss``/``nonfinite_metric``.
divergence             the training loss (or a loss objective) reaches 10x its lowest value so
                       far (an order of magnitude: noise does not do that), or a step's loss 5x
                       the run's first (``train_loss_spike`` >= 5: an untrained network's loss
                       is about the same on every batch, and healthy runs in the suite, batches
                       of 4 included, stay at 2 or below), or stop reason ``diverged``.
overfitting            after the objective's best, for at least 5 validations: validation loss
                       at least 1.5x its best while the training loss fell to at most 0.7x its
                       value at the best. (Early stopping's usual tail, a few validations 10-30%
                       above the best, is not a problem: it is what early stopping is for.)
plateau                in the first 10 validations (at least 5): the training loss never got
                       1% below its first value. The loss did not move: the rate is likely far
                       too low, or the model cannot learn from the data (labels, inputs, loss).
oscillation            the training loss, which steps of the right size keep bringing down, goes
                       back up: an epoch's mean at least 1.5x the lowest before it, and above it
                       by 5% of the first (a loss near 0 going from 0.001 to 0.002 is noise);
                       not within 2 validations of a rise of the learning rate (a warm restart
                       or a warm-up does that on purpose). Or, in a window of 8 validations: the
                       loss changed direction at least 5 times, by a swing of at least 20% of its
                       median and 5% of the run's first, and ended no lower than 95% of where the
                       window began: steps too large to settle.
data_bound             over at least 3 validations, the median ``data_wait_frac`` is 0.5 or more
                       and the loader delivers under 50,000 samples/s (the median wait is 20 us a
                       sample or more): the loop waits for data more than it trains, and the data
                       is slow (a tiny model on in-memory tensors waits "most" of a short step:
                       no problem worth a change).
exploding_gradients    ``train_grad_norm`` (from the 4th validation) or ``train_grad_norm_max``
                       (a single step's norm, an infinite one included) at least 100x the median
                       of the first 3 validations' ``train_grad_norm``: two orders of magnitude,
                       where a healthy run's norms change by a few times.
vanishing_gradients    ``train_grad_norm_first`` (the first layer's, from :func:`~monitor.attach_grad_norm`)
                       under 1/1000 of ``train_grad_norm`` for 3 validations in a row, or the whole
                       norm under 1e-4 while the training loss is above 0.01: the first layers
                       learn (almost) nothing.
=====================  ======================================================================

Examples:
    .. code-block:: python

        for finding in diagnose(rows, objective_column="val_loss", mode="min"):
            print(finding.kind, finding.epoch, finding.advice)
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Finding", "diagnose", "steps_after", "KINDS", "ADVICE"]

KINDS = (
    "nonfinite", "divergence", "overfitting", "plateau", "oscillation", "data_bound",
    "exploding_gradients", "vanishing_gradients",
)

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
}


@dataclass(frozen=True)
class Finding:
    """A problem seen in the history: its ``kind``, where it started, the evidence, what to do."""

    kind: str
    epoch: int | None
    iteration: int | None
    evidence: dict[str, Any] = field(default_factory=dict)
    advice: str = ""

    def message(self) -> str:
        where = f"epoch {self.epoch}" + (f", iteration {self.iteration}" if self.iteration is not None else "")
        numbers = ", ".join(f"{k} {_show(v)}" for k, v in self.evidence.items())
        return f"{self.kind} from {where}: {numbers}. {self.advice}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Finding:
        return cls(str(data["kind"]), data.get("epoch"), data.get("iteration"), dict(data.get("evidence") or {}),
                   str(data.get("advice") or ""))


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


def _divergence(
    rows: Sequence[Mapping[str, Any]], column: str, stop_reason: str | None
) -> tuple[Finding, int] | None:
    """The divergence, and the row its rise began at (the lowest before it): from there on, what the
    other rules would see (a rising loss, a gap) is the divergence's doing."""
    lowest, lowest_at = math.inf, 0
    spikes = dict(_series(rows, f"{column}_spike"))
    for i, value in _series(rows, column):
        spike = spikes.get(i)
        if spike is not None and spike >= 5:  # within the epoch, before its mean shows it (or is NaN)
            return _finding("divergence", rows, i, column=f"{column}_spike", spike=spike), i
        if not math.isfinite(value):
            break
        if value > 0 and lowest < math.inf and value >= 10 * lowest:
            return _finding("divergence", rows, i, column=column, lowest=lowest, value=value,
                            ratio=value / lowest), lowest_at + 1
        if 0 < value < lowest:
            lowest, lowest_at = value, i
    if stop_reason == "diverged":
        return _finding("divergence", rows, len(rows) - 1, stop_reason=stop_reason), len(rows) - 1
    return None


def _overfitting(rows: Sequence[Mapping[str, Any]], val: str, train: str) -> Finding | None:
    pairs: list[tuple[int, float, float]] = []
    for i, row in enumerate(rows):
        v, t = _number(row.get(val)), _number(row.get(train))
        if v is not None and t is not None and math.isfinite(v) and math.isfinite(t):
            pairs.append((i, v, t))
    if len(pairs) < 6:
        return None
    best_at = min(range(len(pairs)), key=lambda k: pairs[k][1])
    _, best_val, train_at_best = pairs[best_at]
    after = pairs[best_at + 1:]
    bad = [p for p in after if p[1] >= 1.5 * best_val and p[2] <= 0.7 * train_at_best]
    if len(bad) < 5 or best_val <= 0:
        return None
    i, v, t = bad[-1]
    return _finding("overfitting", rows, pairs[best_at][0], best_val=best_val, val_now=v, train_at_best=train_at_best,
                    train_now=t, gap_now=v - t)


def _plateau(rows: Sequence[Mapping[str, Any]], train: str) -> Finding | None:
    values = [(i, v) for i, v in _series(rows, train)[:10] if math.isfinite(v)]
    if len(values) < 5:
        return None
    first = values[0][1]
    lowest = min(v for _, v in values)
    if first > 0 and lowest > 0.99 * first:
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


def _rise(rows: Sequence[Mapping[str, Any]], train: str) -> Finding | None:
    """The training loss back at 1.5x its lowest or more (and by 5% of its first value)."""
    ends = set(_epoch_ends(rows))
    values = [(i, v) for i, v in _series(rows, train) if math.isfinite(v) and i in ends]
    if not values:
        return None
    first, lowest, lowest_at = values[0][1], values[0][1], values[0][0]
    for i, v in values[1:]:
        if lowest > 0 and v >= 1.5 * lowest and v - lowest >= 0.05 * first and not _rates_rose(rows, i):
            return _finding("oscillation", rows, i, lowest=lowest, lowest_epoch=rows[lowest_at].get("epoch"),
                            value=v, ratio=v / lowest)
        if v < lowest:
            lowest, lowest_at = v, i
    return None


def _oscillation(rows: Sequence[Mapping[str, Any]], train: str) -> Finding | None:
    values = [(i, v) for i, v in _series(rows, train) if math.isfinite(v)]
    first_loss = values[0][1] if values else 0.0
    for start in range(0, max(0, len(values) - 7)):
        window = values[start:start + 8]
        numbers = [v for _, v in window]
        steps = [b - a for a, b in zip(numbers, numbers[1:], strict=False)]
        turns = sum(1 for a, b in zip(steps, steps[1:], strict=False) if a * b < 0)
        median = statistics.median(numbers)
        swing = (max(numbers) - min(numbers)) / median if median > 0 else 0.0
        wide = max(numbers) - min(numbers) >= 0.05 * first_loss
        if turns >= 5 and swing >= 0.2 and wide and numbers[-1] >= 0.95 * numbers[0]:
            return _finding("oscillation", rows, window[0][0], turns=turns, swing=swing, first=numbers[0],
                            last=numbers[-1], validations=len(window))
    return None


def _data_bound(rows: Sequence[Mapping[str, Any]]) -> Finding | None:
    values = [(i, v) for i, v in _series(rows, "data_wait_frac") if math.isfinite(v)]
    if len(values) < 3:
        return None
    median = statistics.median(v for _, v in values)
    speeds = dict(_series(rows, "samples_per_s"))
    waits = [v / speeds[i] for i, v in values if speeds.get(i)]  # seconds of waiting per sample
    wait = statistics.median(waits) if waits else math.inf  # no sizes: the share alone decides
    if median >= 0.5 and wait >= 20e-6:
        first = next(i for i, v in values if v >= 0.5)
        evidence: dict[str, Any] = {"median_data_wait_frac": median}
        if waits:
            evidence["wait_per_sample_ms"] = wait * 1e3
        return _finding("data_bound", rows, first, **evidence)
    return None


def _exploding(rows: Sequence[Mapping[str, Any]]) -> Finding | None:
    norms = [(i, v) for i, v in _series(rows, "train_grad_norm") if math.isfinite(v)]
    if len(norms) < 2:
        return None
    early = statistics.median(v for _, v in norms[:3])
    highest = dict(_series(rows, "train_grad_norm_max"))  # a step's norm (inf counts; NaN steps are left out)
    means = dict(norms[3:])
    for i in range(len(rows)):
        for column, v in (("train_grad_norm_max", highest.get(i)), ("train_grad_norm", means.get(i))):
            if early > 0 and v is not None and not math.isnan(v) and v >= 100 * early:
                return _finding("exploding_gradients", rows, i, column=column, early_median=early, value=v,
                                ratio=v / early)
    return None


def _gradients(rows: Sequence[Mapping[str, Any]], train: str) -> list[Finding]:
    norms = [(i, v) for i, v in _series(rows, "train_grad_norm") if math.isfinite(v)]
    found = [f for f in [_exploding(rows)] if f is not None]
    losses = dict(_series(rows, train))
    firsts = dict(_series(rows, "train_grad_norm_first"))
    run, started = 0, 0
    for i, v in norms:
        loss = losses.get(i)
        first = firsts.get(i)
        tiny = (first is not None and math.isfinite(first) and first < 1e-3 * v) or (
            v < 1e-4 and (loss is None or loss > 0.01))
        started = i if run == 0 else started
        run = run + 1 if tiny else 0
        if run == 3:
            evidence: dict[str, Any] = {"grad_norm": v}
            if first is not None:
                evidence.update(first_layer_grad_norm=first, first_layer_share=first / v if v else 0.0)
            found.append(_finding("vanishing_gradients", rows, started, **evidence))
            break
    return found


def _row_index(rows: Sequence[Mapping[str, Any]], finding: Finding) -> int:
    for i, row in enumerate(rows):
        if row.get("iteration") == finding.iteration and row.get("epoch") == finding.epoch:
            return i
    return len(rows)


def steps_after(
    rows: Sequence[Mapping[str, Any]], after_last_row: Mapping[str, Any] | None
) -> Mapping[str, Any] | None:
    """``after_last_row`` if its steps come after the last of ``rows`` (else it is a past segment's, or
    has no steps of its own: ``None``)."""
    last = int(_number(rows[-1].get("iteration")) or 0) if rows else 0
    tail = _number(after_last_row.get("iteration")) if after_last_row else None
    return after_last_row if tail is not None and tail > last else None


def diagnose(
    rows: Sequence[Mapping[str, Any]], *, objective_column: str, mode: str, stop_reason: str | None = None,
    after_last_row: Mapping[str, Any] | None = None,
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
    """
    train = "train_loss"
    val_loss = objective_column if mode == "min" else "val_loss"
    tail = steps_after(rows, after_last_row)
    with_tail = [*rows, tail] if tail is not None else rows
    nonfinite = _nonfinite(with_tail, [train, objective_column, "train_grad_norm"], stop_reason)
    divergence = _divergence(with_tail, train, stop_reason) or (
        _divergence(rows, objective_column, None) if mode == "min" else None)
    # What follows a divergence or a NaN is its consequence (swings, a growing gap): the other rules
    # read only the rows before the first of them (before the divergence's rise began).
    starts = [_row_index(rows, nonfinite)] if nonfinite is not None else []
    starts += [divergence[1]] if divergence is not None else []
    healthy = rows[: min(starts)] if starts else rows
    found = [
        nonfinite,
        divergence[0] if divergence is not None else None,
        _overfitting(healthy, val_loss, train),
        _plateau(healthy, train),
        _oscillation(healthy, train) or _rise(healthy, train),
        _data_bound(rows),
        *_gradients(with_tail, train),
    ]
    findings = [f for f in found if f is not None]
    return sorted(findings, key=lambda f: (f.iteration if f.iteration is not None else -1, KINDS.index(f.kind)))

"""The one definition of "better" that early stopping, best checkpoints and the history share."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["Objective"]

_MODES = ("min", "max")
_THRESHOLD_MODES = ("abs", "rel")
_NONFINITE_POLICIES = ("stop", "ignore")


@dataclass(frozen=True)
class Objective:
    """Which validation metric to watch, in which direction, and what counts as an improvement.

    A value improves on the best so far only if it is finite and beats the best by more than
    ``threshold`` (absolute, or relative to ``abs(best)``); a tie is no improvement. During the
    first ``warmup`` epochs nothing is an improvement, so nothing is "best" and patience does not run.

    Args:
        metric: name of the metric in ``evaluator.state.metrics`` (e.g. ``"loss"``, ``"accuracy"``).
        mode: ``"min"`` or ``"max"``; required, never guessed from the name.
        threshold: minimum change that counts as an improvement. Default 0.0.
        threshold_mode: ``"abs"`` (change in metric units) or ``"rel"`` (fraction of ``abs(best)``).
            Default ``"abs"``.
        warmup: number of first epochs that can never be best nor count toward patience. Default 0.
        on_nonfinite: ``"stop"`` ends the run on a NaN/inf metric; ``"ignore"`` treats it as no
            improvement. Either way it is never best. Default ``"stop"``.

    Examples:
        >>> objective = Objective("loss", mode="min", threshold=1e-3)
        >>> objective.is_improvement(0.40, best=0.41)
        True
        >>> objective.score(0.40)  # higher is better, for Ignite
        -0.4
    """

    metric: str
    mode: Literal["min", "max"]
    threshold: float = 0.0
    threshold_mode: Literal["abs", "rel"] = "abs"
    warmup: int = 0
    on_nonfinite: Literal["stop", "ignore"] = "stop"

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"Argument metric should be a non-empty metric name, got {self.metric!r}.")
        if self.mode not in _MODES:
            raise ValueError(f"Argument mode should be one of {_MODES}, got {self.mode!r}.")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"Argument threshold should be a number, got {self.threshold!r}.")
        if not math.isfinite(self.threshold) or self.threshold < 0:
            raise ValueError(f"Argument threshold should be a finite number >= 0, got {self.threshold!r}.")
        if self.threshold_mode not in _THRESHOLD_MODES:
            raise ValueError(
                f"Argument threshold_mode should be one of {_THRESHOLD_MODES}, got {self.threshold_mode!r}."
            )
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"Argument warmup should be an integer >= 0, got {self.warmup!r}.")
        if self.on_nonfinite not in _NONFINITE_POLICIES:
            raise ValueError(
                f"Argument on_nonfinite should be one of {_NONFINITE_POLICIES}, got {self.on_nonfinite!r}."
            )

    @property
    def column(self) -> str:
        """The history column holding the metric, e.g. ``"val_loss"``."""
        return f"val_{self.metric}"

    @property
    def score_name(self) -> str:
        """Name of :meth:`score` in checkpoint filenames: ``"val_accuracy"`` or ``"neg_val_loss"``."""
        return self.column if self.mode == "max" else f"neg_{self.column}"

    def value(self, metrics: Mapping[str, Any]) -> float:
        """The watched metric as a float.

        Raises:
            KeyError: it is missing (lists the available metrics).
            TypeError: it is not one number (a dict, a tensor of several values...), naming it.
        """
        if self.metric not in metrics:
            raise KeyError(
                f"Objective metric {self.metric!r} not in evaluator.state.metrics; available: {sorted(metrics)}."
            )
        value = metrics[self.metric]
        prefix = f"Objective metric {self.metric!r} should be one number, got"
        if isinstance(value, Mapping):
            raise TypeError(f"{prefix} a dict with keys {sorted(value)}; name one of those keys as the metric.")
        numel = getattr(value, "numel", None)  # a tensor or an array, without importing torch
        if callable(numel) and numel() != 1:
            shape = tuple(getattr(value, "shape", ()))
            raise TypeError(f"{prefix} a tensor of shape {shape}; reduce it to one value (e.g. average=True, "
                            "or ignite.metrics.MetricsLambda to pick one element).")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TypeError(f"{prefix} {type(value).__name__} {value!r}.") from None

    def score(self, value: float) -> float:
        """``value`` turned so that higher is better (Ignite's convention for ``Checkpoint``)."""
        return value if self.mode == "max" else -value

    def is_improvement(self, value: float, best: float | None, *, epoch: int | None = None) -> bool:
        """Whether ``value`` beats ``best`` (``None``: no best yet) at ``epoch`` (1-based)."""
        if not math.isfinite(value):
            return False
        if epoch is not None and epoch <= self.warmup:
            return False
        if best is None:
            return True
        margin = self.threshold if self.threshold_mode == "abs" else self.threshold * abs(best)
        return value < best - margin if self.mode == "min" else value > best + margin

    def is_better_or_equal(self, value: float, reference: float) -> bool:
        """Whether finite ``value`` is at least as good as ``reference`` (no threshold): targets, limits."""
        if not math.isfinite(value):
            return False
        return value <= reference if self.mode == "min" else value >= reference

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form, as stored in ``run.json`` and compared on resume."""
        return asdict(self)

"""Shared benchmark helpers: interleaved, order-rotated repetitions; medians and ranges as ratios."""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence


def interleaved(variants: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each variant ``repeats`` times, interleaved, rotating the order each round.

    A variant returns the time it measured (seconds); noise on a shared machine hits all alike.
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            times[name].append(variants[name]())
    return times


def ratio_table(times: dict[str, list[float]], baseline: str, unit: str = "ms", scale: float = 1e3) -> str:
    """Median, min-max and median ratio to ``baseline`` for each variant, as aligned text."""
    base = statistics.median(times[baseline])
    lines = [f"  {'variant':44s} {'median ' + unit:>12s} {'min-max ' + unit:>18s} {'ratio':>7s}"]
    for name, values in times.items():
        med = statistics.median(values)
        lines.append(
            f"  {name:44s} {med * scale:12.2f} {min(values) * scale:8.2f}-{max(values) * scale:<9.2f} {med / base:7.2f}"
        )
    return "\n".join(lines)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)

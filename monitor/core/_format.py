"""How values are shown to people: the console line, ``monitor report``, the tables. Pure Python."""
from __future__ import annotations

import math
from typing import Any


def format_value(value: Any, *, digits: int = 6, missing: str = "-", nonfinite: str | None = None) -> str:
    """``value`` for people: floats to ``digits`` significant digits; ``missing`` for ``None``; a NaN
    or infinity as ``nonfinite`` (default: ``missing`` for NaN, ``inf``/``-inf`` for infinities).

    Examples:
        >>> format_value(0.473512345)
        '0.473512'
        >>> format_value(0.4735, digits=4)
        '0.4735'
        >>> format_value(float("nan"))
        '-'
    """
    if value is None:
        return missing
    if isinstance(value, float) and not math.isfinite(value):
        if nonfinite is not None:
            return nonfinite if math.isnan(value) else str(value)
        return missing if math.isnan(value) else str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)

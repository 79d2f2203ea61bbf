"""Argument checks shared by the handlers, with the house error format."""
from __future__ import annotations

import math
from typing import Any


def positive_int(name: str, value: Any, *, none_ok: bool = False) -> Any:
    """Return ``value`` if it is an int >= 1 (or ``None`` when ``none_ok``), else raise ``ValueError``
    naming ``name``, what is accepted, and the value."""
    if none_ok and value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        accepted = "a positive integer or None" if none_ok else "a positive integer"
        raise ValueError(f"Argument {name} should be {accepted}, got {value!r}.")
    return value


def optional_number(name: str, value: Any) -> Any:
    """Return ``value`` if it is a number (not NaN) or ``None``, else raise ``ValueError`` naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)):
        raise ValueError(f"Argument {name} should be a number or None, got {value!r}.")
    return value


def number_in(name: str, value: Any, *, low: float, high: float | None = None) -> float:
    """``value`` as a float if it is a number above ``low`` (and below ``high``), else raise
    ``ValueError`` naming ``name``, what is accepted, and the value."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > low and (
        high is None or value < high)
    if not ok:
        accepted = f"in ({low:g}, {high:g})" if high is not None else f"above {low:g}"
        raise ValueError(f"Argument {name} should be a number {accepted}, got {value!r}.")
    return float(value)

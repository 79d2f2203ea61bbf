"""Argument checks shared by the handlers, with the house error format."""
from __future__ import annotations

from typing import Any


def positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError`` naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Argument {name} should be a positive integer, got {value!r}.")
    return value

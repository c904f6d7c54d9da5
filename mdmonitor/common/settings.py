"""Checks of user settings, refusing bad values by name."""

from __future__ import annotations

import math
import numbers


def positive_number(name: str, value, allow_none: bool = False,
                    meaning: str = "number") -> float | None:
    """`value` as a float if it is a finite real number > 0 (or None when allowed); else
    ValueError "`name` must be a positive `meaning`"."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive {meaning}, got {value!r}")
    return float(value)


def positive_integer(name: str, value) -> int:
    """`value` if it is an integer >= 1; else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value

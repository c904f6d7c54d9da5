"""Checks of user settings and input arrays, refusing bad values by name."""

from __future__ import annotations

import math
import numbers

import numpy as np


def positive_number(name: str, value, allow_none: bool = False,
                    meaning: str = "number") -> float | None:
    """`value` as a float if it is a finite real number > 0 (or None when allowed); else
    ValueError "`name` must be a positive `meaning`"."""
    return _real(name, value, allow_none, f"positive {meaning}", strict=True)


def non_negative_number(name: str, value, allow_none: bool = False,
                        meaning: str = "number") -> float | None:
    """`value` as a float if it is a finite real number >= 0 (or None when allowed); else
    ValueError "`name` must be a non-negative `meaning`"."""
    return _real(name, value, allow_none, f"non-negative {meaning}", strict=False)


def positive_integer(name: str, value, allow_none: bool = False) -> int | None:
    """`value` as an int if it is an integer >= 1 (or None when allowed); else ValueError."""
    return _integer(name, value, allow_none, 1, "a positive integer")


def non_negative_integer(name: str, value, allow_none: bool = False) -> int | None:
    """`value` as an int if it is an integer >= 0 (or None when allowed); else ValueError."""
    return _integer(name, value, allow_none, 0, "a non-negative integer")


def finite_array(name: str, array, row: str = "atom") -> np.ndarray:
    """`array` as float64 if every entry is finite; else ValueError naming the first `row`
    (index along the first axis) that holds NaN or inf, e.g. "positions must be finite, but atom
    3 has [nan 0. 0.]" (a row longer than 3 names its first bad entry's column instead)."""
    array = np.asarray(array, dtype=np.float64)
    bad = ~np.isfinite(array)
    if bad.any():
        if array.ndim == 0:
            raise ValueError(f"{name} must be finite, got {array}")
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        found = (f"has {array[first[0]]}" if array[first[0]].size <= 3 else
                 f"has {array[first]} in column {', '.join(map(str, first[1:]))}")
        raise ValueError(f"{name} must be finite, but {row} {first[0]} {found}")
    return array


def _real(name: str, value, allow_none: bool, meaning: str, strict: bool) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and (value > 0 if strict else value >= 0)):
        raise ValueError(f"{name} must be a {meaning}, got {value!r}")
    return float(value)


def _integer(name: str, value, allow_none: bool, lowest: int, meaning: str) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lowest:
        raise ValueError(f"{name} must be {meaning}, got {value!r}")
    return int(value)

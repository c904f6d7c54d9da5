"""The shared checks of settings and input arrays: one wording everywhere, the bad value named."""

import numpy as np
import pytest

from mdmonitor.common.settings import (
    finite_array,
    non_negative_integer,
    non_negative_number,
    positive_integer,
    positive_number,
)


def test_zero_is_non_negative_but_not_positive():
    assert non_negative_number("friction", 0) == 0.0
    assert non_negative_integer("steps", 0) == 0
    with pytest.raises(ValueError, match="friction must be a positive number, got 0"):
        positive_number("friction", 0)
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        positive_integer("steps", 0)


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "1", True, None])
def test_non_numbers_and_negatives_are_refused(value):
    with pytest.raises(ValueError, match=f"noise must be a non-negative number, got {value!r}"):
        non_negative_number("noise", value)


def test_integers_of_numpy_are_integers_and_floats_are_not():
    assert positive_integer("max_boxes", np.int64(3)) == 3
    assert non_negative_integer("seed", None, allow_none=True) is None
    with pytest.raises(ValueError, match=r"seed must be a non-negative integer, got 2.0"):
        non_negative_integer("seed", 2.0)


def test_finite_array_names_the_first_bad_row_or_entry():
    with pytest.raises(ValueError, match=r"positions must be finite, but atom 1 has \[ 0. nan"):
        finite_array("positions", [[0.0, 0.0, 0.0], [0.0, np.nan, 1.0]])
    wide = np.zeros((3, 8))
    wide[2, 6] = -np.inf
    with pytest.raises(ValueError, match=r"H must be finite, but row 2 has -inf in column 6"):
        finite_array("H", wide, row="row")
    np.testing.assert_array_equal(finite_array("x", [1, 2]), [1.0, 2.0])

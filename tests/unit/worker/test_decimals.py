"""worker/core/decimals.py: the vectorised rounding gives Python's correctly rounded round() exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.decimals import rounded


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=50), st.integers(0, 8))
def test_rounded_equals_pythons_round_for_any_finite_float(values, decimals):
    got = rounded(np.array(values, dtype=np.float64), decimals)
    want = [round(x, decimals) for x in values]
    assert [repr(x) for x in got] == [repr(x) for x in want]  # repr: -0.0 and 0.0 differ too


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=50), st.integers(1, 6))
def test_values_at_or_next_to_a_half_take_pythons_round(steps, decimals):
    """k + 1/2 units of the last decimal, and the floats either side of it: where rint and round disagree."""
    halves = np.array([(k + 0.5) / 10**decimals for k in steps])
    for values in (halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf)):
        got = rounded(values, decimals)
        assert [repr(x) for x in got] == [repr(round(float(x), decimals)) for x in values]


def test_a_matrix_is_rounded_row_after_row():
    m = np.array([[0.123456, -2.00005], [1e300, -0.0]])
    assert rounded(m, 4) == [0.1235, round(-2.00005, 4), 1e300, -0.0]

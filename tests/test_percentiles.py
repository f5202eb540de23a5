"""The weighted percentile behind the latency series and the latency table (cluster/io.py
`_weighted_percentiles`): numpy's weighted "inverted_cdf" percentile, written out for speed; it must
give numpy's numbers in every case, NaN and ties included, and refuse what numpy refuses."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from cluster_sim.cluster.io import _weighted_percentiles


def _numpy(values, weights, qs):
    return tuple(float(x) for x in np.percentile(values, qs, weights=weights, method="inverted_cdf"))


def test_the_smallest_value_whose_cumulative_weight_reaches_q_percent_by_hand():
    # sorted values 1, 2, 3 with weights 1, 2, 1: cumulative shares 0.25, 0.75, 1.0
    values, weights = np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 2.0])
    assert _weighted_percentiles(values, weights, (0, 25, 26, 50, 75, 76, 99, 100)) == (
        1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0)


def test_values_of_no_weight_at_the_bottom_are_never_a_percentile_and_a_nan_makes_every_one_nan():
    # weights 0, 0, 5: the 0th percentile is the first value with weight (3.0), as numpy's
    assert _weighted_percentiles(np.array([1.0, 2.0, 3.0]), np.array([0.0, 0.0, 5.0]), (0, 50)) == (3.0, 3.0)
    got = _weighted_percentiles(np.array([1.0, float("nan"), 2.0]), np.array([1.0, 1.0, 1.0]), (50, 99))
    assert all(math.isnan(x) for x in got) and len(got) == 2


def test_numpys_numbers_on_random_values_with_ties_and_integer_or_fractional_weights():
    rng = np.random.default_rng(20)
    for case in range(400):
        n = int(rng.integers(1, 4000)) if case % 4 else int(rng.integers(1, 8))
        values = rng.lognormal(0.0, 0.4, n)
        if case % 3 == 0:
            values = np.round(values, 1)  # many ties
        weights = rng.integers(0, 30, n).astype(float) if case % 2 else rng.uniform(0.0, 5.0, n)
        if weights.sum() == 0:
            weights[-1] = 1.0
        if case % 5 == 0:
            weights[: n // 2] = 0.0  # a run of no weight at the bottom
        for qs in ((50, 99), (0, 100), (1, 25, 75), (99.9,)):
            assert _weighted_percentiles(values, weights, qs) == _numpy(values, weights, qs), (case, qs)


@pytest.mark.parametrize(("values", "weights", "qs"), [
    (np.array([1.0, 2.0]), np.array([1.0, -1.0]), (50,)),  # a negative weight
    (np.array([1.0, 2.0]), np.array([0.0, 0.0]), (50,)),  # all zero
    (np.array([1.0, 2.0]), np.array([1.0, float("nan")]), (50,)),  # NaN
    (np.array([]), np.array([]), (50,)),  # nothing
    (np.array([1.0, 2.0]), np.array([1.0, 1.0]), (50, 101)),  # a q above 100 (a policy may ask any)
    (np.array([1.0, 2.0]), np.array([1.0, 1.0]), (-1,)),  # below 0
    (np.array([1.0, 2.0]), np.array([1.0, 1.0]), (float("nan"),)),
])
@pytest.mark.filterwarnings("ignore:invalid value encountered in divide:RuntimeWarning")  # (numpy's, all zero)
def test_what_numpy_refuses_is_refused_the_same_way(values, weights, qs):
    with pytest.raises(Exception) as want:  # noqa: PT011 - whatever numpy raises
        _numpy(values, weights, qs)
    with pytest.raises(want.type, match=re.escape(str(want.value)[:20])):
        _weighted_percentiles(values, weights, qs)

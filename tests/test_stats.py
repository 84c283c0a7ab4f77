"""Summary statistics: the definitions bench, verify, tune and the ladder share."""

from __future__ import annotations

import math

import pytest

from sdagent.measuring import stats
from sdagent.errors import BadInput


def test_median_min_max_mean_stdev():
    s = stats.summarize([3.0, 1.0, 2.0, 10.0])
    assert s.n == 4
    assert s.median == 2.5
    assert (s.min, s.max) == (1.0, 10.0)
    assert s.mean == 4.0
    assert s.stdev == pytest.approx(4.0824829, rel=1e-6)


def test_single_run_has_no_spread_or_stdev():
    s = stats.summarize([5.0])
    assert s.median == 5.0 and s.stdev is None and s.spread is None and s.p90 is None


def test_spread_is_range_over_median():
    assert stats.relative_spread([9.0, 10.0, 11.0]) == pytest.approx(0.2)
    assert stats.summarize([4.0, 4.0, 4.0]).spread == 0.0
    # one disturbed run is enough to widen it
    assert stats.relative_spread([10.0, 10.0, 10.0, 15.0]) == pytest.approx(0.5)


def test_percentiles_only_with_enough_runs():
    nine = [float(i) for i in range(1, 10)]
    assert stats.percentile(nine, 0.90) is None
    ten = [float(i) for i in range(1, 11)]
    assert stats.percentile(ten, 0.90) == 9.0  # nearest rank: the 9th of 10
    s = stats.summarize(ten)
    assert s.p90 == 9.0 and s.p99 is None
    hundred = [float(i) for i in range(1, 101)]
    assert stats.summarize(hundred).p99 == 99.0
    assert stats.min_runs_for(0.9) == 10 and stats.min_runs_for(0.99) == 100


def test_nearest_rank_is_an_observed_value_and_max_below_enough_runs():
    xs = [1.0, 5.0, 2.0]
    assert stats.nearest_rank(xs, 0.9) == 5.0
    assert stats.nearest_rank(xs, 0.5) == 2.0
    assert stats.nearest_rank([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0


def test_iqr_reference_figure():
    assert stats.iqr([1.0, 2.0, 3.0]) is None
    assert stats.iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0)


def test_images_per_second():
    assert stats.images_per_second(2.0) == 0.5
    assert stats.images_per_second(2.0, batch=4) == 2.0
    with pytest.raises(BadInput):
        stats.images_per_second(0.0)


@pytest.mark.parametrize("bad", [[], [float("nan")], [1.0, -1.0], [math.inf]])
def test_bad_timings_are_rejected(bad):
    with pytest.raises(BadInput):
        stats.summarize(bad)


def test_median_bounds_are_order_statistics_that_narrow_with_more_runs():
    assert stats.median_bounds([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)  # 5 runs: min and max at 95%
    assert stats.median_bounds([1.0, 2.0, 3.0, 4.0]) == (None, None)  # 4 cannot bound it at 95%
    xs = [float(i) for i in range(1, 21)]
    lo, hi = stats.median_bounds(xs)
    assert (lo, hi) == (6.0, 15.0)  # P(Binomial(20, 1/2) <= 14) >= 0.95 > P(<= 13)
    assert stats.min_runs_for_bounds(0.95) == 5 and stats.min_runs_for_bounds(0.8) == 3


def test_to_dict_states_the_definitions():
    d = stats.summarize([1.0, 2.0]).to_dict()
    assert d["spread_definition"] == "(max-min)/median"
    assert d["median"] == 1.5 and d["p90"] is None

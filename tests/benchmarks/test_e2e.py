"""``bench e2e``'s arithmetic: the bar→orders quantile from the appliance's histogram, the
warm-up cut, and the universe with exactly N traded symbols (the run itself is a benchmark:
it takes minutes and is never part of the suite)."""

from __future__ import annotations

import pytest

from benchmarks.e2e import histogram_quantile, since
from benchmarks._e2e_setup import pick_universe

INF = float("inf")


def test_the_quantile_is_interpolated_within_its_bucket_as_prometheus_does():
    buckets = [(1.0, 50.0), (2.0, 90.0), (5.0, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.7, buckets) == pytest.approx(1.5)
    assert histogram_quantile(0.99, buckets) == pytest.approx(2.0 + 3.0 * 0.9)
    assert histogram_quantile(0.99, [(1.0, 0.0), (INF, 0.0)]) is None
    assert histogram_quantile(0.99, [(1.0, 1.0), (INF, 10.0)]) == 1.0  # past the last bound


def test_the_warm_up_cut_keeps_only_later_observations():
    before = [(1.0, 10.0), (2.0, 12.0), (INF, 20.0)]
    now = [(1.0, 110.0), (2.0, 112.0), (INF, 120.0)]
    assert since(now, before) == [(1.0, 100.0), (2.0, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.99, since(now, before)) < 1.0
    assert since(now, None) == []


def test_the_universe_is_the_smallest_with_n_above_the_bar_and_the_bar_cuts_at_n():
    m = 1e6
    listed = [(0, "A", 50 * m), (1, "B", 5 * m), (2, "C", 30 * m), (3, "D", 20 * m),
              (30, "E", 40 * m), (31, "F", 1 * m)]
    u = pick_universe(2, listed)
    assert u.pairs == 24 and u.symbols == ["A", "C"]  # 24 pairs at least: the quick start's
    assert 20 * m < u.min_turnover_usd < 30 * m  # D is above $10M but not traded
    u = pick_universe(4, listed)
    assert u.pairs == 31 and u.symbols == ["A", "E", "C", "D"]
    assert u.min_turnover_usd == 10 * m
    with pytest.raises(ValueError, match=r"--symbols must be in \[1, 4\]"):
        pick_universe(5, listed)


@pytest.mark.parametrize("minutes", [-5, 0, 14, 1441])
def test_a_run_length_outside_its_range_is_refused_before_anything_starts(minutes):
    from appliance.config import ConfigError
    from benchmarks.e2e import run

    with pytest.raises(ConfigError, match=r"--minutes must be in \[15, 1440\]"):
        run(symbols=24, minutes=minutes)

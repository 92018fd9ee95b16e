"""Metrics against small hand-computed examples and independent references (scipy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from models.backtest import backtest
from models.features import CLOSE
from models.metrics import (annualised_return, calmar_ratio, deflated_sharpe_ratio,
                            equity_curve, expected_max_sharpe, hit_rate, max_drawdown,
                            periods_per_year, probabilistic_sharpe_ratio, psr_from_moments,
                            sharpe_ratio, sortino_ratio, summarize, trade_count, turnover)

from .real import load_freqtrade

R = np.array([0.01, 0.02, -0.01, 0.03])  # mean 0.0125, squared deviations sum to 8.75e-4


def test_periods_per_year_from_the_bar_interval():
    assert periods_per_year(60_000) == 525_600
    assert periods_per_year(300_000) == 105_120
    assert periods_per_year(3_600_000) == 8_760
    with pytest.raises(ValueError):
        periods_per_year(0)


def test_sharpe_of_a_known_series():
    assert sharpe_ratio(R) == pytest.approx(0.0125 / math.sqrt(8.75e-4 / 3), rel=1e-12)
    assert sharpe_ratio(R, periods=4) == pytest.approx(2 * 0.0125 / math.sqrt(8.75e-4 / 3))
    assert sharpe_ratio(np.zeros(10), 525_600) == 0.0
    assert sharpe_ratio(np.array([0.01]), 525_600) == 0.0


def test_sortino_of_a_known_series():
    # downside deviation: sqrt((0 + 0 + 0.01^2 + 0) / 4) = 0.005
    assert sortino_ratio(R) == pytest.approx(0.0125 / 0.005)
    assert sortino_ratio(R, periods=4) == pytest.approx(5.0)
    assert sortino_ratio(np.array([0.01, 0.02])) == math.inf


def test_max_drawdown_of_a_known_equity_curve():
    assert max_drawdown(np.array([1.0, 1.2, 0.9, 1.1, 0.6, 1.3])) == pytest.approx(0.5)
    assert max_drawdown(np.array([1.0, 1.1, 1.2])) == 0.0
    assert np.allclose(equity_curve(np.array([0.1, -0.5, 1.0])), [1.1, 0.55, 1.1])


def test_calmar_and_annualised_return():
    r = np.array([0.1, -0.5, 1.0])  # equity 1.1, 0.55, 1.1: drawdown 0.5
    assert annualised_return(r, periods=3) == pytest.approx(0.1)
    assert annualised_return(r, periods=6) == pytest.approx(1.1 ** 2 - 1)
    assert calmar_ratio(r, periods=3) == pytest.approx(0.2)
    assert calmar_ratio(np.array([-0.1, 0.2]), periods=2) == pytest.approx(0.08 / 0.1)


def test_turnover_and_trade_count():
    position = np.array([0, 1, 1, 0.5, -1, -1, 0, 0, 1])
    assert turnover(position) == pytest.approx(1 + 0.5 + 1.5 + 1 + 1)
    assert trade_count(position) == 3  # open at 1, flip at 4, open at 8
    assert trade_count(np.zeros(5)) == 0
    assert trade_count(np.array([-0.5, -1.0, 0.2])) == 2


def test_hit_rate_counts_bars_held_in_the_market():
    net = np.array([0.0, 0.01, -0.02, 0.03, 0.0, 0.05])
    position = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    assert hit_rate(net, position) == 0.5  # bars 1, 2, 4, 5 held: wins at 1 and 5
    assert math.isnan(hit_rate(net, np.zeros(6)))


def test_psr_is_one_half_at_the_benchmark_and_rises_with_sharpe():
    assert psr_from_moments(0.05, 0.05, 500, -0.3, 6.0) == pytest.approx(0.5)
    grid = [psr_from_moments(sr, 0.02, 1000, -0.5, 5.0) for sr in np.linspace(-0.2, 0.2, 41)]
    assert all(a < b for a, b in zip(grid, grid[1:]))
    z = 0.1 * math.sqrt(100) / math.sqrt(1 + 0.5 * 0.01)  # normal returns: skew 0, kurtosis 3
    assert psr_from_moments(0.1, 0.0, 101, 0.0, 3.0) == pytest.approx(stats.norm.cdf(z))


def test_psr_of_a_return_series_against_scipy_moments():
    rng = np.random.default_rng(3)
    r = rng.standard_t(4, 2000) * 0.01 + 0.0008
    sr = r.mean() / r.std(ddof=1)
    skew, kurt = stats.skew(r), stats.kurtosis(r, fisher=False)
    z = sr * math.sqrt(len(r) - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr ** 2)
    assert probabilistic_sharpe_ratio(r) == pytest.approx(stats.norm.cdf(z), rel=1e-9)
    periods = periods_per_year(60_000)
    annual = sharpe_ratio(r, periods)
    assert probabilistic_sharpe_ratio(r, annual, periods) == pytest.approx(0.5)
    assert (probabilistic_sharpe_ratio(r, annual - 1.0, periods)
            > probabilistic_sharpe_ratio(r, annual, periods)
            > probabilistic_sharpe_ratio(r, annual + 1.0, periods))
    assert math.isnan(probabilistic_sharpe_ratio(np.zeros(10)))


def fat_tailed_edge(seed=3, n=2000):
    rng = np.random.default_rng(seed)
    return rng.standard_t(4, n) * 0.01 + 0.0008


def test_dsr_of_a_single_trial_is_the_psr_against_zero():
    r = fat_tailed_edge()
    for periods in (1.0, 8760.0):
        assert deflated_sharpe_ratio(r, 1, periods) == pytest.approx(
            probabilistic_sharpe_ratio(r, 0.0, periods), rel=1e-12)
    assert math.isnan(deflated_sharpe_ratio(np.zeros(10), 5))  # no evidence stays no evidence
    with pytest.raises(ValueError):
        deflated_sharpe_ratio(r, 0)


def test_dsr_falls_as_the_number_of_trials_grows():
    r = fat_tailed_edge()
    dsr = [deflated_sharpe_ratio(r, n, 8760.0) for n in (1, 2, 5, 10, 100, 1000)]
    assert all(a > b for a, b in zip(dsr, dsr[1:]))
    assert dsr[0] > 0.95 > dsr[-1]  # passes alone, fails as the best of a thousand tries


def test_dsr_against_a_hand_computation():
    r = fat_tailed_edge()
    t = len(r)
    sr = r.mean() / r.std(ddof=1)
    skew, kurt = stats.skew(r), stats.kurtosis(r, fisher=False)
    spread = 1 - skew * sr + (kurt - 1) / 4 * sr ** 2
    gamma = 0.5772156649015329
    z_max = (1 - gamma) * stats.norm.ppf(1 - 1 / 10) + gamma * stats.norm.ppf(1 - 1 / (10 * math.e))
    assert z_max == pytest.approx(1.574598, abs=1e-6)
    assert expected_max_sharpe(10, 4.0) == pytest.approx(2 * z_max, rel=1e-12)
    benchmark = math.sqrt(spread / (t - 1)) * z_max  # V: the Sharpe estimator's own variance
    want = stats.norm.cdf((sr - benchmark) * math.sqrt(t - 1) / math.sqrt(spread))
    assert deflated_sharpe_ratio(r, 10, 8760.0) == pytest.approx(want, rel=1e-9)
    # V given as the variance of the trials' annualised Sharpe ratios
    benchmark = math.sqrt(0.25 / 8760.0) * z_max
    want = stats.norm.cdf((sr - benchmark) * math.sqrt(t - 1) / math.sqrt(spread))
    assert deflated_sharpe_ratio(r, 10, 8760.0, sharpe_variance=0.25) == pytest.approx(
        want, rel=1e-9)


@pytest.mark.parametrize("n", [10, 100, 1000])
def test_expected_max_sharpe_matches_the_mean_maximum_of_normal_draws(n):
    draws = np.random.default_rng(n).standard_normal((4000, n)).max(axis=1)
    assert expected_max_sharpe(n, 1.0) == pytest.approx(draws.mean(), rel=0.03)
    assert expected_max_sharpe(1, 1.0) == 0.0


def test_summary_of_a_real_backtest():
    close = load_freqtrade("ETH_BTC-5m.json")[:, CLOSE]
    position = np.where(np.arange(len(close)) // 288 % 2 == 0, 1.0, -1.0)
    result = backtest(close, position)
    summary = summarize(result.net, position, interval_ms=300_000)
    assert summary["bars"] == len(close)
    assert summary["total_return"] == pytest.approx(result.equity[-1] - 1.0)
    assert summary["trades"] == math.ceil(len(close) / 288)  # one open, then a flip a day
    assert summary["max_drawdown"] == pytest.approx(
        max_drawdown(np.concatenate([[1.0], result.equity])))
    assert 0.0 <= summary["psr"] <= 1.0 and 0.0 <= summary["hit_rate"] <= 1.0
    assert summary["sharpe"] == pytest.approx(sharpe_ratio(result.net, 105_120))

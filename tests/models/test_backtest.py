"""The vectorised backtester against an obviously correct loop, costs, and timing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.backtest import (DEFAULT_SLIPPAGE, DEFAULT_TAKER_FEE, BacktestResult, backtest,
                             bench_backtest, slow_reference_backtest)
from models.features import CLOSE, compute_features

from .real import load_freqtrade

FIELDS = ("gross", "costs", "net", "equity")


def assert_same(a: BacktestResult, b: BacktestResult) -> None:
    for f in FIELDS:
        assert getattr(a, f).shape == getattr(b, f).shape
        assert np.allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=1e-12), f


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), symbols=st.integers(0, 4),
       fee=st.floats(0.0, 0.002), slip=st.floats(0.0, 0.002))
def test_matches_slow_reference_on_random_data(seed, n, symbols, fee, slip):
    rng = np.random.default_rng(seed)
    shape = (n,) if symbols == 0 else (n, symbols)
    close = 20.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, shape), axis=0))
    position = np.where(rng.random(shape) < 0.3, 0.0, rng.uniform(-1.0, 1.0, shape))
    assert_same(backtest(close, position, taker_fee=fee, slippage=slip),
                slow_reference_backtest(close, position, taker_fee=fee, slippage=slip))


def test_matches_slow_reference_on_real_candles_and_fortran_layout():
    names = ["ETH_BTC-5m.json", "LTC_BTC-5m.json", "XLM_BTC-5m.json"]
    datasets = [load_freqtrade(n) for n in names]
    n = min(len(b) for b in datasets)
    close = np.stack([b[:n, CLOSE] for b in datasets]).T  # Fortran order: symbols contiguous
    momentum = np.stack([np.nan_to_num(compute_features(b[:n])[:, 2]) for b in datasets]).T
    position = np.sign(momentum) * np.minimum(np.abs(momentum) * 50.0, 1.0)
    assert not close.flags.c_contiguous
    result = backtest(close, position)
    assert_same(result, slow_reference_backtest(close, position))
    assert_same(result, backtest(np.ascontiguousarray(close), np.ascontiguousarray(position)))
    for j in range(len(names)):
        assert_same(BacktestResult(*(getattr(result, f)[:, j] for f in FIELDS)),
                    backtest(close[:, j], position[:, j]))


def test_position_decided_at_t_earns_the_next_bar_only():
    close = np.array([100.0, 100.0, 110.0, 110.0])
    before_jump = backtest(close, np.array([0.0, 1.0, 0.0, 0.0]), taker_fee=0.0, slippage=0.0)
    at_jump = backtest(close, np.array([0.0, 0.0, 1.0, 0.0]), taker_fee=0.0, slippage=0.0)
    assert before_jump.gross.tolist() == pytest.approx([0.0, 0.0, 0.1, 0.0])
    assert before_jump.equity[-1] == pytest.approx(1.1)
    assert at_jump.gross.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert at_jump.equity[-1] == 1.0


def test_costs_are_charged_on_every_position_change():
    close = np.full(8, 50.0)
    position = np.array([0.5, 0.5, -1.0, -1.0, 0.0, 1.0, 0.25, 0.25])
    rate = DEFAULT_TAKER_FEE + DEFAULT_SLIPPAGE
    result = backtest(close, position)
    expected = np.array([0.5, 0.0, 1.5, 0.0, 1.0, 1.0, 0.75, 0.0]) * rate
    assert np.allclose(result.costs, expected, rtol=0, atol=1e-15)
    assert np.all(result.gross == 0.0)
    assert np.allclose(result.net, -expected, rtol=0, atol=1e-15)
    assert result.equity[-1] == pytest.approx(np.prod(1.0 - expected), rel=1e-15)


def test_flat_position_earns_and_pays_nothing():
    close = load_freqtrade("ETH_BTC-5m.json")[:, CLOSE]
    result = backtest(close, np.zeros_like(close))
    assert np.all(result.net == 0.0)
    assert np.all(result.costs == 0.0)
    assert np.all(result.equity == 1.0)


def test_always_long_follows_the_price_less_one_entry():
    close = load_freqtrade("ETH_BTC-5m.json")[:, CLOSE]
    result = backtest(close, np.ones_like(close), taker_fee=0.001, slippage=0.0)
    assert result.equity[-1] == pytest.approx(close[-1] / close[0] * (1 - 0.001), rel=1e-9)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        backtest(np.ones(5), np.ones(4))
    with pytest.raises(ValueError):
        backtest(np.ones((2, 2, 2)), np.ones((2, 2, 2)))


def test_bench_reports_a_rate_for_the_candles_it_ran():
    figures = bench_backtest(n=20_000, symbols=4, repeats=2)
    assert figures["candles"] == 20_000
    assert figures["candles_per_s"] == pytest.approx(20_000 / figures["best_s"])
    assert figures["candles_per_s"] >= figures["candles_per_s_median"] > 0

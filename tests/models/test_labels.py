"""Labels: forward returns through a fee-aware dead band; the last h bars stay unlabelled."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import CLOSE
from models.labels import (FLAT, LONG, SHORT, UNLABELLED, dead_band, forward_returns,
                           label_classes)

from .real import load_freqtrade


def test_dead_band_is_two_fees_two_slippages_and_the_margin():
    assert dead_band(0.00055, 0.0002, 0.0001) == pytest.approx(2 * 0.00055 + 2 * 0.0002 + 0.0001)


def test_hand_made_series():
    close = np.array([100.0, 101.0, 100.0, 100.1, 99.0, 99.0])
    fwd = forward_returns(close, 1)
    assert np.allclose(fwd[:-1], [0.01, -1 / 101, 0.001, -1.1 / 100.1, 0.0])
    assert np.isnan(fwd[-1])
    labels = label_classes(close, 1, taker_fee=0.00055, slippage=0.0002)  # band 0.0015
    assert labels.tolist() == [LONG, SHORT, FLAT, SHORT, FLAT, UNLABELLED]
    assert labels.dtype == np.int8


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), horizon=st.integers(1, 40),
       margin=st.floats(0.0, 0.01))
def test_dead_band_respected_and_last_h_unlabelled(seed, n, horizon, margin):
    rng = np.random.default_rng(seed)
    close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    labels = label_classes(close, horizon, margin=margin)
    fwd = forward_returns(close, horizon)
    band = dead_band(margin=margin)
    tail = min(horizon, n)
    assert np.all(labels[n - tail:] == UNLABELLED)
    assert np.all(np.isnan(fwd[n - tail:]))
    head = slice(0, n - tail)
    assert np.all(fwd[head] == close[horizon:] / close[:n - tail] - 1.0)
    assert np.all((labels[head] == LONG) == (fwd[head] > band))
    assert np.all((labels[head] == SHORT) == (fwd[head] < -band))
    assert np.all((labels[head] == FLAT) == (np.abs(fwd[head]) <= band))


def test_real_candles_use_every_class_and_several_symbols_at_once():
    close = load_freqtrade("ETH_BTC-5m.json")[:, CLOSE]
    labels = label_classes(close, 12)
    assert set(np.unique(labels)) == {UNLABELLED, SHORT, FLAT, LONG}
    assert np.count_nonzero(labels == UNLABELLED) == 12
    both = label_classes(np.stack([close, close[::-1]], axis=1), 12)
    assert np.array_equal(both[:, 0], labels)
    assert np.array_equal(both[:, 1], label_classes(close[::-1], 12))


def test_horizon_must_be_positive():
    with pytest.raises(ValueError):
        forward_returns(np.ones(5), 0)

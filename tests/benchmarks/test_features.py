"""``bench features`` times the engine beside the textbook numpy peer: the peer must compute
the same fifteen features (else the ratio compares different work), and the figures must say
which rate is which."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks._features_peer import peer
from benchmarks.features import PARITY_BOUND, batch_rate, candles
from models.features import FEATURE_NAMES, compute_features
from tests.models.real import load_freqtrade

CANCELLING = ("bb_pctb_20", "volume_z_48")
"""Variances from differences of running sums of large values: where the textbook strays."""


@pytest.mark.parametrize("name", ["UNITTEST_BTC-1m.json", "futures/XRP_USDT_USDT-5m-futures.json"])
def test_the_peer_computes_fs1_on_real_candles(name):
    bars = load_freqtrade(name)
    want = compute_features(bars)
    got = peer(bars[:, None, :])[:, 0]
    assert got.shape == want.shape == (len(bars), len(FEATURE_NAMES))
    assert np.array_equal(np.isnan(got), np.isnan(want))
    diff = np.nanmax(np.abs(got - want), axis=0)
    for feature, d in zip(FEATURE_NAMES, diff):
        assert d <= (1e-4 if feature in CANCELLING else 1e-12), feature


def test_the_textbook_running_sums_stray_past_the_engines_bound():
    bars = load_freqtrade("UNITTEST_BTC-1m.json")
    got = peer(bars[:, None, :])[:, 0]
    bb = FEATURE_NAMES.index("bb_pctb_20")
    assert np.nanmax(np.abs(got[:, bb] - compute_features(bars)[:, bb])) > PARITY_BOUND


def test_the_batch_figures_give_both_rates_and_their_ratio():
    figures = batch_rate(candles(3_000, 2), repeats=2)
    assert figures["features_rows"] == 6_000
    engine, textbook = figures["features_rows_per_s"], figures["features_numpy_peer_rows_per_s"]
    assert engine > 0 and textbook > 0
    assert figures["features_over_numpy_peer"] == pytest.approx(engine / textbook, rel=0.01,
                                                                abs=0.01)
    assert 0.0 < figures["features_numpy_peer_max_abs_diff"] < 1e-3

"""The feature catalogue (fs2): fs1's columns plus ten classic indicators, the same live/offline
parity bound as fs1, and no look-ahead in either set."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import (FS1, FS2, INDICATOR_GROUPS, WARMUP_BARS, FeatureBook, compute,
                             feature_set)

from .real import load_freqtrade
from .test_feature_parity import BOUND, REAL, sim_history

NEW = ("stoch_k_14", "adx_14", "obv_slope_24", "donchian_pos_48", "skew_48", "kurt_48",
       "autocorr_48", "vwret_24", "hl_range_24", "close_loc")


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(want))
    diff = np.abs(np.nan_to_num(got) - np.nan_to_num(want))
    assert diff.max(initial=0.0) <= BOUND, dict(zip(FS2.names, diff.max(axis=0)))


def test_the_catalogue_is_fs1_and_ten_more_and_fs1_stays_the_default():
    assert FS2.names[:len(FS1.names)] == FS1.names
    assert FS2.names[len(FS1.names):] == NEW
    assert feature_set("fs1") is FS1 and feature_set("fs2") is FS2
    assert FeatureBook().feature_set is FS1
    assert sum(len(v) for v in INDICATOR_GROUPS.values()) == len(FS2.names)
    with pytest.raises(ValueError, match="unknown feature set"):
        feature_set("fs9")
    bars = sim_history(["BTCUSDT"], 800)["BTCUSDT"]
    assert np.array_equal(compute(FS2, bars)[:, :len(FS1.names)], compute(FS1, bars),
                          equal_nan=True)


@pytest.mark.parametrize("split", [0, WARMUP_BARS + 1, 700])
def test_live_book_equals_batch_for_real_candles(split):
    data = {name: load_freqtrade(name) for name in REAL}
    book = FeatureBook(feature_set=FS2)
    for s, bars in data.items():
        last = book.prefill(s, bars[:split])
        if split:
            assert_close(last[None], compute(FS2, bars[:split])[-1:])
    wants = {s: compute(FS2, bars) for s, bars in data.items()}
    compared = 0
    for t in range(split, split + 600):
        due = [s for s in data if t < len(data[s])]
        feats, warm = book.push(due, np.stack([data[s][t] for s in due]))
        for s, f, ok in zip(due, feats, warm):
            assert ok == (t >= WARMUP_BARS)
            assert_close(f[None], wants[s][t][None])
            compared += ok
    assert compared > 1_000


def test_live_book_equals_batch_for_sim_symbols_joining_midway():
    data = sim_history(["BTCUSDT", "ETHUSDT", "SOLUSDT"], 900, seed=3)
    book = FeatureBook(feature_set=FS2)
    book.prefill("BTCUSDT", data["BTCUSDT"][:300])
    first = {"BTCUSDT": 0, "ETHUSDT": 300, "SOLUSDT": 500}
    wants = {s: compute(FS2, data[s][first[s]:]) for s in data}
    for t in range(300, 900):
        due = [s for s in data if t >= first[s]][::-1]
        feats, _ = book.push(due, np.stack([data[s][t] for s in due]))
        for s, f in zip(due, feats):
            assert_close(f[None], wants[s][t - first[s]][None])
    assert np.isfinite(wants["SOLUSDT"][WARMUP_BARS:]).all()


@pytest.mark.parametrize("fs", [FS1, FS2], ids=lambda fs: fs.id)
def test_changing_a_future_bar_never_changes_a_past_feature(fs):
    bars = load_freqtrade(REAL[0])[:3_000]
    base = compute(fs, bars)
    rng = np.random.default_rng(1)
    for t in rng.choice(np.arange(WARMUP_BARS + 60, len(bars)), size=6, replace=False):
        changed = bars.copy()
        changed[t:, 1:5] *= 1.0 + rng.uniform(-0.05, 0.05, size=(len(bars) - t, 1))
        changed[t:, 5:] *= rng.uniform(0.2, 5.0, size=(len(bars) - t, 1))
        got = compute(fs, changed)
        assert np.array_equal(got[:t], base[:t], equal_nan=True), f"bar {t} leaked backwards"
        moved = np.abs(got[t] - base[t]) > 0
        assert moved.sum() >= len(fs.names) // 2  # the change itself is seen at its bar
    if fs is FS2:  # and every new indicator reacts to bars within its window
        changed = bars.copy()
        changed[2_000:, 1:5] *= np.linspace(1.0, 1.3, len(bars) - 2_000)[:, None]
        changed[2_000:, 2] *= 1.01
        changed[2_000:, 5] *= 3.0
        diff = np.abs(compute(fs, changed)[2_010] - base[2_010])
        assert all(diff[FS2.names.index(n)] > 0 for n in NEW), dict(zip(FS2.names, diff))


def test_indicator_values_on_hand_built_bars():
    n = 200
    close = 100.0 * np.exp(0.001 * np.arange(n))  # a steady rise, every bar up
    bars = np.column_stack([np.arange(n) * 300_000.0, close / 1.0005, close * 1.0005,
                            close / 1.001, close, np.full(n, 10.0), close * 10.0])
    row = dict(zip(FS2.names, compute(FS2, bars)[-1]))
    assert row["obv_slope_24"] == pytest.approx(1.0)  # every bar's volume on the up side
    assert row["vwret_24"] == pytest.approx(0.001)
    assert row["hl_range_24"] == pytest.approx(np.log(1.0005 * 1.001))
    assert row["close_loc"] == pytest.approx(0.001 / (0.0005 + 0.001), rel=1e-3)
    lowest = close[-14] / 1.001  # the window's lowest low and highest high
    assert row["stoch_k_14"] == pytest.approx((close[-1] - lowest) / (close[-1] * 1.0005
                                                                      - lowest))
    assert 0.99 < row["adx_14"] <= 1.0  # only upward directional movement
    assert row["skew_48"] == 0.0 and row["kurt_48"] == 0.0 and row["autocorr_48"] == 0.0

"""The fast batch path equals a slow, obviously-correct reference of every fs1 feature.

The reference follows each feature's definition row by row (sliding windows with a two-pass
mean and deviation, the smoothers as plain loops, the calendar from ``datetime``), in long
double (64-bit mantissa on x86) so that its own rounding is far below what is being checked.

Bound: |fast - reference| <= 1e-12 absolute, for every feature and row. Every fs1 feature is a
dimensionless number of order one or smaller (log returns, ratios to the close, z-scores, RSI/100,
unit-circle coordinates), so 1e-12 is about 1e4 units in the last place at the scale of one:
loose enough for float64 summation order (the fast path sums windows in blocks, the reference
per window), tight enough that any slip in a window's alignment, a lost term or a stale smoother
shows up by orders of magnitude. The same rows must also be NaN in both.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from models.features import (ATR_PERIOD, BB_WIDTH, BB_WINDOW, FEATURE_NAMES, MACD_FAST,
                             MACD_SIGNAL, MACD_SLOW, RETURN_LAGS, RSI_PERIOD, VOL_WINDOWS,
                             VOLUME_Z_WINDOW, WARMUP_BARS, compute_features)

from models.features.batch import chunks

from .real import load_freqtrade

BOUND = 1e-12
FLAT_REL = 1e-10  # the documented flat-window rule: std <= 1e-10 * |mean| counts as no spread
LD = np.longdouble
REAL_FILES = ["ETH_BTC-5m.json", "ADA_BTC-5m.json", "XRP_ETH-1m.json", "UNITTEST_BTC-1m.json",
              "UNITTEST_BTC-30m.json", "ZEC_BTC-5m.json", "NXT_BTC-5m.json",
              "futures/XRP_USDT_USDT-5m-futures.json"]


def _windows(x: np.ndarray, w: int) -> np.ndarray:
    """(n, w): row t holds x[t-w+1 .. t]; NaN rows where the window reaches before row 0."""
    out = np.full((len(x), w), np.nan, dtype=LD)
    if len(x) >= w:
        out[w - 1:] = sliding_window_view(x, w)
    return out


def _window_std(x: np.ndarray, w: int, ddof: int) -> tuple[np.ndarray, np.ndarray]:
    win = _windows(x, w)
    mean = win.mean(axis=1)
    dev = win - mean[:, None]
    return mean, np.sqrt((dev * dev).sum(axis=1) / (w - ddof))


def _zscore(x: np.ndarray, w: int) -> np.ndarray:
    mean, std = _window_std(x, w, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (x - mean) / std
    z[std <= FLAT_REL * np.abs(mean)] = 0.0
    return z


def _smooth(x: list[float], alpha: float) -> list[float]:
    """y[0] = x[0]; y[t] = alpha x[t] + (1 - alpha) y[t-1]."""
    out, y = [], LD(x[0])
    for t, v in enumerate(x):
        y = LD(v) if t == 0 else LD(alpha) * LD(v) + (LD(1) - LD(alpha)) * y
        out.append(y)
    return out


def _calendar(open_time_ms: float) -> tuple[float, float, float, float]:
    when = datetime.fromtimestamp(open_time_ms / 1000.0, tz=UTC)
    day = (when.hour * 3600 + when.minute * 60 + when.second) / 86400.0
    week = when.weekday() / 7.0  # Monday = 0
    return (math.sin(2 * math.pi * day), math.cos(2 * math.pi * day),
            math.sin(2 * math.pi * week), math.cos(2 * math.pi * week))


def reference_features(bars: np.ndarray) -> np.ndarray:
    """fs1 by its definitions, one feature at a time; rows < WARMUP_BARS are NaN."""
    n = len(bars)
    high, low, close, volume = (bars[:, j].astype(LD) for j in (2, 3, 4, 5))
    cols: dict[str, np.ndarray] = {}
    for k in RETURN_LAGS:
        ret = np.full(n, np.nan, dtype=LD)
        ret[k:] = np.log(close[k:] / close[:-k])
        cols[f"ret_{k}"] = ret
    one_bar = np.full(n, np.nan, dtype=LD)
    one_bar[1:] = np.log(close[1:] / close[:-1])
    for w in VOL_WINDOWS:
        cols[f"vol_{w}"] = _window_std(one_bar, w, 1)[1]
    cols[f"bb_pctb_{BB_WINDOW}"] = 0.5 + _zscore(close, BB_WINDOW) / (2 * BB_WIDTH)
    cols[f"volume_z_{VOLUME_Z_WINDOW}"] = _zscore(volume, VOLUME_Z_WINDOW)
    calendar = np.array([_calendar(t) for t in bars[:, 0]], dtype=LD).reshape(n, 4)
    for j, name in enumerate(("tod_sin", "tod_cos", "dow_sin", "dow_cos")):
        cols[name] = calendar[:, j]
    gain, loss, true_range = [0.0], [0.0], [high[0] - low[0]]
    for t in range(1, n):
        change = close[t] - close[t - 1]
        gain.append(max(change, 0))
        loss.append(max(-change, 0))
        true_range.append(max(high[t] - low[t], abs(high[t] - close[t - 1]),
                              abs(low[t] - close[t - 1])))
    avg_gain = np.array(_smooth(gain, 1 / RSI_PERIOD), dtype=LD)
    avg_loss = np.array(_smooth(loss, 1 / RSI_PERIOD), dtype=LD)
    total = avg_gain + avg_loss
    cols[f"rsi_{RSI_PERIOD}"] = np.where(total > 0, avg_gain / np.where(total > 0, total, 1), 0.5)
    line = (np.array(_smooth(list(close), 2 / (MACD_FAST + 1)), dtype=LD)
            - np.array(_smooth(list(close), 2 / (MACD_SLOW + 1)), dtype=LD))
    signal = np.array(_smooth(list(line), 2 / (MACD_SIGNAL + 1)), dtype=LD)
    cols["macd_hist"] = (line - signal) / close
    cols[f"atr_{ATR_PERIOD}"] = np.array(_smooth(true_range, 1 / ATR_PERIOD), dtype=LD) / close
    out = np.stack([cols[name] for name in FEATURE_NAMES], axis=1).astype(np.float64)
    out[:WARMUP_BARS] = np.nan
    return out


def assert_within_bound(fast: np.ndarray, ref: np.ndarray) -> float:
    assert fast.shape == ref.shape
    assert np.array_equal(np.isnan(fast), np.isnan(ref))
    diff = np.abs(np.nan_to_num(fast) - np.nan_to_num(ref))
    worst = diff.max(axis=0, initial=0.0)
    bad = {name: float(worst[j]) for j, name in enumerate(FEATURE_NAMES) if worst[j] > BOUND}
    assert not bad, f"features beyond {BOUND}: {bad}"
    return float(worst.max(initial=0.0))


def sim_candles(symbol: str, days: int, seed: int = 7) -> np.ndarray:
    end = EPOCH_MS + 60 * DAY_MS
    return SimMarket(seed).candles(symbol, end - days * DAY_MS, end)


@pytest.mark.parametrize("name", REAL_FILES)
def test_fast_path_equals_reference_on_real_candles(name):
    bars = load_freqtrade(name)
    assert_within_bound(compute_features(bars), reference_features(bars))


@pytest.mark.parametrize("symbol", ["BTCUSDT", "SOLUSDT"])
def test_fast_path_equals_reference_on_sim_candles_across_chunks(symbol):
    bars = sim_candles(symbol, days=20)  # 28,800 one-minute bars
    assert len(chunks(len(bars))) >= 3
    assert_within_bound(compute_features(bars), reference_features(bars))


def test_fast_path_equals_reference_on_hard_windows():
    """Flat stretches (equal prices, zero volumes), a 1000x volume spike next to a quiet
    window, a price level far from zero with tiny moves, and a crash: the cases where
    running sums lose digits."""
    rng = np.random.default_rng(3)
    n = 2_000
    close = 0.0312 + 1e-6 * np.round(rng.normal(0, 3, n).cumsum())  # tick-sized moves
    close[600:700] = close[599]  # a flat hour
    close[1200:] *= 0.5  # a crash
    volume = rng.lognormal(0, 1, n)
    volume[300:400] = 0.0
    volume[800] = 1e3 * volume[:800].max()
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) + 1e-6
    low = np.minimum(open_, close) - 1e-6
    times = EPOCH_MS + 300_000.0 * np.arange(n)
    bars = np.column_stack([times, open_, high, low, close, volume, volume * close])
    fast = compute_features(bars)
    assert_within_bound(fast, reference_features(bars))
    j = FEATURE_NAMES.index
    assert np.all(fast[650:700, j(f"bb_pctb_{BB_WINDOW}")] == 0.5)  # flat: neutral band
    assert np.all(fast[348:400, j(f"volume_z_{VOLUME_Z_WINDOW}")] == 0.0)


def test_several_symbols_at_once_equal_the_reference():
    names = ["ETH_BTC-5m.json", "ADA_BTC-5m.json", "ZEC_BTC-5m.json"]
    datasets = [load_freqtrade(name) for name in names]
    n = min(len(b) for b in datasets)
    stacked = np.stack([b[:n] for b in datasets], axis=1)
    fast = compute_features(stacked)
    for s, bars in enumerate(datasets):
        assert_within_bound(fast[:, s], reference_features(bars[:n]))


def test_a_prefix_of_a_long_history_gives_the_same_rows_to_the_bit():
    """No look-ahead across the batch path's chunks: cutting the history anywhere (inside a
    chunk, on a boundary, one row past it) leaves every earlier row exactly as it was."""
    bars = sim_candles("ETHUSDT", days=20)
    whole = compute_features(bars)
    boundaries = [a for a, _, _ in chunks(len(bars))][1:]
    assert len(boundaries) >= 2
    for cut in (300, boundaries[0], boundaries[0] + 1, boundaries[1] - 1, boundaries[1] + 17,
                boundaries[0] + 4_321, len(bars) - 1):
        assert np.array_equal(compute_features(bars[:cut]), whole[:cut], equal_nan=True), cut

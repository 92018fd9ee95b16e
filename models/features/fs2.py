"""Feature set ``fs2``, the catalogue: fs1's fifteen columns (same order, same values) and ten
classic indicators more. The AutoML search picks subsets of it; fs1 stays the default.

stoch_k_14: Stochastic %K, (close - lowest low) / (highest high - lowest low) over 14 bars, in
[0, 1] (0.5 when the range is flat).
adx_14: Wilder's average directional index / 100, in [0, 1]: the 14-bar Wilder smoothing of
DX = |+DI - -DI| / (+DI + -DI), the DIs from Wilder-smoothed directional movement over the
true range (DX is 0 when neither side moved).
obv_slope_24: the on-balance-volume change over 24 bars over the volume traded in them:
sum(sign(ret_1) volume) / sum(volume), in [-1, 1] (0 without volume).
donchian_pos_48: where the close sits in the 48-bar Donchian channel, in [0, 1] (0.5 when flat).
skew_48, kurt_48: realised skewness and excess kurtosis of the last 48 one-bar log returns
(population moments; 0 when the window has no spread).
autocorr_48: lag-1 autocorrelation of the last 48 one-bar log returns (sum of products of
consecutive deviations over the sum of squared deviations; 0 when flat): a funding-free carry /
mean-reversion proxy.
vwret_24: volume-weighted mean one-bar log return over 24 bars (0 without volume).
hl_range_24: mean log(high / low) over 24 bars (Parkinson's range, unscaled).
close_loc: where the bar closed within its own range, (close - low) / (high - low), in [0, 1]
(0.5 for a bar without range).

Every indicator reads bars <= t only (lags, windows ending at t, smoothers); both engines
compute it (window statistics through ``Series.window``).
"""

from __future__ import annotations

import numpy as np

from . import fs1
from .spec import Bar, FeatureSet, Series, indicator

FEATURE_SET_ID = "fs2"
STOCH_PERIOD = 14
ADX_PERIOD = 14
OBV_WINDOW = 24
DONCHIAN_WINDOW = 48
MOMENT_WINDOW = 48
VWRET_WINDOW = 24
RANGE_WINDOW = 24
HISTORY = max(fs1.HISTORY, STOCH_PERIOD, DONCHIAN_WINDOW, MOMENT_WINDOW, OBV_WINDOW)


def bar_inputs(bar: Bar, prev: Bar) -> dict[str, np.ndarray]:
    out = fs1.bar_inputs(bar, prev)
    up = bar.high - prev.high
    down = prev.low - bar.low
    volume = bar.volume
    out.update({
        "high": bar.high, "low": bar.low,
        "plus_dm": np.where((up > down) & (up > 0.0), up, 0.0),
        "minus_dm": np.where((down > up) & (down > 0.0), down, 0.0),
        "signed_volume": np.sign(out["ret_1"]) * volume,
        "ret_volume": out["ret_1"] * volume,
        "hl_log": np.log(bar.high / bar.low),
    })
    return out


INPUT_NAMES = fs1.INPUT_NAMES + ("high", "low", "plus_dm", "minus_dm", "signed_volume",
                                 "ret_volume", "hl_log")


def _position(close: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(close - low) / (high - low), 0.5 where high == low."""
    span = high - low
    out = np.divide(close - low, span, out=np.full_like(close, 0.5), where=span > 0.0)
    return out


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0."""
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0.0)


@indicator(f"stoch_k_{STOCH_PERIOD}")
def stochastic(s: Series) -> list[np.ndarray]:
    high = s.window("high", STOCH_PERIOD).max(axis=1)
    low = s.window("low", STOCH_PERIOD).min(axis=1)
    return [_position(s("close"), low, high)]


@indicator(f"adx_{ADX_PERIOD}")
def adx(s: Series) -> list[np.ndarray]:
    alpha = 1.0 / ADX_PERIOD
    tr = s.ema("adx_tr", s("true_range"), alpha)
    plus = _ratio(s.ema("adx_plus", s("plus_dm"), alpha), tr)
    minus = _ratio(s.ema("adx_minus", s("minus_dm"), alpha), tr)
    dx = _ratio(np.abs(plus - minus), plus + minus)
    return [s.ema("adx", dx, alpha)]


@indicator(f"obv_slope_{OBV_WINDOW}")
def obv_slope(s: Series) -> list[np.ndarray]:
    return [_ratio(s.window("signed_volume", OBV_WINDOW).sum(axis=1),
                   s.window("volume", OBV_WINDOW).sum(axis=1))]


@indicator(f"donchian_pos_{DONCHIAN_WINDOW}")
def donchian(s: Series) -> list[np.ndarray]:
    high = s.window("high", DONCHIAN_WINDOW).max(axis=1)
    low = s.window("low", DONCHIAN_WINDOW).min(axis=1)
    return [_position(s("close"), low, high)]


@indicator(f"skew_{MOMENT_WINDOW}", f"kurt_{MOMENT_WINDOW}", f"autocorr_{MOMENT_WINDOW}")
def moments(s: Series) -> list[np.ndarray]:
    win = s.window("ret_1", MOMENT_WINDOW)
    dev = win - win.mean(axis=1, keepdims=True)
    sq = dev * dev
    m2 = sq.mean(axis=1)
    # Flat: no spread beyond rounding (returns are O(1e-3); rounding leaves ~1e-19 on m2).
    flat = ~(m2 > 1e-24)
    m2[flat] = 1.0
    # Sums of products row by row (einsum): no (rows, window) temporary for each moment.
    skew = np.einsum("ij,ij->i", sq, dev)
    skew /= MOMENT_WINDOW * m2 * np.sqrt(m2)
    kurt = np.einsum("ij,ij->i", sq, sq)
    kurt /= MOMENT_WINDOW * m2 * m2
    kurt -= 3.0
    auto = np.einsum("ij,ij->i", dev[:, 1:], dev[:, :-1])
    auto /= MOMENT_WINDOW * m2
    for a in (skew, kurt, auto):
        a[flat] = 0.0
    return [skew, kurt, auto]


@indicator(f"vwret_{VWRET_WINDOW}")
def vwret(s: Series) -> list[np.ndarray]:
    return [_ratio(s.window("ret_volume", VWRET_WINDOW).sum(axis=1),
                   s.window("volume", VWRET_WINDOW).sum(axis=1))]


@indicator(f"hl_range_{RANGE_WINDOW}")
def hl_range(s: Series) -> list[np.ndarray]:
    return [s.window("hl_log", RANGE_WINDOW).mean(axis=1)]


@indicator("close_loc")
def close_location(s: Series) -> list[np.ndarray]:
    return [_position(s("close"), s("low"), s("high"))]


NEW_INDICATORS = (stochastic, adx, obv_slope, donchian, moments, vwret, hl_range,
                  close_location)
FS2 = FeatureSet(FEATURE_SET_ID, bar_inputs, INPUT_NAMES, fs1.FS1.indicators + NEW_INDICATORS,
                 history=HISTORY, warmup=fs1.WARMUP_BARS)
FEATURE_NAMES: tuple[str, ...] = FS2.names
INDICATOR_GROUPS: dict[str, tuple[str, ...]] = {ind.names[0].split("_")[0] if len(ind.names) > 1
                                                else ind.names[0]: ind.names
                                                for ind in FS2.indicators}
"""The catalogue's indicators by name (an indicator with several columns under its first
column's stem: ``ret``, ``vol``, ``tod``, ``skew``), the units the search picks subsets of."""

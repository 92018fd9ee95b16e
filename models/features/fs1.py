"""Feature set ``fs1``: its per-bar inputs and its indicators (one definition for both engines).

ret_k: log(close[t] / close[t-k]). vol_w: sample std of the last w one-bar log returns.
bb_pctb_20: (close - lower band) / (upper - lower), bands = mean +- 2 population std of 20 closes.
volume_z_48: (volume - mean) / population std over the last 48 volumes (current one included).
tod/dow: UTC time of day and day of week (Monday = 0) of the bar's open time on the unit circle.
rsi_14: Wilder RSI / 100, in [0, 1]. macd_hist: (MACD line - signal) / close, EMAs 12/26/9.
atr_14: Wilder average true range / close.

The first bar of a history is its own predecessor: no change (RSI gain and loss 0) and a true
range of high - low. Smoothers are seeded with their input at the first bar; rows before
``WARMUP_BARS`` are not served, by when the slowest seed (the 26-bar EMA) weighs under
(25/27)**100 ~ 5e-4.
"""

from __future__ import annotations

import math

import numpy as np

from .spec import Bar, FeatureSet, Series, indicator

FEATURE_SET_ID = "fs1"

RETURN_LAGS = (1, 3, 12, 48)
VOL_WINDOWS = (12, 48)
BB_WINDOW, BB_WIDTH = 20, 2.0
VOLUME_Z_WINDOW = 48
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
ATR_PERIOD = 14

WARMUP_BARS = 100
HISTORY = max(max(RETURN_LAGS) + 1, max(VOL_WINDOWS), BB_WINDOW, VOLUME_Z_WINDOW)

_DAY_MS = 86_400_000.0
_MINUTE_MS = 60_000.0
_EPOCH_WEEKDAY = 3.0  # 1970-01-01 was a Thursday; Monday = 0


def bar_inputs(bar: Bar, prev: Bar) -> dict[str, np.ndarray]:
    change = bar.close - prev.close
    gain = np.maximum(change, 0.0)
    # max(high - low, |high - prev close|, |low - prev close|), for candles with low <= high.
    true_range = np.maximum(bar.high, prev.close)
    true_range -= np.minimum(bar.low, prev.close)
    return {"open_time": bar.open_time, "close": bar.close, "volume": bar.volume,
            "ret_1": np.log(bar.close / prev.close),
            "gain": gain, "loss": gain - change, "true_range": true_range}


INPUT_NAMES = ("open_time", "close", "volume", "ret_1", "gain", "loss", "true_range")


@indicator(*(f"ret_{k}" for k in RETURN_LAGS))
def returns(s: Series) -> list[np.ndarray]:
    close = s("close")
    return [np.log(close / s.lag("close", k)) if k > 1 else s("ret_1") for k in RETURN_LAGS]


@indicator(*(f"vol_{w}" for w in VOL_WINDOWS))
def volatility(s: Series) -> list[np.ndarray]:
    return [s.std("ret_1", w, ddof=1) for w in VOL_WINDOWS]


@indicator(f"bb_pctb_{BB_WINDOW}")
def bollinger(s: Series) -> list[np.ndarray]:
    return [0.5 + s.zscore("close", BB_WINDOW, ddof=0) / (2.0 * BB_WIDTH)]


@indicator(f"volume_z_{VOLUME_Z_WINDOW}")
def volume_z(s: Series) -> list[np.ndarray]:
    return [s.zscore("volume", VOLUME_Z_WINDOW, ddof=0)]


def _calendar(open_time: np.ndarray) -> list[np.ndarray]:
    days = np.floor(open_time / _DAY_MS)
    day_angle = (2.0 * math.pi / _DAY_MS) * (open_time - days * _DAY_MS)
    days += _EPOCH_WEEKDAY
    week_angle = (2.0 * math.pi / 7.0) * (days - 7.0 * np.floor(days / 7.0))
    return [np.sin(day_angle), np.cos(day_angle), np.sin(week_angle), np.cos(week_angle)]


_WEEK_MINUTES = 7 * 1440
_RUN_MINUTES = 4 * _WEEK_MINUTES
_TABLE = np.array(_calendar(_MINUTE_MS * (np.arange(_RUN_MINUTES + _WEEK_MINUTES)
                                          - _EPOCH_WEEKDAY * 1440 + 7 * 1440)))
"""The four values for each minute of five weeks from a Monday 00:00, from the same formulas
(every week's the same): a run of consecutive minutes is a slice of it."""
_TABLE.flags.writeable = False
_WEEK_TABLE = _TABLE[:, :_WEEK_MINUTES].T.copy()  # one row per minute of the week
_STEPS = np.arange(_RUN_MINUTES, dtype=np.float64)


@indicator("tod_sin", "tod_cos", "dow_sin", "dow_cos")
def calendar(s: Series) -> list[np.ndarray]:
    open_time = s("open_time")
    n = open_time.size
    if n > 64:  # bars opening on the minute: look the values up (20x faster)
        minutes = open_time / _MINUTE_MS
        first = float(minutes[0])
        if first.is_integer() and n <= _RUN_MINUTES:
            minutes -= first
            if np.array_equal(minutes, _STEPS[:n]):  # one bar a minute: a slice of the table
                start = int(first + _EPOCH_WEEKDAY * 1440) % _WEEK_MINUTES
                return list(_TABLE[:, start:start + n])
            minutes = open_time / _MINUTE_MS
        index = minutes.astype(np.intp)
        if np.array_equal(index, minutes):
            # Minutes since a Monday 00:00 at most a week before the earliest bar; within a few
            # weeks, take's "wrap" (a subtraction or two) is cheaper than a remainder.
            first_minute = int(index.min())
            index -= first_minute - (first_minute + int(_EPOCH_WEEKDAY) * 1440) % _WEEK_MINUTES
            if index.max() >= 8 * _WEEK_MINUTES:
                index %= _WEEK_MINUTES
            return list(_WEEK_TABLE.take(index, axis=0, mode="wrap").T)
    return _calendar(open_time)


@indicator(f"rsi_{RSI_PERIOD}")
def rsi(s: Series) -> list[np.ndarray]:
    gain = s.ema("avg_gain", s("gain"), 1.0 / RSI_PERIOD)
    loss = s.ema("avg_loss", s("loss"), 1.0 / RSI_PERIOD)
    total = gain + loss
    out = gain / total
    np.copyto(out, 0.5, where=total == 0.0)  # no move at all: neutral
    return [out]


@indicator("macd_hist")
def macd(s: Series) -> list[np.ndarray]:
    close = s("close")
    line = (s.ema("ema_fast", close, 2.0 / (MACD_FAST + 1))
            - s.ema("ema_slow", close, 2.0 / (MACD_SLOW + 1)))
    return [(line - s.ema("macd_signal", line, 2.0 / (MACD_SIGNAL + 1))) / close]


@indicator(f"atr_{ATR_PERIOD}")
def atr(s: Series) -> list[np.ndarray]:
    return [s.ema("atr", s("true_range"), 1.0 / ATR_PERIOD) / s("close")]


FS1 = FeatureSet(FEATURE_SET_ID, bar_inputs, INPUT_NAMES,
                 (returns, volatility, bollinger, volume_z, calendar, rsi, macd, atr),
                 history=HISTORY, warmup=WARMUP_BARS)
FEATURE_NAMES: tuple[str, ...] = FS1.names

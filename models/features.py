"""Feature set ``fs1``: one implementation for training (vectorised) and live trading (incremental).

Input rows are closed candles, shape (n, 7) float64:
``[open_time_ms, open, high, low, close, volume, turnover]``, oldest first, open times strictly
increasing, prices > 0 (the data layer validates candles before they get here).

Every feature of row t uses bars <= t only. The features split into two kinds, and each kind has
exactly one piece of arithmetic shared by both paths:

* window features (returns, rolling volatility, Bollinger %b, volume z-score, calendar) depend on
  a bounded window of bars. ``_window_block`` computes them for the requested rows of whatever
  bars it is given: ``compute_features`` hands it the whole dataset and asks for every row; the
  live path hands it the last ``HISTORY`` bars of one or many symbols and asks for the last row.
* recursive features (RSI, MACD histogram, ATR) come from exponential smoothers
  ``y[t] = a * x[t] + (1 - a) * y[t-1]``, seeded with ``y[0] = x[0]``. The vectorised path runs
  that recursion through ``scipy.signal.lfilter`` (the same two products and one sum per step, in
  C); the incremental path runs ``_smooth_step``. Their inputs (gain, loss, true range) and their
  outputs (``_recursive_block``) go through shared functions.

Rows 0 .. ``WARMUP_BARS`` - 1 are NaN in ``compute_features`` and ``FeatureState.update`` returns
None for the first ``WARMUP_BARS`` bars: by then every window is full and the smoothers' seed
weighs less than (25/27)**100 ~ 5e-4 in the slowest one (the 26-bar EMA). Live and training rows
are identical when both start from the same first bar; a live state started elsewhere differs
only through those fading seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

FEATURE_SET_ID = "fs1"

OPEN_TIME, OPEN, HIGH, LOW, CLOSE, VOLUME, TURNOVER = range(7)
N_COLUMNS = 7

RETURN_LAGS = (1, 3, 12, 48)
VOL_WINDOWS = (12, 48)
BB_WINDOW, BB_WIDTH = 20, 2.0
VOLUME_Z_WINDOW = 48
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
ATR_PERIOD = 14

WARMUP_BARS = 100
HISTORY = max(max(RETURN_LAGS) + 1, max(VOL_WINDOWS) + 1, BB_WINDOW, VOLUME_Z_WINDOW)

_WINDOW_NAMES = (
    *(f"ret_{k}" for k in RETURN_LAGS),
    *(f"vol_{w}" for w in VOL_WINDOWS),
    f"bb_pctb_{BB_WINDOW}",
    f"volume_z_{VOLUME_Z_WINDOW}",
    "tod_sin", "tod_cos", "dow_sin", "dow_cos",
)
_RECURSIVE_NAMES = (f"rsi_{RSI_PERIOD}", "macd_hist", f"atr_{ATR_PERIOD}")
FEATURE_NAMES: tuple[str, ...] = _WINDOW_NAMES + _RECURSIVE_NAMES
"""ret_k: log(close[t] / close[t-k]). vol_w: sample std of the last w one-bar log returns.
bb_pctb_20: (close - lower band) / (upper - lower), bands = mean +- 2 population std of 20 closes.
volume_z_48: (volume - mean) / population std over the last 48 volumes (current one included).
tod/dow: UTC time of day and day of week (Monday = 0) of the bar's open time on the unit circle.
rsi_14: Wilder RSI / 100, in [0, 1]. macd_hist: (MACD line - signal) / close, EMAs 12/26/9.
atr_14: Wilder average true range / close."""

_ALPHA_FAST = 2.0 / (MACD_FAST + 1)
_ALPHA_SLOW = 2.0 / (MACD_SLOW + 1)
_ALPHA_SIGNAL = 2.0 / (MACD_SIGNAL + 1)
_ALPHA_RSI = 1.0 / RSI_PERIOD
_ALPHA_ATR = 1.0 / ATR_PERIOD

_DAY_MS = 86_400_000.0
_EPOCH_WEEKDAY = 3.0  # 1970-01-01 was a Thursday; Monday = 0
# A window whose spread is below this fraction of its mean is treated as flat: summing equal
# values can leave a rounding residue of ~1e-16 that must not turn into a z-score of order 1.
_FLAT_REL = 1e-10


def _as_ohlcv(ohlcv: np.ndarray) -> np.ndarray:
    a = np.asarray(ohlcv, dtype=np.float64)
    if a.ndim not in (2, 3) or a.shape[-1] != N_COLUMNS:
        raise ValueError(f"expected an (n, {N_COLUMNS}) or (n, symbols, {N_COLUMNS}) array, "
                         f"got shape {a.shape}")
    return a


def _rolling_mean_std(x: np.ndarray, w: int, ddof: int, first: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of x[t-w+1 .. t] along axis 0 for rows t = first .. len(x) - 1.

    NaN where the window would reach before row 0. Two-pass (mean, then squared deviations) per
    window: no running sums whose rounding would depend on where the series starts, so a window's
    value is the same whichever path computes it.
    """
    shape = (len(x) - first,) + x.shape[1:]
    mean = np.full(shape, np.nan)
    std = np.full(shape, np.nan)
    start = max(first, w - 1)
    if len(x) > start:
        win = sliding_window_view(x[start - w + 1:], w, axis=0)
        m = win.mean(axis=-1)
        dev = win - m[..., None]
        mean[start - first:] = m
        std[start - first:] = np.sqrt((dev * dev).sum(axis=-1) / (w - ddof))
    return mean, std


def _scaled_deviation(x: np.ndarray, mean: np.ndarray, std: np.ndarray, flat: float
                      ) -> np.ndarray:
    """(x - mean) / std, or ``flat`` where the window has no spread (NaN stays NaN)."""
    out = np.full(x.shape, flat)
    spread = std > _FLAT_REL * np.abs(mean)
    np.divide(x - mean, std, out=out, where=spread)
    out[np.isnan(std)] = np.nan
    return out


def _calendar(open_time: np.ndarray) -> np.ndarray:
    ms_of_day = np.mod(open_time, _DAY_MS)
    weekday = np.mod(np.floor_divide(open_time, _DAY_MS) + _EPOCH_WEEKDAY, 7.0)
    day_angle = (2.0 * math.pi / _DAY_MS) * ms_of_day
    week_angle = (2.0 * math.pi / 7.0) * weekday
    return np.stack([np.sin(day_angle), np.cos(day_angle),
                     np.sin(week_angle), np.cos(week_angle)], axis=-1)


def _window_block(ohlcv: np.ndarray, first: int = 0) -> np.ndarray:
    """Window features of rows first .. n-1 (axis 0), reading earlier rows as history.

    NaN where a row's window would reach before row 0. The dataset path asks for every row;
    the live path hands in its last HISTORY bars and asks for the last row only.
    """
    n = len(ohlcv)
    close, volume = ohlcv[..., CLOSE], ohlcv[..., VOLUME]
    out = np.full((n - first,) + close.shape[1:] + (len(_WINDOW_NAMES),), np.nan)
    for j, lag in enumerate(RETURN_LAGS):
        start = max(first, lag)
        if n > start:
            out[start - first:, ..., j] = np.log(close[start:] / close[start - lag:n - lag])
    col = len(RETURN_LAGS)
    start = max(first, 1)
    if n > start:
        ret_1 = np.log(close[1:] / close[:-1])  # row t's one-bar return at index t - 1
        for k, w in enumerate(VOL_WINDOWS):
            out[start - first:, ..., col + k] = _rolling_mean_std(ret_1, w, 1, start - 1)[1]
    col += len(VOL_WINDOWS)
    mean, std = _rolling_mean_std(close, BB_WINDOW, 0, first)
    out[..., col] = 0.5 + _scaled_deviation(close[first:], mean, std, flat=0.0) / (2.0 * BB_WIDTH)
    mean, std = _rolling_mean_std(volume, VOLUME_Z_WINDOW, 0, first)
    out[..., col + 1] = _scaled_deviation(volume[first:], mean, std, flat=0.0)
    out[..., col + 2:] = _calendar(ohlcv[first:, ..., OPEN_TIME])
    return out


def _recursive_inputs(ohlcv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gain, loss and true range of every row (row 0 has no previous close: 0, 0, high - low)."""
    high, low, close = ohlcv[..., HIGH], ohlcv[..., LOW], ohlcv[..., CLOSE]
    change = np.zeros(close.shape)
    change[1:] = close[1:] - close[:-1]
    true_range = high - low
    prev = close[:-1]
    true_range[1:] = np.maximum(true_range[1:],
                                np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev)))
    return np.maximum(change, 0.0), np.maximum(-change, 0.0), true_range


def _recursive_block(close: np.ndarray, macd: np.ndarray, signal: np.ndarray,
                     avg_gain: np.ndarray, avg_loss: np.ndarray, atr: np.ndarray) -> np.ndarray:
    total = avg_gain + avg_loss
    rsi = np.full(total.shape, 0.5)
    np.divide(avg_gain, total, out=rsi, where=total > 0.0)
    rsi[np.isnan(total)] = np.nan
    return np.stack([rsi, (macd - signal) / close, atr / close], axis=-1)


def _smooth(x: np.ndarray, alpha: float) -> np.ndarray:
    """y[0] = x[0]; y[t] = alpha * x[t] + (1 - alpha) * y[t-1] along axis 0.

    ``lfilter`` evaluates each step as ``(1 - alpha) * y[t-1] + alpha * x[t]``: the same two
    products and one sum as ``_smooth_step``, so both paths agree to the last bit.
    """
    y = np.empty(x.shape)
    if len(x):
        y[0] = x[0]
    if len(x) > 1:
        y[1:] = lfilter([alpha], [1.0, alpha - 1.0], x[1:], axis=0,
                        zi=((1.0 - alpha) * x[0])[None])[0]
    return y


def _smooth_step(prev: float, x: float, alpha: float) -> float:
    return alpha * x + (1.0 - alpha) * prev


def compute_features(ohlcv: np.ndarray) -> np.ndarray:
    """Features of every bar of a dataset; rows < WARMUP_BARS are NaN.

    ``ohlcv`` is (n, 7) for one symbol, giving (n, len(FEATURE_NAMES)), or (n, symbols, 7) for
    several aligned symbols, giving (n, symbols, len(FEATURE_NAMES)).
    """
    bars = _as_ohlcv(ohlcv)
    close = bars[..., CLOSE]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        window = _window_block(bars)
        gain, loss, true_range = _recursive_inputs(bars)
        macd = _smooth(close, _ALPHA_FAST) - _smooth(close, _ALPHA_SLOW)
        recursive = _recursive_block(close, macd, _smooth(macd, _ALPHA_SIGNAL),
                                     _smooth(gain, _ALPHA_RSI), _smooth(loss, _ALPHA_RSI),
                                     _smooth(true_range, _ALPHA_ATR))
    out = np.concatenate([window, recursive], axis=-1)
    out[:WARMUP_BARS] = np.nan
    return out


class FeatureState:
    """Incremental ``fs1`` for one symbol: feed closed bars in order, get the newest bar's row.

    Keeps the last ``HISTORY`` bars and six smoother states; each update is O(HISTORY). Its rows
    equal ``compute_features`` over the same bars from the same first bar. ``update`` serves one
    symbol; at a bar close across many symbols, ``push`` each and call ``latest_features`` once,
    which runs the shared window arithmetic for all of them in one vectorised pass.
    """

    _CAPACITY = 8 * HISTORY

    def __init__(self) -> None:
        self._buf = np.empty((self._CAPACITY, N_COLUMNS))
        self._end = 0
        self._count = 0
        self._ema_fast = self._ema_slow = self._signal = 0.0
        self._avg_gain = self._avg_loss = self._atr = 0.0

    @property
    def bars_seen(self) -> int:
        return self._count

    @property
    def warm(self) -> bool:
        """True once the newest bar's row is defined (more than WARMUP_BARS bars seen)."""
        return self._count > WARMUP_BARS

    def _window(self) -> np.ndarray:
        return self._buf[self._end - HISTORY:self._end]

    def _recursive_state(self) -> tuple[float, ...]:
        return (self._buf[self._end - 1, CLOSE], self._ema_fast - self._ema_slow, self._signal,
                self._avg_gain, self._avg_loss, self._atr)

    def push(self, bar: Sequence[float] | np.ndarray) -> None:
        """Add the newest closed bar (7 values, open time strictly after the previous bar's)."""
        row = np.asarray(bar, dtype=np.float64).reshape(N_COLUMNS)
        if self._count and not row[OPEN_TIME] > self._buf[self._end - 1, OPEN_TIME]:
            raise ValueError("bars must arrive with strictly increasing open times")
        if self._end == self._CAPACITY:
            keep = HISTORY - 1
            self._buf[:keep] = self._buf[self._end - keep:self._end]
            self._end = keep
        self._buf[self._end] = row
        self._end += 1
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            tail = self._buf[max(self._end - 2, 0):self._end]
            gain, loss, true_range = (float(a[-1]) for a in _recursive_inputs(tail))
            close = float(row[CLOSE])
            if self._count == 0:
                self._ema_fast = self._ema_slow = close
                self._signal = self._ema_fast - self._ema_slow
                self._avg_gain, self._avg_loss, self._atr = gain, loss, true_range
            else:
                self._ema_fast = _smooth_step(self._ema_fast, close, _ALPHA_FAST)
                self._ema_slow = _smooth_step(self._ema_slow, close, _ALPHA_SLOW)
                self._signal = _smooth_step(self._signal, self._ema_fast - self._ema_slow,
                                            _ALPHA_SIGNAL)
                self._avg_gain = _smooth_step(self._avg_gain, gain, _ALPHA_RSI)
                self._avg_loss = _smooth_step(self._avg_loss, loss, _ALPHA_RSI)
                self._atr = _smooth_step(self._atr, true_range, _ALPHA_ATR)
        self._count += 1

    def update(self, bar: Sequence[float] | np.ndarray) -> np.ndarray | None:
        """Add the newest closed bar; its feature row, or None for the first WARMUP_BARS bars."""
        self.push(bar)
        return latest_features([self])[0] if self.warm else None


def latest_features(states: Sequence[FeatureState]) -> np.ndarray:
    """The newest bar's row of every state, shape (len(states), len(FEATURE_NAMES)).

    Rows of states that are not warm yet are NaN.
    """
    out = np.full((len(states), len(FEATURE_NAMES)), np.nan)
    warm = [i for i, s in enumerate(states) if s.warm]
    if warm:
        window = np.stack([states[i]._window() for i in warm], axis=1)
        recursive = np.array([states[i]._recursive_state() for i in warm]).T
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out[warm, :len(_WINDOW_NAMES)] = _window_block(window, HISTORY - 1)[0]
            out[warm, len(_WINDOW_NAMES):] = _recursive_block(*recursive)
    return out

"""The textbook numpy implementation of fs1, timed beside the engine as this host's yardstick.

``bench features`` compares the batch engine's rows/s with a fixed budget (10 M), but the same
code read 10.2-10.5 M rows/s on this project's VM one day and 4.7-8.6 M on later days: a
figure alone cannot say whether the code or the host changed. This peer is what a reader would
write first: the same fifteen features, each symbol's columns copied out contiguous, rolling
sums as differences of ``cumsum`` (O(n), one pass each), smoothers through scipy's ``lfilter``,
the calendar from ``sin``/``cos``. Timed in the same run, alternating with the engine, its
rate moves with the host as the engine's does, so ``features_over_numpy_peer`` (engine rows/s
over peer rows/s) is the figure to compare across machines.

It is not the product's code, and not a correct one: differences of running sums cancel
catastrophically once the sums are large against the window (Bollinger's variance of closes,
the volume z-score), which is why the engine anchors its windows (``models/features/batch``).
``max_abs_diff`` reports how far it strays from the engine, so the speed is not mistaken for a
free lunch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from models.features import fs1

_DAY_MS = 86_400_000.0


def _rolling(x: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Population mean and variance of the w values ending at each row (NaN for rows < w-1)."""
    c1, c2 = np.cumsum(x), np.cumsum(x * x)
    s1, s2 = np.full_like(x, np.nan), np.full_like(x, np.nan)
    s1[w - 1], s2[w - 1] = c1[w - 1], c2[w - 1]
    s1[w:], s2[w:] = c1[w:] - c1[:-w], c2[w:] - c2[:-w]
    mean = s1 / w
    return mean, s2 / w - mean * mean


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    """Seeded with the first value, as fs1's smoothers are."""
    return lfilter([alpha], [1.0, alpha - 1.0], x, zi=[(1.0 - alpha) * x[0]])[0]


def peer_symbol(bars: np.ndarray, out: np.ndarray) -> None:
    """fs1's features of one symbol's (n, 7) candles into ``out`` (15, n), in fs1's order."""
    t, high, low, close, volume = (np.ascontiguousarray(bars[:, j]) for j in (0, 2, 3, 4, 5))
    prev = np.concatenate([close[:1], close[:-1]])  # the first bar is its own predecessor
    log_close = np.log(close)
    ret_1 = log_close - np.log(prev)
    k = 0
    for lag in fs1.RETURN_LAGS:
        out[k, :lag] = np.nan
        out[k, lag:] = log_close[lag:] - log_close[:-lag]
        k += 1
    for w in fs1.VOL_WINDOWS:
        _, var = _rolling(ret_1, w)
        out[k] = np.sqrt(np.maximum(var, 0.0) * (w / (w - 1)))
        k += 1
    mean, var = _rolling(close, fs1.BB_WINDOW)
    out[k] = 0.5 + (close - mean) / np.sqrt(var) / (2.0 * fs1.BB_WIDTH)
    mean, var = _rolling(volume, fs1.VOLUME_Z_WINDOW)
    out[k + 1] = (volume - mean) / np.sqrt(var)
    k += 2
    day_angle = (2.0 * math.pi / _DAY_MS) * np.mod(t, _DAY_MS)
    week_angle = (2.0 * math.pi / 7.0) * np.mod(np.floor(t / _DAY_MS) + fs1._EPOCH_WEEKDAY, 7.0)
    out[k:k + 4] = (np.sin(day_angle), np.cos(day_angle), np.sin(week_angle),
                    np.cos(week_angle))
    k += 4
    change = close - prev
    gain = np.maximum(change, 0.0)
    avg_gain, avg_loss = (_ema(x, 1.0 / fs1.RSI_PERIOD) for x in (gain, gain - change))
    out[k] = avg_gain / (avg_gain + avg_loss)
    line = (_ema(close, 2.0 / (fs1.MACD_FAST + 1)) - _ema(close, 2.0 / (fs1.MACD_SLOW + 1)))
    out[k + 1] = (line - _ema(line, 2.0 / (fs1.MACD_SIGNAL + 1))) / close
    true_range = np.maximum(high, prev) - np.minimum(low, prev)
    out[k + 2] = _ema(true_range, 1.0 / fs1.ATR_PERIOD) / close
    out[:, :fs1.WARMUP_BARS] = np.nan


def peer(bars: np.ndarray) -> np.ndarray:
    """(n, symbols, 7) candles → (n, symbols, 15) features, symbol by symbol."""
    n, symbols, _ = bars.shape
    out = np.empty((symbols, len(fs1.FEATURE_NAMES), n))
    with np.errstate(divide="ignore", invalid="ignore"):
        for s in range(symbols):
            peer_symbol(bars[:, s], out[s])
    return out.transpose(2, 0, 1)

"""Candle arrays: validation and gap detection (pure).

A candle array is (n, 7) float64: open_time (ms), open, high, low, close, volume, turnover.
"""

from __future__ import annotations

import numpy as np

MINUTE_MS = 60_000


class CandleError(ValueError):
    """A candle array that must not be stored; the message says what is wrong."""


def validate(rows: np.ndarray, step_ms: int = MINUTE_MS) -> None:
    """Refuse arrays that are unsorted, duplicated, off the interval grid or not OHLC."""
    if rows.ndim != 2 or rows.shape[1] != 7:
        raise CandleError(f"expected an (n, 7) candle array, got shape {rows.shape}")
    if len(rows) == 0:
        return
    if not np.all(np.isfinite(rows)):
        raise CandleError(f"{int((~np.isfinite(rows)).any(axis=1).sum())} rows hold NaN or inf")
    t = rows[:, 0]
    d = np.diff(t)
    if np.any(d == 0):
        raise CandleError(f"{int((d == 0).sum())} duplicate open times")
    if np.any(d < 0):
        raise CandleError("open times are not in ascending order")
    if np.any(t % step_ms):
        raise CandleError(f"open times off the {step_ms // 1000}s grid")
    o, h, lo, c = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c)) | (lo <= 0)
    if np.any(bad):
        raise CandleError(f"{int(bad.sum())} rows break high >= max(open, close) >= "
                          "min(open, close) >= low > 0")
    if np.any(rows[:, 5] < 0) or np.any(rows[:, 6] < 0):
        raise CandleError("negative volume or turnover")


def missing_ranges(times: np.ndarray, start_ms: int, end_ms: int,
                   step_ms: int = MINUTE_MS) -> list[tuple[int, int]]:
    """The [start, end) open-time ranges of [start_ms, end_ms) with no candle."""
    expected = np.arange(start_ms, end_ms, step_ms, dtype=np.int64)
    have = np.isin(expected, times.astype(np.int64))
    out: list[tuple[int, int]] = []
    run_start = None
    for t, ok in zip(expected, have):
        if not ok and run_start is None:
            run_start = int(t)
        elif ok and run_start is not None:
            out.append((run_start, int(t)))
            run_start = None
    if run_start is not None:
        out.append((run_start, end_ms))
    return out


def merge(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of two candle arrays by open time (b wins on a tie), sorted."""
    if len(a) == 0:
        return b
    if len(b) == 0:
        return a
    both = np.concatenate([b, a])
    _, idx = np.unique(both[:, 0], return_index=True)
    return both[np.sort(idx)][np.argsort(both[np.sort(idx)][:, 0], kind="stable")]

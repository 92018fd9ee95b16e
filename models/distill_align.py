"""Which teacher probabilities a 5m bar may use: those of the last hour that has CLOSED (pure).

A 5m bar opening at ``t`` is acted on at its close, ``t + 5m``. The hourly bar opening at ``H``
closes at ``H + 1h``, and its features (and so the teacher's probabilities) are known from then
on. The bar therefore gets the probabilities of the latest hour with ``H + 1h <= t + 5m``: the
hour it falls in is still open, except at its last 5m bar, whose close is the hour's close.
Bars before any closed hour get none (NaN), as do bars whose hour had no probabilities (the
teacher's features not warm yet).
"""

from __future__ import annotations

import numpy as np

BAR_MS = 300_000
HOUR_MS = 3_600_000


def last_closed_hour(bar_open_ms: np.ndarray, hour_open_ms: np.ndarray, *,
                     bar_ms: int = BAR_MS, hour_ms: int = HOUR_MS) -> np.ndarray:
    """Index into ``hour_open_ms`` (ascending) of each bar's last closed hour; -1 for none."""
    bars = np.asarray(bar_open_ms, dtype=np.int64)
    hours = np.asarray(hour_open_ms, dtype=np.int64)
    if len(hours) > 1 and np.any(np.diff(hours) <= 0):
        raise ValueError("hour open times must be strictly ascending")
    return np.searchsorted(hours + hour_ms, bars + bar_ms, side="right") - 1


def align_teacher(bar_open_ms: np.ndarray, hour_open_ms: np.ndarray, hour_probs: np.ndarray,
                  *, bar_ms: int = BAR_MS, hour_ms: int = HOUR_MS) -> np.ndarray:
    """(n_bars, 3) teacher probabilities of each bar's last closed hour (NaN where none)."""
    probs = np.asarray(hour_probs, dtype=np.float32)
    if probs.shape != (len(hour_open_ms), 3):
        raise ValueError(f"hour_probs must be ({len(hour_open_ms)}, 3), got {probs.shape}")
    at = last_closed_hour(bar_open_ms, hour_open_ms, bar_ms=bar_ms, hour_ms=hour_ms)
    out = np.full((len(at), 3), np.nan, dtype=np.float32)
    ok = at >= 0
    out[ok] = probs[at[ok]]
    return out

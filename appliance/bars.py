"""Trading bars from 1m candles (pure): the same aggregation the lake's resampling does in
DuckDB (first open, max high, min low, last close, summed volume and turnover), so a live 5m
bar is the bar the model was trained on."""

from __future__ import annotations

import numpy as np

INTERVAL_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}


def aggregate(rows: np.ndarray, bucket_start: int) -> np.ndarray:
    """One bar (7 values) from the 1m rows of its bucket, oldest first."""
    return np.array([bucket_start, rows[0, 1], rows[:, 2].max(), rows[:, 3].min(),
                     rows[-1, 4], rows[:, 5].sum(), rows[:, 6].sum()])


def bars_from_minutes(rows: np.ndarray, bucket_ms: int, end_ms: int) -> np.ndarray:
    """Every complete-in-time bar of ``rows`` (1m, sorted) whose bucket closed by ``end_ms``."""
    if len(rows) == 0:
        return np.zeros((0, 7))
    buckets = (rows[:, 0].astype(np.int64) // bucket_ms) * bucket_ms
    out = []
    for b in np.unique(buckets):
        if b + bucket_ms <= end_ms:
            out.append(aggregate(rows[buckets == b], int(b)))
    return np.array(out).reshape(-1, 7)

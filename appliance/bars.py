"""Trading bars from 1m candles (pure): the same aggregation the lake's resampling does in
DuckDB (first open, max high, min low, last close, summed volume and turnover), so a live 5m
bar is the bar the model was trained on."""

from __future__ import annotations

import numpy as np


def aggregate_buckets(rows: np.ndarray, bucket_ms: int) -> np.ndarray:
    """Candles (n, 7), sorted by open time, aggregated into ``bucket_ms`` buckets.

    The one numpy aggregation of the project: the trading engine, the replay market and the
    fake Bybit server all use it, and it matches the lake's DuckDB resampling. A bucket missing
    some source candles is made of the candles it has.
    """
    if len(rows) == 0:
        return np.zeros((0, 7))
    opens = rows[:, 0].astype(np.int64)
    buckets = opens - opens % bucket_ms
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(rows)] - 1
    return np.column_stack([
        buckets[starts].astype(np.float64), rows[starts, 1],
        np.maximum.reduceat(rows[:, 2], starts), np.minimum.reduceat(rows[:, 3], starts),
        rows[ends, 4], np.add.reduceat(rows[:, 5], starts), np.add.reduceat(rows[:, 6], starts)])


def bars_from_minutes(rows: np.ndarray, bucket_ms: int, end_ms: int) -> np.ndarray:
    """Every bar of ``rows`` (1m, sorted) whose bucket closed by ``end_ms``."""
    if len(rows) == 0:
        return np.zeros((0, 7))
    opens = rows[:, 0].astype(np.int64)
    return aggregate_buckets(rows[opens - opens % bucket_ms + bucket_ms <= end_ms], bucket_ms)

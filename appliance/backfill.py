"""Backfill: history from the exchange into the lake, one UTC day at a time.

A day already stored complete is skipped, so a backfill that was killed resumes where it
stopped and a re-run writes nothing (the dataset's sha256 stays the same). Each day's candles
are validated before they are written; minutes the exchange did not send are asked for once
more (gap refill), and what is still missing is counted in the day's metadata and the manifest.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np
import trio

from appliance.exchange.base import Exchange
from data.candles import MINUTE_MS, merge, missing_ranges, validate
from data.lake import DAY_MS, Lake

Progress = Callable[[str, int, int], Awaitable[None] | None]


@dataclass(frozen=True)
class BackfillResult:
    symbol: str
    days_written: int
    days_skipped: int
    rows_written: int
    missing: int


async def run_io(inline: bool, fn: Callable[..., Any], *args: Any) -> Any:
    """Blocking disk work in a worker thread (or inline, for autojump-clock tests)."""
    if inline:
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args)


async def fetch_range(exchange: Exchange, symbol: str, start: int, end: int) -> np.ndarray:
    fast = getattr(exchange, "klines_array", None)
    if fast is not None:
        return await fast(symbol, start, end)
    candles = await exchange.klines(symbol, "1m", start, end)
    return np.array([(c.open_time, c.open, c.high, c.low, c.close, c.volume, c.turnover)
                     for c in candles], dtype=np.float64).reshape(-1, 7)


async def fetch_day(exchange: Exchange, symbol: str, start: int, end: int
                    ) -> tuple[np.ndarray, int]:
    """One day's candles with one refill pass over the gaps; returns (rows, still missing)."""
    rows = await fetch_range(exchange, symbol, start, end)
    validate(rows)
    for gap_start, gap_end in missing_ranges(rows[:, 0], start, end):
        refill = await fetch_range(exchange, symbol, gap_start, gap_end)
        validate(refill)
        rows = merge(rows, refill)
    rows = rows[(rows[:, 0] >= start) & (rows[:, 0] < end)]
    missing = sum((e - s) // MINUTE_MS for s, e in missing_ranges(rows[:, 0], start, end))
    return rows, missing


async def backfill_symbol(exchange: Exchange, lake: Lake, symbol: str, start_ms: int,
                          end_ms: int, progress: Progress | None = None, *,
                          inline: bool = False) -> BackfillResult:
    """Fill the lake with 1m candles of whole UTC days from the one holding ``start_ms`` up to
    ``end_ms`` (the first minute not closed yet; the last day is partial and refetched later).

    Disk writes run in a worker thread; ``inline=True`` keeps them on the event loop for tests
    on trio's autojump clock.
    """
    first_day = start_ms - start_ms % DAY_MS
    days = list(range(first_day, end_ms, DAY_MS))
    written = skipped = rows_written = missing_total = 0
    for i, day in enumerate(days):
        hi = min(day + DAY_MS, end_ms)
        status = await run_io(inline, lake.day_status, symbol, day)
        if status is not None and status[0]:
            skipped += 1
            missing_total += status[1]
        else:
            rows, missing = await fetch_day(exchange, symbol, day, hi)
            complete = hi == day + DAY_MS
            if len(rows) or complete:
                await run_io(inline, functools.partial(lake.write_day, complete=complete,
                                                    missing=missing), symbol, day, rows)
                written += 1
                rows_written += len(rows)
            missing_total += missing
        if progress is not None:
            result = progress(symbol, i + 1, len(days))
            if result is not None:
                await result
    return BackfillResult(symbol, written, skipped, rows_written, missing_total)

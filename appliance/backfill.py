"""Backfill: history from the exchange into the lake.

The lake stores one file per UTC day; a day already stored complete is skipped, so a backfill
that was killed resumes where it stopped and a re-run writes nothing (the dataset's sha256
stays the same). Days still to fetch are asked for in runs of up to ``CHUNK_DAYS`` contiguous
days, so the exchange's 1000-candle pages are filled (36 pages for 25 days, where day-sized
requests would need 50): the rate limit, not our request pattern, sets the pace.

Each run is validated before anything is written; minutes the exchange did not send are asked
for once more (gap refill; a gap longer than a page only when a probe of one page at its edge
finds candles, so a pair's unlisted weeks are not asked for twice), and what is still missing
is counted in the day's metadata and the manifest.

Funding rates (:func:`backfill_funding`) go into the lake's funding file of the pair; only the
rates newer than the stored ones are asked for once the file covers the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import numpy as np
import trio

from appliance.exchange.base import Exchange
from data.candles import MINUTE_MS, merge, missing_ranges, validate
from data.lake import DAY_MS, DayBatch, Lake
from models.funding import FUNDING_PERIOD_MS

CHUNK_DAYS = 25
PAGE_MS = 1000 * MINUTE_MS  # a page of 1m klines (Bybit's 1000 a request)
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
    return await exchange.klines_array(symbol, start, end)


async def fetch_with_refill(exchange: Exchange, symbol: str, start: int, end: int
                            ) -> np.ndarray:
    """Candles of [start, end), validated, with one more ask for every gap.

    A gap longer than a page is first probed with one page at its edge next to the candles
    received (the end of a gap before them, else its start): a venue that dropped a page
    sends candles there when asked again, and then the whole gap is asked for; one that sends
    nothing there again has none (the pair was not listed, e.g. before its launch), and the
    gap's other pages are not asked for twice."""
    rows = await fetch_range(exchange, symbol, start, end)
    validate(rows)
    for gap_start, gap_end in missing_ranges(rows[:, 0], start, end):
        if gap_end - gap_start > PAGE_MS:
            leading = gap_start == start and len(rows) > 0
            probe = (gap_end - PAGE_MS, gap_end) if leading else (gap_start,
                                                                   gap_start + PAGE_MS)
            found = await fetch_range(exchange, symbol, *probe)
            validate(found)
            if not len(found):
                continue
            rows = merge(rows, found)
        refill = await fetch_range(exchange, symbol, gap_start, gap_end)
        validate(refill)
        rows = merge(rows, refill)
    return rows[(rows[:, 0] >= start) & (rows[:, 0] < end)]


def runs_of(days: list[int], longest: int) -> list[list[int]]:
    """Group sorted day starts into runs of consecutive days, each at most ``longest`` long."""
    out: list[list[int]] = []
    for day in days:
        if out and day == out[-1][-1] + DAY_MS and len(out[-1]) < longest:
            out[-1].append(day)
        else:
            out.append([day])
    return out


def split_days(rows: np.ndarray, days: list[int], end_ms: int) -> list[DayBatch]:
    """Cut a run's candles into day batches, each saying whether it is complete and what
    it lacks."""
    out = []
    for day in days:
        hi = min(day + DAY_MS, end_ms)
        part = rows[(rows[:, 0] >= day) & (rows[:, 0] < hi)]
        missing = sum((e - s) // MINUTE_MS for s, e in missing_ranges(part[:, 0], day, hi))
        out.append(DayBatch(day, part, hi == day + DAY_MS, missing))
    return out


async def backfill_symbol(exchange: Exchange, lake: Lake, symbol: str, start_ms: int,
                          end_ms: int, progress: Progress | None = None, *,
                          inline: bool = False, chunk_days: int = CHUNK_DAYS) -> BackfillResult:
    """Fill the lake with 1m candles of whole UTC days from the one holding ``start_ms`` up to
    ``end_ms`` (the first minute not closed yet; the last day is partial and refetched later).

    Disk work runs in worker threads; ``inline=True`` keeps it on the event loop for tests on
    trio's autojump clock.
    """
    days = list(range(start_ms - start_ms % DAY_MS, end_ms, DAY_MS))
    todo, skipped, missing_total = [], 0, 0
    for day in days:
        status = await run_io(inline, lake.day_status, symbol, day)
        if status is not None and status[0]:
            skipped += 1
            missing_total += status[1]
        else:
            todo.append(day)
    done = skipped
    written = rows_written = 0
    await _report(progress, symbol, done, len(days))
    for run in runs_of(todo, chunk_days):
        hi = min(run[-1] + DAY_MS, end_ms)
        rows = await fetch_with_refill(exchange, symbol, run[0], hi)
        batches = [b for b in split_days(rows, run, end_ms) if len(b.rows) or b.complete]
        await run_io(inline, lake.write_days, symbol, batches)
        written += len(batches)
        rows_written += sum(len(b.rows) for b in batches)
        missing_total += sum(b.missing for b in batches)
        done += len(run)
        await _report(progress, symbol, done, len(days))
    return BackfillResult(symbol, written, skipped, rows_written, missing_total)


async def _report(progress: Progress | None, symbol: str, done: int, total: int) -> None:
    if progress is not None:
        result = progress(symbol, done, total)
        if result is not None:
            await result


async def backfill_funding(exchange: Exchange, lake: Lake, symbol: str, start_ms: int,
                           end_ms: int, *, inline: bool = False) -> int:
    """Store the funding rates of ``symbol`` settled in ``(start_ms, end_ms]``; returns how
    many rows were fetched. A file that already covers the start of the window is only topped
    up from its newest row."""
    have = await run_io(inline, lake.read_funding, symbol)
    since = start_ms
    if len(have) and have[0, 0] <= start_ms + FUNDING_PERIOD_MS:
        since = max(start_ms, int(have[-1, 0]))
    rates = await exchange.funding_rates(symbol, since, end_ms)
    if rates:
        await run_io(inline, lake.write_funding, symbol, np.array(rates, dtype=np.float64))
    return len(rates)

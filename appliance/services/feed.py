"""The feed: closed 1m candles from the exchange into DuckDB, for the tradable set.

Each pass asks for every minute that has closed since the last one it stored (so a slow
machine at a high ``--speed`` catches up in batches instead of falling behind), writes them in
one idempotent upsert, and publishes a ``data_source_update`` event. Only closed bars are ever
requested: the minute in progress is never written, which is the first guard against look-ahead.

Until the discovery service keeps ``tradable_pairs`` on the bus, the feed picks the symbols whose
24h turnover is above the bar itself, refreshed every market hour.
"""

from __future__ import annotations

import numpy as np
import trio

from appliance.clock import MINUTE_MS, floor_minute_ms, now_ms
from appliance.context import ServiceContext
from appliance.domain import Candle
from appliance.logs import service_logger

NAME = "feed"
HOUR_MS = 3_600_000


def candles_to_array(candles: list[Candle]) -> np.ndarray:
    if not candles:
        return np.zeros((0, 7))
    return np.array([(c.open_time, c.open, c.high, c.low, c.close, c.volume, c.turnover)
                     for c in candles], dtype=np.float64)


def minutes_to_fetch(last_stored: int | None, closed_end: int, warmup_minutes: int,
                     max_catchup_minutes: int) -> tuple[int, int] | None:
    """The [start, end) open-time range still to fetch, or None when up to date.

    ``closed_end`` is the open time of the minute in progress: everything before it has closed.
    """
    earliest = closed_end - max_catchup_minutes * MINUTE_MS
    if last_stored is None:
        start = closed_end - warmup_minutes * MINUTE_MS
    else:
        start = last_stored + MINUTE_MS
    start = max(start, earliest)
    return (start, closed_end) if start < closed_end else None


def serves_1m(exchange, symbols: list[str]) -> list[str]:
    """Replay folders mix intervals; only symbols with 1m data feed the 1m pipeline."""
    serves = getattr(exchange, "serves", None)
    return symbols if serves is None else [s for s in symbols if serves(s, "1m")]


async def select_tradable(ctx: ServiceContext) -> list[str]:
    pairs = ctx.bus.tradable_pairs()
    if pairs is not None:
        return serves_1m(ctx.exchange, pairs)
    bar = ctx.cfg.discovery.min_turnover_usd
    listed = {i.symbol for i in await ctx.exchange.instruments() if i.status == "Trading"}
    return serves_1m(ctx.exchange, sorted(t.symbol for t in await ctx.exchange.tickers()
                                          if t.symbol in listed and t.turnover_24h > bar))


async def fetch(ctx: ServiceContext, symbol: str, start: int, end: int) -> np.ndarray:
    fast = getattr(ctx.exchange, "klines_array", None)
    if fast is not None:
        return await fast(symbol, start, end)
    return candles_to_array(await ctx.exchange.klines(symbol, "1m", start, end))


async def run(ctx: ServiceContext) -> None:
    log = service_logger(NAME)
    latest: dict[str, int] = await ctx.store.call("latest_open_times", "1m")
    symbols: list[str] = []
    symbols_at = -1
    pruned_at = -1
    while True:
        ctx.beat(NAME)
        closed_end = floor_minute_ms(now_ms(ctx.clock))
        if ctx.bus.tradable_pairs() is not None or closed_end - symbols_at >= HOUR_MS:
            symbols, symbols_at = await select_tradable(ctx), closed_end
            ctx.metrics.pairs_total.set(len(symbols))
        batches: dict[str, np.ndarray] = {}

        async def one(symbol: str) -> None:
            span = minutes_to_fetch(latest.get(symbol), closed_end, ctx.cfg.feed.warmup_minutes,
                                    ctx.cfg.feed.max_catchup_minutes)
            if span is not None:
                rows = await fetch(ctx, symbol, *span)
                if len(rows):
                    batches[symbol] = rows

        async with trio.open_nursery() as nursery:
            for symbol in symbols:
                nursery.start_soon(one, symbol)
        if batches:
            await ctx.store.call("upsert_candle_batches", "1m", batches)
            total = 0
            for symbol, rows in batches.items():
                latest[symbol] = int(rows[-1, 0])
                ctx.metrics.candles_ingested_total.labels(symbol).inc(len(rows))
                total += len(rows)
            newest = max(latest[s] for s in batches)
            lag_s = (now_ms(ctx.clock) - (newest + MINUTE_MS)) / 1000
            ctx.bus.publish("data_source_update", {
                "source": ctx.exchange.name, "symbols": len(batches), "candles": total,
                "latest_open_time": newest, "lag_s": round(lag_s, 3), "percent": 100.0},
                service=NAME, market_ts=ctx.clock.now())
            log.debug("candles written", candles=total, symbols=len(batches))
        hot_start = closed_end - ctx.cfg.feed.hot_window_days * 86_400_000
        if closed_end - pruned_at >= HOUR_MS:
            await ctx.store.call("prune_candles", hot_start)
            pruned_at = closed_end
        # wake just after the next minute closes
        await ctx.clock.sleep_until((closed_end + MINUTE_MS) / 1000 + 0.5)


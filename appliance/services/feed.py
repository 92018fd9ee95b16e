"""The feed: the only reader of live candles from the exchange.

Each pass asks for every minute that has closed since the last one it stored, writes them in one
idempotent upsert, publishes a ``data_source_update`` event, and hands the minutes to the
:class:`~appliance.bar_hub.BarHub`, which fans every closed 5m and 1h bar out to the trading
engine and the other services that watch bars. Only closed minutes are ever requested: the
minute in progress is never written, which is the first guard against look-ahead.

Falling behind never loses a minute. A pass fetches at most ``feed.max_catchup_minutes`` per
symbol, starting right after the last stored minute, so a slow machine at a high ``--speed``
catches up over several passes instead of skipping. On the virtual clock the feed also *holds*
market time while it is more than ``feed.max_lag_minutes`` behind, so the market cannot run
ahead of what the machine can store and trade (the outcome of a sim run depends on market time,
not on the CPU); on the real clock the lag is logged and exported instead.

An exchange outage is a state, not a crash (:mod:`appliance.outage`): a pass whose fetches fail
stores nothing, the feed is marked degraded and tries again after a backoff of at most 5 s of
wall time, and the first pass after the outage fetches every minute it missed.

Until the discovery service keeps ``tradable_pairs`` on the bus, the feed picks the symbols whose
24h turnover is above the bar itself, refreshed every market hour.
"""

from __future__ import annotations

import numpy as np
import trio

from appliance.bar_hub import BarHub
from appliance.clock import MINUTE_MS, VirtualClock, floor_minute_ms, now_ms
from appliance.context import ServiceContext
from appliance.contracts import Event
from appliance.exchange.base import ExchangeError
from appliance.logs import service_logger
from appliance.outage import Outage
from data.intervals import HOUR_MS

NAME = "feed"


def minutes_to_fetch(last_stored: int | None, closed_end: int, warmup_minutes: int,
                     max_catchup_minutes: int) -> tuple[int, int] | None:
    """The [start, end) open-time range to fetch this pass, or None when up to date.

    ``closed_end`` is the open time of the minute in progress: everything before it has closed.
    The range starts right after the last stored minute (never later: nothing is skipped) and
    spans at most ``max_catchup_minutes``; the rest comes on the next pass.
    """
    if last_stored is None:
        start = closed_end - warmup_minutes * MINUTE_MS
    else:
        start = last_stored + MINUTE_MS
    end = min(closed_end, start + max_catchup_minutes * MINUTE_MS)
    return (start, end) if start < end else None


def serves_1m(ctx: ServiceContext, symbols: list[str]) -> list[str]:
    """Replay folders mix intervals; only symbols with 1m data feed the 1m pipeline."""
    return [s for s in symbols if ctx.exchange.serves(s, "1m")]


async def select_tradable(ctx: ServiceContext) -> list[str]:
    """The tradable pairs, and every symbol a book still holds (a pair that left the set keeps
    its bars until its positions are closed: marks, funding prices and the close need them)."""
    pairs = ctx.bus.tradable_pairs()
    held = ctx.bus.held_symbols()
    if pairs is not None:
        return serves_1m(ctx, sorted(set(pairs) | set(held)))
    bar = ctx.cfg.discovery.min_turnover_usd
    listed = {i.symbol for i in await ctx.exchange.instruments() if i.status == "Trading"}
    return serves_1m(ctx, sorted({t.symbol for t in await ctx.exchange.tickers()
                                  if t.symbol in listed and t.turnover_24h > bar} | set(held)))


class Feed:
    """The service's state between passes (kept out of module globals for tests)."""

    def __init__(self, ctx: ServiceContext, hub: BarHub) -> None:
        self.ctx, self.hub = ctx, hub
        self.lag_labels: set[str] = set()  # symbols with a candle_lag_seconds series
        self.log = service_logger(NAME)
        self.latest: dict[str, int] = {}
        self.symbols: list[str] = []
        self.symbols_at = -1
        self.pruned_at = -1
        self.lag_logged_at = -1.0
        self.holding = False  # the virtual clock stands still while the feed catches up

    async def start(self) -> None:
        self.latest = await self.ctx.store.call("latest_open_times", "1m")

    async def one_pass(self) -> int:
        """Fetch, store and fan out what closed since the last pass; returns the candles."""
        ctx = self.ctx
        closed_end = floor_minute_ms(now_ms(ctx.clock))
        if ctx.bus.tradable_pairs() is not None or closed_end - self.symbols_at >= HOUR_MS:
            self.symbols, self.symbols_at = await select_tradable(ctx), closed_end
            ctx.metrics.pairs_total.set(len(self.symbols))
        batches: dict[str, np.ndarray] = {}
        errors: list[ExchangeError] = []

        async def one(symbol: str) -> None:
            span = minutes_to_fetch(self.latest.get(symbol), closed_end,
                                    ctx.cfg.feed.warmup_minutes, ctx.cfg.feed.max_catchup_minutes)
            if span is not None:
                try:
                    rows = await ctx.exchange.klines_array(symbol, *span)
                except ExchangeError as exc:  # the pass is lost: stop asking a venue that is down
                    errors.append(exc)
                    nursery.cancel_scope.cancel()
                    return
                if len(rows):
                    batches[symbol] = rows

        async with trio.open_nursery() as nursery:
            for symbol in self.symbols:
                nursery.start_soon(one, symbol)
        if errors:  # a pass is all or nothing: the next one fetches the same minutes again
            raise errors[0]
        total = 0
        if batches:
            await ctx.store.call("upsert_candle_batches", "1m", batches)
            for symbol in sorted(batches):
                rows = batches[symbol]
                self.latest[symbol] = int(rows[-1, 0])
                ctx.metrics.candles_ingested_total.labels(symbol).inc(len(rows))
                self.hub.add_minutes(symbol, rows)
                total += len(rows)
        self.hub.flush(closed_end, [s for s in self.symbols if s in self.latest])
        lag_s = self.lag_s(closed_end)
        if batches:
            ctx.bus.publish(Event.DATA_SOURCE_UPDATE, {
                "source": ctx.exchange.name, "symbols": len(batches), "candles": total,
                "latest_open_time": max(self.latest[s] for s in batches),
                "lag_s": round(lag_s, 3), "percent": 100.0}, service=NAME,
                market_ts=ctx.clock.now())
        self.pace(lag_s)
        if closed_end - self.pruned_at >= HOUR_MS:
            await ctx.store.call("prune_candles",
                                 closed_end - ctx.cfg.feed.hot_window_days * 86_400_000)
            self.pruned_at = closed_end
        return total

    def lag_s(self, closed_end: int) -> float:
        """Market seconds the slowest traded symbol's newest stored minute trails the clock
        (and each symbol's lag to ``candle_lag_seconds``)."""
        gauge = self.ctx.metrics.candle_lag_seconds
        for s in self.lag_labels - set(self.symbols):  # no longer followed: no stale series
            gauge.remove(s)
        self.lag_labels = {s for s in self.symbols if s in self.latest}
        for s in self.lag_labels:
            gauge.labels(s).set(max(0.0, (closed_end - (self.latest[s] + MINUTE_MS)) / 1000))
        stored = [self.latest[s] for s in self.symbols if s in self.latest]
        return 0.0 if not stored else (closed_end - (min(stored) + MINUTE_MS)) / 1000

    def pace(self, lag_s: float) -> None:
        """Hold the virtual clock while far behind; say so on the real one."""
        behind = lag_s > self.ctx.cfg.feed.max_lag_minutes * 60
        self.ctx.metrics.feed_lag_seconds.set(max(0.0, lag_s))
        clock = self.ctx.clock
        if isinstance(clock, VirtualClock):
            self.holding = behind
            if behind:
                clock.hold(NAME)
            else:
                clock.release(NAME)
        elif behind and self.ctx.clock.now() - self.lag_logged_at > 300:
            self.log.warning("feed behind the market", lag_s=round(lag_s, 1))
            self.lag_logged_at = self.ctx.clock.now()


async def run(ctx: ServiceContext, hub: BarHub) -> None:
    feed = Feed(ctx, hub)
    outage = Outage(ctx, NAME)
    await feed.start()
    try:
        while True:
            ctx.beat(NAME)
            try:
                await feed.one_pass()
            except ExchangeError as exc:  # the venue's fault: degraded, not crashed
                await outage.failed(exc)
                continue
            await outage.ok()
            if feed.holding:
                await trio.sleep(0)  # behind: the next pass at once (market time stands still)
                continue
            closed_end = floor_minute_ms(now_ms(ctx.clock))
            await ctx.clock.sleep_until((closed_end + MINUTE_MS) / 1000 + 0.5)
    finally:
        if isinstance(ctx.clock, VirtualClock):
            ctx.clock.release(NAME)

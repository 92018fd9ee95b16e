"""Layer 2, the dataset builder: every tradable pair gets its history in the lake.

For each pair that becomes tradable it backfills ``datasets.days`` (90) days of 1m candles into
the Parquet lake (resumable, gap-refilled; see :mod:`appliance.backfill`), derives 5m and 1h,
stores the pair's funding rates over the same days next to them, records a manifest (rows,
time range, sha256) of each in the lake and in DuckDB's ``datasets``, counts
``datasets_built_total`` and enqueues the feature job on the huey queue. Progress goes to the
bus as ``data_source_update`` events with a percent, and as the ``backfill`` snapshot.

Once a market day it tops up every dataset to the present, so training always sees fresh data,
and fetches again any day of the window that is missing (a damaged day is quarantined by the
lake); a pair DuckDB records but whose lake files are gone is built again from scratch.
On the virtual clock (sim, replay) market time stands still while a new pair's history is being
backfilled, so the outcome of a run does not depend on how fast the machine backfills.
Pairs are backfilled a few at a time; through the Bybit adapter backfill requests run at the
lowest priority but discovery's, so they never starve the trading path. An exchange outage
degrades the service instead of crashing it (:mod:`appliance.outage`): a backfill that fails
keeps the days it wrote and resumes after the backoff.
"""

from __future__ import annotations

import trio

from appliance.backfill import backfill_funding, backfill_symbol
from appliance.clock import VirtualClock, floor_minute_ms, now_ms
from appliance.context import ServiceContext
from appliance.contracts import Event, Snapshot
from appliance.exchange.base import ExchangeError
from appliance.jobs import Jobs, JobsUnavailable
from appliance.logs import service_logger
from appliance.outage import Outage
from appliance.paths import StatePaths
from appliance.services.feed import serves_1m
from data.lake import DAY_MS, Lake, Manifest

NAME = "datasets"


async def build_dataset(ctx: ServiceContext, lake: Lake, jobs: Jobs | None, symbol: str,
                        days: int, progress: dict[str, float]) -> Manifest | None:
    end = floor_minute_ms(now_ms(ctx.clock))

    async def report(sym: str, done: int, total: int) -> None:
        progress[sym] = round(100.0 * done / total, 1)
        ctx.metrics.backfill_progress_ratio.labels(sym).set(done / total if total else 1.0)
        ctx.bus.put_snapshot(Snapshot.BACKFILL, dict(progress))
        ctx.bus.publish(Event.DATA_SOURCE_UPDATE, {"source": "backfill", "symbol": sym,
                                               "percent": progress[sym]},
                        service=NAME, market_ts=ctx.clock.now())

    result = await backfill_symbol(ctx.exchange, lake, symbol, end - days * DAY_MS, end,
                                   report, inline=ctx.inline)
    await ctx.io(lake.resample, symbol)
    funding = await backfill_funding(ctx.exchange, lake, symbol, end - days * DAY_MS, end,
                                     inline=ctx.inline)
    manifests = []
    for interval in ("1m", "5m", "1h"):
        m = await ctx.io(lake.manifest, symbol, interval)
        if m is not None:
            await ctx.io(lake.save_manifest, m)
            await ctx.store.call("save_dataset", m)
            manifests.append(m)
    if not manifests:
        return None
    fm = await ctx.io(lake.funding_manifest, symbol)
    if fm is not None:
        await ctx.io(lake.save_manifest, fm)
        await ctx.store.call("save_dataset", fm)
    if jobs is not None:
        try:
            await ctx.io(jobs.enqueue, "features", symbol)
        except JobsUnavailable as exc:  # the dataset stands; its feature job waits for Redis
            from appliance.services.training import queue_incident

            service_logger(NAME).warning("feature job not queued", symbol=symbol,
                                         reason=str(exc))
            await queue_incident(ctx, NAME, f"feature job of {symbol} not queued: {exc}")
    service_logger(NAME).info("dataset built", symbol=symbol, rows=manifests[0].rows,
                              days_written=result.days_written, missing=result.missing,
                              funding_rows=funding,
                              sha256=manifests[0].sha256)
    return manifests[0]


async def run(ctx: ServiceContext, jobs: Jobs | None) -> None:
    cfg = ctx.cfg.datasets
    lake = Lake(StatePaths(ctx.cfg.state_path).lake, ctx.disk)
    known = {d["dataset_id"] for d in await ctx.store.call("datasets")}
    for m in await ctx.io(lake.manifests):  # written by `methtrader backfill` meanwhile
        if m.dataset_id not in known:
            await ctx.store.call("save_dataset", m)
    on_disk = set(await ctx.io(lake.symbols, "1m"))
    built = {}
    for d in await ctx.store.call("datasets"):
        if d["interval"] != "1m":
            continue
        if d["symbol"] in on_disk:
            built[d["symbol"]] = d
        else:  # the lake lost it (deleted, restored without it): a tradable pair is rebuilt
            service_logger(NAME).warning("dataset recorded but its lake files are gone; it is "
                                         "built again when the pair is tradable",
                                         symbol=d["symbol"])
    refreshed_at: dict[str, float] = {}
    progress: dict[str, float] = {}
    limiter = trio.CapacityLimiter(cfg.concurrency)
    outage = Outage(ctx, NAME)
    failures: list[ExchangeError] = []

    async def one(symbol: str, refresh: bool, scope: trio.CancelScope) -> None:
        async with limiter:
            days = cfg.days  # a refresh skips stored days: it fetches the new and the lost
            try:
                m = await build_dataset(ctx, lake, jobs, symbol, days, progress)
            except ExchangeError as exc:  # the venue's fault; what is in the lake stays
                failures.append(exc)
                scope.cancel()  # the others would meet it too: stop asking, back off
                return
            await outage.ok()  # the venue answers again: not degraded while the rest build
            if m is not None:
                if not refresh:
                    ctx.metrics.datasets_built_total.inc()
                built[symbol] = {"symbol": symbol}
                refreshed_at[symbol] = ctx.clock.now()

    while True:
        ctx.beat(NAME)
        now = ctx.clock.now()
        tradable = serves_1m(ctx, ctx.bus.tradable_pairs() or [])
        new = [s for s in tradable if s not in built]
        stale = [s for s in tradable if s in built
                 and now - refreshed_at.setdefault(s, now) >= cfg.refresh_interval_s]
        hold = isinstance(ctx.clock, VirtualClock) and bool(new)
        if hold:  # sim/replay: market time waits for a new pair's history
            ctx.clock.hold(NAME)
        try:
            async with trio.open_nursery() as nursery:
                for symbol in new:
                    nursery.start_soon(one, symbol, False, nursery.cancel_scope)
                for symbol in stale:
                    nursery.start_soon(one, symbol, True, nursery.cancel_scope)
        finally:
            if hold:
                ctx.clock.release(NAME)
        if failures:  # degraded, not crashed: the backfills resume after the backoff
            exc = failures[0]
            failures.clear()
            await outage.failed(exc)
            continue
        await outage.ok()
        await ctx.clock.sleep_until(now + cfg.check_interval_s)

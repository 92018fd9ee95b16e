"""Layer 1, pair discovery: which USDT perpetuals are liquid enough to trade.

Every ``ticker_interval_s`` of market time it re-reads the tickers and applies the pairlist
filters (status Trading, quote USDT, 24h turnover above the bar), so a pair that crosses the bar
is tradable within that interval; the instrument list itself is refreshed every ``interval_s``
(hourly). The tradable set goes to the bus (``tradable_pairs``), every change is a
``pair_events`` row and a ``pair_event`` on the bus, and ``pairs_total`` follows the set.

While the exchange's rate-limit usage has stayed above 90% for 5 minutes, or the venue refused
one of discovery's calls for its rate limit in the last ``throttle_window_s`` (5 minutes), both
intervals are multiplied by ``throttle_factor`` (×4) and a ``discovery_throttled`` event (with
its reason) says so: discovery yields to trading. Its calls give up at the first rate-limit
refusal (:func:`~appliance.exchange.base.yielding_to_rate_limits`) instead of retrying, so a
rate-limit storm costs one request per outage backoff.
"""

from __future__ import annotations

from collections import deque

from appliance.config import DiscoveryConfig
from appliance.context import ServiceContext
from appliance.contracts import Event
from appliance.domain import Instrument, Ticker
from appliance.exchange.base import (VOLUME_BAR, Exchange, ExchangeError, RateLimited,
                                     yielding_to_rate_limits)
from appliance.logs import service_logger
from appliance.outage import Outage
from appliance.pairlist import PairChange, PairFilter, PairRow, candidates, changes, select
from appliance.pairlist.quote import QuoteFilter
from appliance.pairlist.status import StatusFilter
from appliance.pairlist.turnover import TurnoverFilter
from appliance.risk import sustained_above

NAME = "discovery"


def filters_for(exchange: Exchange, cfg: DiscoveryConfig) -> list[PairFilter]:
    """Replay data comes in many quote currencies, so it skips the quote and volume bar."""
    chain: list[PairFilter] = [StatusFilter()]
    if VOLUME_BAR in exchange.capabilities:
        chain += [QuoteFilter(cfg.quote), TurnoverFilter(cfg.min_turnover_usd)]
    return chain


def evaluate(instruments: list[Instrument], tickers: list[Ticker],
             chain: list[PairFilter]) -> list[PairRow]:
    return select(candidates(instruments, tickers), chain)


async def discover_once(exchange: Exchange, cfg: DiscoveryConfig) -> list[PairRow]:
    """One discovery pass without side effects (``methtrader discover``)."""
    return evaluate(await exchange.instruments(), await exchange.tickers(),
                    filters_for(exchange, cfg))


async def run(ctx: ServiceContext) -> None:
    log = service_logger(NAME)
    cfg = ctx.cfg.discovery
    chain = filters_for(ctx.exchange, cfg)
    previous = {s: PairRow(s, st, "USDT", t, tr) for s, st, t, tr in
                await ctx.store.call("load_pairs")}
    instruments: list[Instrument] | None = None
    instruments_at = float("-inf")
    usage: deque[tuple[float, float]] = deque()
    throttled = False
    refused_at = float("-inf")  # market time of the venue's last rate-limit refusal
    outage = Outage(ctx, NAME)
    while True:
        ctx.beat(NAME)
        now = ctx.clock.now()
        usage.append((now, ctx.exchange.rate_limit_usage()))
        while len(usage) > 2 and usage[1][0] < now - cfg.throttle_window_s:
            usage.popleft()
        refused = now - refused_at < cfg.throttle_window_s
        now_throttled = refused or sustained_above(list(usage), now, cfg.throttle_usage,
                                                   cfg.throttle_window_s)
        if now_throttled != throttled:
            throttled = now_throttled
            reason = "rate_limited" if refused else "usage" if throttled else None
            ctx.bus.publish(Event.DISCOVERY_THROTTLED, {"throttled": throttled,
                                                    "factor": cfg.throttle_factor,
                                                    "reason": reason},
                            service=NAME, market_ts=now)
            log.warning("discovery throttled" if throttled else "discovery unthrottled",
                        usage=usage[-1][1], reason=reason)
        factor = cfg.throttle_factor if throttled else 1.0
        try:
            with yielding_to_rate_limits():
                if instruments is None or now - instruments_at >= cfg.interval_s * factor:
                    instruments, instruments_at = await ctx.exchange.instruments(), now
                tickers = await ctx.exchange.tickers()
        except ExchangeError as exc:  # the venue's fault: degraded, not crashed
            if isinstance(exc, RateLimited):
                refused_at = now
            await outage.failed(exc)
            continue
        await outage.ok()
        rows = evaluate(instruments, tickers, chain)
        found = changes(previous, rows)
        await ctx.store.call("save_pairs", rows, found, now)
        tradable = [r.symbol for r in rows if r.tradable]
        ctx.bus.set_tradable_pairs(tradable)
        ctx.metrics.pairs_total.set(len(tradable))
        for change in found:
            _announce(ctx, change, now)
        previous = {r.symbol: r for r in rows}
        await ctx.clock.sleep_until(now + cfg.ticker_interval_s * factor)


def _announce(ctx: ServiceContext, change: PairChange, now: float) -> None:
    ctx.bus.publish(Event.PAIR_EVENT, {"symbol": change.symbol, "event": change.event,
                                   "turnover_24h": change.turnover_24h},
                    service=NAME, market_ts=now)

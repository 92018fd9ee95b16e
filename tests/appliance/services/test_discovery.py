from dataclasses import replace

import pytest
import trio

from appliance.exchange.base import RateLimited
from appliance.exchange.sim import SimExchange
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, UNIVERSE
from appliance.services import discovery

# SEIUSDT trades 45 days, pauses 15 (a 60-day cycle): day 825 after the epoch it is delisted.
BEFORE_DELISTING = (EPOCH_MS + 824 * DAY_MS + 23 * 3_600_000) / 1000
BEFORE_RELISTING = (EPOCH_MS + 839 * DAY_MS + 23 * 3_600_000) / 1000


def events(ctx, kind="pair_event"):
    return [(e["data"]["symbol"], e["data"]["event"]) for e in ctx.bus.events_since(0, [kind])]


@pytest.mark.trio
async def test_discovery_publishes_the_tradable_set_and_records_changes(make_ctx, autojump_clock):
    ctx = make_ctx(speed=600, start=BEFORE_DELISTING)
    with trio.move_on_after(2 * 3600 / 600):  # two market hours
        await discovery.run(ctx)
    tradable = ctx.bus.tradable_pairs()
    assert "BTCUSDT" in tradable and "XLMUSDT" not in tradable  # XLM is under the $10M bar
    assert ctx.metrics.pairs_total._value.get() == len(tradable)
    assert ("SEIUSDT", "delisted") in events(ctx)
    assert ("BTCUSDT", "listed") in events(ctx)  # first discovery lists what it sees
    rows = ctx.store.store.sql("SELECT symbol, event FROM pair_events")
    assert ("SEIUSDT", "delisted") in rows
    pairs = dict(ctx.store.store.sql("SELECT symbol, tradable FROM pairs"))
    assert pairs["BTCUSDT"] is True and pairs["XLMUSDT"] is False


@pytest.mark.trio
async def test_relisting_is_seen_within_the_ticker_interval(make_ctx, autojump_clock):
    ctx = make_ctx(speed=600, start=BEFORE_RELISTING)
    with trio.move_on_after(3600 / 600 + 2):  # the relisting happens after 1 market hour
        await discovery.run(ctx)
    listed = [e for e in ctx.bus.events_since(0, ["pair_event"])
              if e["data"] == {**e["data"], "symbol": "SEIUSDT", "event": "listed"}]
    assert len(listed) == 1
    relist_at = (EPOCH_MS + 840 * DAY_MS) / 1000
    assert relist_at <= listed[0]["market_ts"] < relist_at + ctx.cfg.discovery.ticker_interval_s


class BusyExchange(SimExchange):
    """The sim market with a rate-limit reading the test controls."""

    usage = 0.0

    def rate_limit_usage(self) -> float:
        return self.usage


@pytest.mark.trio
async def test_sustained_rate_limit_usage_throttles_discovery(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60, start=BEFORE_DELISTING)
    ctx.exchange = BusyExchange(ctx.clock, ctx.cfg.sim, inline=True)
    calls = []
    real_tickers = ctx.exchange.tickers

    async def counted():
        calls.append(ctx.clock.now())
        return await real_tickers()

    ctx.exchange.tickers = counted
    ctx.exchange.usage = 0.97
    with trio.move_on_after(15 * 60 / 60):  # 15 market minutes
        await discovery.run(ctx)
    flips = [e["data"]["throttled"] for e in ctx.bus.events_since(0, ["discovery_throttled"])]
    assert flips == [True]
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    base = ctx.cfg.discovery.ticker_interval_s
    assert gaps[0] == pytest.approx(base, abs=1)
    assert gaps[-1] == pytest.approx(base * ctx.cfg.discovery.throttle_factor, abs=1)
    assert all(g == pytest.approx(base, abs=1) for g in gaps
               if calls[gaps.index(g)] < calls[0] + 300)


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_an_exchange_outage_degrades_discovery_instead_of_crashing_it(make_ctx,
                                                                            autojump_clock):
    """Issue 11, hole 1: discovery let ExchangeError escape; now it waits the venue out."""
    from tests.appliance.services.test_feed import FlakyVenue
    ctx = make_ctx(speed=60)
    venue = FlakyVenue(ctx.exchange)
    venue.down = True
    ctx.exchange = venue
    with trio.move_on_after(20):
        await discovery.run(ctx)
    assert "discovery" in ctx.degraded and ctx.bus.tradable_pairs() is None
    venue.down = False
    with trio.move_on_after(20):
        await discovery.run(ctx)
    assert ctx.degraded == {} and "BTCUSDT" in ctx.bus.tradable_pairs()


@pytest.mark.trio
async def test_discovery_picks_the_tradable_ones_of_a_200_pair_universe(make_ctx, autojump_clock):
    """``sim.pairs = 200``: the real pairlist keeps exactly the Trading symbols above $10M of
    24h turnover (dozens, generated ones among them) and drops the long tail."""
    ctx = make_ctx(speed=600, start=(EPOCH_MS + 1040 * DAY_MS) / 1000)
    ctx.exchange = SimExchange(ctx.clock, replace(ctx.cfg.sim, pairs=200), inline=True)
    with trio.move_on_after(60 / 600):  # one market minute: the first pass
        await discovery.run(ctx)
    market, now = ctx.exchange.market, int(ctx.clock.now() * 1000)
    trading = {i.symbol for i in market.instruments(now) if i.status == "Trading"}
    above = {t.symbol for t in market.tickers(now) if t.turnover_24h > 10e6}
    tradable = set(ctx.bus.tradable_pairs())
    assert tradable == trading & above
    assert len(tradable) >= 60 and len(tradable - {s.symbol for s in UNIVERSE}) >= 40
    pairs = dict(ctx.store.store.sql("SELECT symbol, tradable FROM pairs"))
    assert set(pairs) == {i.symbol for i in market.instruments(now)}  # Closed ones too
    assert {s for s, ok in pairs.items() if ok} == tradable


class StormyExchange(SimExchange):
    """The sim market behind a rate-limit storm the test switches on and off."""

    storm = False

    async def tickers(self):
        if self.storm:
            raise RateLimited("/v5/market/tickers: retCode 10006: Too many visits")
        return await super().tickers()


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_a_rate_limit_refusal_throttles_discovery_at_once(make_ctx, autojump_clock):
    """Issue 11, rate-limit storm: discovery throttles (an event with the reason, ×4 intervals)
    as soon as the venue refuses it for the rate limit, degraded meanwhile, and runs at its
    throttled pace for ``throttle_window_s`` after the storm before it unthrottles."""
    ctx = make_ctx(speed=1)
    ctx.exchange = StormyExchange(ctx.clock, ctx.cfg.sim, inline=True)
    ctx.exchange.storm = True
    calls = []
    real = ctx.exchange.tickers

    async def counted():
        calls.append(ctx.clock.now())
        return await real()

    ctx.exchange.tickers = counted
    cfg = ctx.cfg.discovery
    async with trio.open_nursery() as nursery:
        nursery.start_soon(discovery.run, ctx)
        await trio.sleep(20)
        assert "discovery" in ctx.degraded
        flips = [e["data"] for e in ctx.bus.events_since(0, ["discovery_throttled"])]
        assert flips == [{"throttled": True, "factor": cfg.throttle_factor,
                          "reason": "rate_limited"}]
        ctx.exchange.storm = False
        lifted = ctx.clock.now()
        await trio.sleep(cfg.throttle_window_s + 2 * cfg.ticker_interval_s * cfg.throttle_factor)
        nursery.cancel_scope.cancel()
    assert "discovery" not in ctx.degraded and ctx.bus.tradable_pairs()
    flips = [e["data"]["throttled"] for e in ctx.bus.events_since(0, ["discovery_throttled"])]
    assert flips == [True, False]
    after = [c for c in calls if c > lifted + 10]
    gaps = [b - a for a, b in zip(after, after[1:])]
    assert gaps[0] == pytest.approx(cfg.ticker_interval_s * cfg.throttle_factor, abs=1)
    assert gaps[-1] == pytest.approx(cfg.ticker_interval_s, abs=1)

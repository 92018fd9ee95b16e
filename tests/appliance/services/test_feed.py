from dataclasses import replace

import numpy as np
import pytest
import trio

from appliance.bar_hub import BarHub
from appliance.bars import aggregate_buckets
from appliance.clock import MINUTE_MS, floor_minute_ms, now_ms
from appliance.services import feed


def test_minutes_to_fetch_never_skips():
    end = 1000 * MINUTE_MS
    assert feed.minutes_to_fetch(None, end, 60, 1440) == (end - 60 * MINUTE_MS, end)
    assert feed.minutes_to_fetch(end - MINUTE_MS, end, 60, 1440) is None
    assert feed.minutes_to_fetch(end - 11 * MINUTE_MS, end, 60, 1440) == (end - 10 * MINUTE_MS,
                                                                          end)
    # far behind: the next minute after the last stored one, at most max_catchup of them
    assert feed.minutes_to_fetch(0, end, 60, 100) == (MINUTE_MS, 101 * MINUTE_MS)


def stored(ctx):
    return ctx.store.store.sql("SELECT symbol, open_time, close FROM candles ORDER BY 1, 2")


@pytest.mark.trio
async def test_feed_writes_every_closed_minute_once_and_nothing_open(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60)
    with trio.move_on_after(30 * 60 / 60):  # thirty virtual minutes
        await feed.run(ctx, BarHub())
    rows = stored(ctx)
    now_closed = floor_minute_ms(now_ms(ctx.clock))
    symbols = sorted({r[0] for r in rows})
    assert len(symbols) >= 15 and "BTCUSDT" in symbols
    assert "XLMUSDT" not in symbols  # below the $10M bar
    for sym in symbols:
        times = np.array([r[1] for r in rows if r[0] == sym])
        assert times.max() < now_closed  # the minute in progress is never written
        assert np.all(np.diff(times) == MINUTE_MS)  # every minute, once
        assert len(times) >= 60 + 25  # warm-up hour plus the live half hour
    # the stored candles are the market's candles
    btc = np.array([(r[1], r[2]) for r in rows if r[0] == "BTCUSDT"])
    truth = ctx.exchange.market.candles("BTCUSDT", int(btc[0, 0]), int(btc[-1, 0]) + MINUTE_MS)
    assert np.array_equal(btc[:, 1], truth[:, 4])
    events = ctx.bus.events_since(0, kinds=["data_source_update"])
    assert events and events[-1]["data"]["source"] == "sim" and events[-1]["data"]["candles"] > 0


@pytest.mark.trio
async def test_feed_restarts_where_it_stopped_without_gaps(make_ctx, autojump_clock):
    ctx = make_ctx(speed=600)
    with trio.move_on_after(1):
        await feed.run(ctx, BarHub())
    first = len(stored(ctx))
    await trio.sleep(3)  # the service is down for 30 virtual minutes
    with trio.move_on_after(1):
        await feed.run(ctx, BarHub())
    rows = stored(ctx)
    assert len(rows) > first
    times = np.array([r[1] for r in rows if r[0] == "ETHUSDT"])
    assert np.all(np.diff(times) == MINUTE_MS)


@pytest.mark.trio
async def test_feed_follows_the_tradable_set_on_the_bus(make_ctx, autojump_clock):
    ctx = make_ctx(speed=600)
    ctx.bus.set_tradable_pairs(["BTCUSDT", "XLMUSDT"])
    with trio.move_on_after(1):
        await feed.run(ctx, BarHub())
    assert {r[0] for r in stored(ctx)} == {"BTCUSDT", "XLMUSDT"}


@pytest.mark.trio
async def test_a_feed_far_behind_stores_every_minute_and_holds_the_clock(make_ctx,
                                                                        autojump_clock):
    """Issue 11, hole 5: a pass that fell more than max_catchup_minutes behind used to skip
    the minutes in between, silently."""
    ctx = make_ctx(speed=600)
    ctx.cfg = replace(ctx.cfg, feed=replace(ctx.cfg.feed, max_catchup_minutes=3,
                                            max_lag_minutes=2))
    ctx.bus.set_tradable_pairs(["BTCUSDT", "ETHUSDT"])
    with trio.move_on_after(1):
        await feed.run(ctx, BarHub())
    await trio.sleep(3)  # down for 30 market minutes: ten passes' worth of catching up
    f = feed.Feed(ctx, BarHub())
    await f.start()
    await f.one_pass()
    assert ctx.clock.held  # far behind: market time stands still
    held_at, passes = ctx.clock.now(), 1
    while ctx.clock.held and passes < 20:
        await trio.sleep(0.2)  # real time passes, market time does not
        assert ctx.clock.now() == held_at
        await f.one_pass()
        passes += 1
    assert 5 <= passes < 20
    with trio.move_on_after(0.5):
        await feed.run(ctx, BarHub())
    for symbol in ("BTCUSDT", "ETHUSDT"):
        times = np.array([r[1] for r in stored(ctx) if r[0] == symbol])
        assert np.all(np.diff(times) == MINUTE_MS)  # every minute, once: nothing skipped
        assert times[-1] >= floor_minute_ms(now_ms(ctx.clock)) - 3 * MINUTE_MS
    assert not ctx.clock.held  # released once caught up


@pytest.mark.trio
async def test_closed_bars_fan_out_once_each_and_equal_the_lake_aggregation(make_ctx,
                                                                           autojump_clock):
    ctx = make_ctx(speed=60)
    ctx.bus.set_tradable_pairs(["BTCUSDT", "ETHUSDT"])
    hub = BarHub()
    bars = hub.subscribe("test", ("5m", "1h"))
    with trio.move_on_after(2 * 3600 / 60):  # two market hours
        await feed.run(ctx, hub)
    got = []
    while True:
        try:
            got.append(bars.receive_nowait())
        except trio.WouldBlock:
            break
    five = [b for b in got if b.interval == "5m"]
    ends = [b.end_ms for b in five]
    assert ends == sorted(set(ends)) and np.all(np.diff(ends) == 300_000)  # each once, in order
    assert len(five) >= 20 and [b for b in got if b.interval == "1h"]
    last = five[-1]
    assert last.end_ms <= floor_minute_ms(now_ms(ctx.clock))  # only closed bars
    minutes = ctx.exchange.market.candles("BTCUSDT", last.open_ms, last.end_ms)
    assert np.array_equal(last.bars["BTCUSDT"], aggregate_buckets(minutes, 300_000)[0])


class FlakyVenue:
    """The sim exchange behind a switch that makes every call fail (a venue outage)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.down = False

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        async def call(*args, **kwargs):
            if self.down:
                from appliance.exchange.base import ExchangeError
                raise ExchangeError("HTTP 503 from the venue")
            return await attr(*args, **kwargs)
        return call if name in ("klines_array", "tickers", "instruments") else attr


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_an_exchange_outage_degrades_the_feed_and_it_refills_every_minute(
        make_ctx, autojump_clock):
    """Issue 11, hole 1: an outage used to crash the feed until it was marked failed for good.
    Now it is a state: degraded (with an incident) while the venue is down, back on its own
    within the 10 s backoff cap after, and every minute of the outage is fetched."""
    ctx = make_ctx(speed=60)
    venue = FlakyVenue(ctx.exchange)
    ctx.exchange = venue
    seen: dict[str, object] = {}

    async def outage_for(start_s: float, length_s: float) -> None:
        await trio.sleep(start_s)
        venue.down = True
        await trio.sleep(length_s / 2)
        seen["degraded"] = dict(ctx.degraded)
        await trio.sleep(length_s / 2)
        venue.down = False
        await trio.sleep(12.0)  # the longest backoff, and one pass
        seen["after"] = dict(ctx.degraded)

    with trio.move_on_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed.run, ctx, BarHub())
            nursery.start_soon(outage_for, 5.0, 30.0)
    assert "exchange outage" in seen["degraded"]["feed"]
    assert seen["after"] == {}
    kinds = [r[0] for r in ctx.store.store.sql(
        "SELECT kind FROM incidents WHERE service = 'feed' ORDER BY ts")]
    assert kinds == ["outage", "recovered"]  # one incident each way, not one per try
    rows = stored(ctx)
    btc = np.array([r[1] for r in rows if r[0] == "BTCUSDT"])
    assert np.all(np.diff(btc) == MINUTE_MS)  # the outage's minutes were refilled
    assert btc.max() >= floor_minute_ms(now_ms(ctx.clock)) - 3 * MINUTE_MS

import numpy as np
import pytest
import trio

from appliance.clock import MINUTE_MS, floor_minute_ms, now_ms
from appliance.services import feed


def test_minutes_to_fetch():
    end = 1000 * MINUTE_MS
    assert feed.minutes_to_fetch(None, end, 60, 1440) == (end - 60 * MINUTE_MS, end)
    assert feed.minutes_to_fetch(end - MINUTE_MS, end, 60, 1440) is None
    assert feed.minutes_to_fetch(end - 11 * MINUTE_MS, end, 60, 1440) == (end - 10 * MINUTE_MS,
                                                                          end)
    assert feed.minutes_to_fetch(0, end, 60, 100) == (end - 100 * MINUTE_MS, end)


def stored(ctx):
    return ctx.store.store.sql("SELECT symbol, open_time, close FROM candles ORDER BY 1, 2")


@pytest.mark.trio
async def test_feed_writes_every_closed_minute_once_and_nothing_open(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60)
    with trio.move_on_after(30 * 60 / 60):  # thirty virtual minutes
        await feed.run(ctx)
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
        await feed.run(ctx)
    first = len(stored(ctx))
    await trio.sleep(3)  # the service is down for 30 virtual minutes
    with trio.move_on_after(1):
        await feed.run(ctx)
    rows = stored(ctx)
    assert len(rows) > first
    times = np.array([r[1] for r in rows if r[0] == "ETHUSDT"])
    assert np.all(np.diff(times) == MINUTE_MS)


@pytest.mark.trio
async def test_feed_follows_the_tradable_set_on_the_bus(make_ctx, autojump_clock):
    ctx = make_ctx(speed=600)
    ctx.bus.set_tradable_pairs(["BTCUSDT", "XLMUSDT"])
    with trio.move_on_after(1):
        await feed.run(ctx)
    assert {r[0] for r in stored(ctx)} == {"BTCUSDT", "XLMUSDT"}

"""The trading engine's rehearsal of a bar's path: it goes over the checks and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from appliance.paths import StatePaths
from appliance.rehearsal import WINDOW_S
from appliance.services import trading
from tests.appliance.services.test_trading import fills, trade_for, with_model


def snapshot(ctx, engine: trading.TradingEngine) -> dict:
    """Everything a rehearsal could change that a bar, an operator or the venue reads."""
    gw, journal = engine.gateway, StatePaths(ctx.cfg.state_path).orders_journal
    book = engine.bar_books["5m"]
    return {
        "books": {i: (b.cash, b.state, {s: (h.qty, h.cost) for s, h in b.positions.items()})
                  for i, b in [("house", engine.ledger.house), *engine.ledger.books.items()]},
        "dirty": set(engine.ledger.dirty),
        "gateway": (gw._order_seq, list(gw.order_times), set(gw.halted), gw.day_start),
        "kill": (gw.kill.value, gw.kill.reads, gw.kill.ahead),
        "journal": journal.read_bytes() if journal.exists() else b"",
        "metrics": sorted((s.name, tuple(sorted(s.labels.items())), s.value)
                          for m in ctx.metrics.registry.collect() for s in m.samples
                          if not s.name.endswith("_created")),
        "tokens": (ctx.bus.switch_token(), ctx.bus.state_token()),
        "rows": (book._ring.copy(), book._count.copy(), book.features._ring.copy(),
                 {k: v.copy() for k, v in book.features._smoothers.items()}),
    }


def same(a: dict, b: dict) -> bool:
    ra, rb = a.pop("rows"), b.pop("rows")
    arrays = all(np.array_equal(x, y, equal_nan=True) for x, y in zip(ra[:3], rb[:3]))
    smoothers = ra[3].keys() == rb[3].keys() and all(
        np.array_equal(ra[3][k], rb[3][k], equal_nan=True) for k in ra[3])
    return arrays and smoothers and a == b


@pytest.mark.trio
@pytest.mark.timeout(180)
async def test_a_rehearsal_checks_the_bars_orders_and_changes_nothing(make_ctx, autojump_clock):
    """With a per-symbol limit far below what the model wants, every bar's orders are refused:
    the rehearsal sizes and checks them again (the refusal path included), yet no order id,
    journal line, metric, refusal count, book, switch reading or feature state moves."""
    ctx = make_ctx(speed=60)
    await with_model(ctx, max_symbol_notional=5.0, rehearse_ms=0.0)
    engine = trading.TradingEngine(ctx)
    await trade_for(ctx, engine, 1.5)
    assert not fills(ctx, "prod")
    refused = ctx.metrics.orders_refused_total.labels("symbol_notional_cap")._value.get()
    assert refused > 0
    before = snapshot(ctx, engine)
    for _ in range(3):
        assert engine.rehearse() > 0  # orders sized and checked (and refused) again
    assert same(snapshot(ctx, engine), before)
    begun = engine.gateway.begin(engine.ledger, engine.marks)  # the next bar's batch
    assert not begun.view.maintenance_mode
    assert engine.gateway.kill.reads == before["kill"][1]  # on the reading taken ahead


@pytest.mark.trio
@pytest.mark.timeout(180)
async def test_a_rehearsal_goes_over_the_intervals_whose_bars_close_next(make_ctx,
                                                                       autojump_clock):
    """Five minutes before the hour the 5m and the 1h bars close together: both books are
    rehearsed; at any other 5m close only the 5m book."""
    ctx = make_ctx(speed=60)
    await with_model(ctx)
    engine = trading.TradingEngine(ctx)
    await trade_for(ctx, engine, 2.0)
    assert set(engine.last_decided) == {"5m", "1h"}
    gone_over: list[str] = []
    for interval, book in engine.bar_books.items():
        book.rehearse = lambda i=interval, f=book.rehearse: gone_over.append(i) or f()
    hour = engine.bar_ms - engine.bar_ms % 3_600_000
    engine.bar_ms = hour + 1_800_000  # the next bar closes at half past
    assert engine.rehearse() >= 0 and gone_over == ["5m"]
    gone_over.clear()
    engine.bar_ms = hour + 3_300_000  # ... on the hour
    engine.rehearse()
    assert sorted(gone_over) == ["1h", "5m"]


@pytest.mark.trio
@pytest.mark.timeout(180)
@pytest.mark.parametrize("every_ms", [5.0, 0.0])
async def test_the_loop_rehearses_between_a_bars_close_and_its_arrival_only(
        make_ctx, autojump_clock, every_ms):
    """Inside `run`'s loop: rehearsals come after the next bar has closed on the market clock
    and before it is decided, never earlier in the interval, at most a window's worth a bar;
    the prod book trades as without them; ``rehearse_ms = 0`` turns them off."""
    ctx = make_ctx(speed=60)
    await with_model(ctx, rehearse_ms=every_ms)
    engine = trading.TradingEngine(ctx)
    calls: list[tuple[int, int | None, int | None]] = []
    rehearse = engine.rehearse

    def counted() -> int:
        calls.append((engine.now_ms(), engine.next_close_ms(), engine.bar_ms))
        return rehearse()

    engine.rehearse = counted
    await trade_for(ctx, engine, 1.5)
    assert fills(ctx, "prod")
    if not every_ms:
        assert calls == []
        return
    assert all(now >= close for now, close, _ in calls)  # the next bar had closed
    bars = {bar for _, _, bar in calls}
    assert len(bars) >= 6  # most 5m bars of the hour and a half were rehearsed for
    per_bar = max(sum(1 for c in calls if c[2] == bar) for bar in bars)
    assert per_bar <= WINDOW_S / (every_ms / 1000) + 1  # bounded by the window


@pytest.mark.trio
@pytest.mark.timeout(180)
async def test_a_failing_rehearsal_stops_rehearsals_not_trading(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60)
    await with_model(ctx)
    engine = trading.TradingEngine(ctx)
    calls = []

    def broken() -> int:
        calls.append(engine.bar_ms)
        raise RuntimeError("a bug in the rehearsal")

    engine.rehearse = broken
    await trade_for(ctx, engine, 1.0)
    assert len(calls) == 1  # the first one failed; none after
    assert fills(ctx, "prod")


@pytest.mark.trio
@pytest.mark.timeout(180)
async def test_no_rehearsal_while_the_feed_holds_market_time_to_catch_up(make_ctx,
                                                                         autojump_clock):
    """On the virtual clock a feed that falls behind holds market time; the CPU is then the
    feed's, and the loop waits for the bar without rehearsing. Without a feed at all the bar
    never comes, and the rehearsals stop after their window."""
    ctx = make_ctx(speed=60)
    await with_model(ctx)
    engine = trading.TradingEngine(ctx)
    await trade_for(ctx, engine, 1.0)
    calls: list[int] = []
    rehearse = engine.rehearse
    engine.rehearse = lambda: calls.append(engine.now_ms()) or rehearse()
    hub = trading.BarHub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trading.run, ctx, engine, hub)
        close = engine.next_close_ms()
        await trio.sleep(max(0.0, (close - engine.now_ms()) / 1000 / ctx.clock.speed) + 0.001)
        ctx.clock.hold("feed")  # the next bar has closed, and the feed is behind
        await trio.sleep(1.0)
        assert calls == []
        ctx.clock.release("feed")
        await trio.sleep(WINDOW_S)
        # the window counts from the close, the held second inside it
        assert 0.5 / 0.005 <= len(calls) <= (WINDOW_S - 1.0) / 0.005 + 1
        done = len(calls)
        await trio.sleep(2.0)
        assert len(calls) == done  # the window has ended: no bar, no more rehearsals
        nursery.cancel_scope.cancel()

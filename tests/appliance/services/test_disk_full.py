"""A full disk (writes refused with ENOSPC) is a state, not a crash: the store rolls back, the
supervisor waits degraded instead of counting crashes, the appliance says so once, and the
trading engine is REDUCING (no new or larger positions, reductions and a flatten still go) and
writes everything once the disk takes writes again."""

from __future__ import annotations

import errno
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
import trio

from appliance import chaos_hook
from appliance.config import SupervisorConfig
from appliance.disk_full import NAME as DISK, DiskWatch
from appliance.domain import Side
from appliance.services import trading
from appliance.services.heartbeat import heartbeat_payload
from appliance.supervision import DEGRADED, DISK_MAX_WAIT_S, RUNNING, Supervisor
from data.disk import DiskState
from tests.appliance.services.test_trading import fills, rows, trade_for, with_model

pytestmark = pytest.mark.trio


def on_trio_time(ctx) -> DiskState:
    """The context's disk state, its injections timed on trio's (autojump) clock."""
    ctx.store.store.disk = DiskState(monotonic=trio.current_time)
    return ctx.disk


def candles(n: int) -> dict[str, np.ndarray]:
    t = np.arange(n) * 60_000.0
    return {"BTCUSDT": np.column_stack([t, *np.ones((6, n))])}


@pytest.mark.timeout(30)
async def test_a_refused_write_rolls_back_whole_and_a_commit_ends_the_episode(make_ctx,
                                                                            autojump_clock):
    ctx = make_ctx()
    disk = on_trio_time(ctx)
    store = ctx.store.store
    disk.inject(10.0)
    with pytest.raises(OSError) as caught:
        store.upsert_candle_batches("1m", candles(3))
    assert caught.value.errno == errno.ENOSPC
    assert store.candle_count() == 0 and disk.full and disk.refused == {"duckdb": 1}
    store.sql("BEGIN TRANSACTION")
    store.sql("COMMIT")
    assert disk.full  # a commit that wrote nothing proves nothing
    await trio.sleep(10.0)
    assert disk.full  # the space is back, but no write has said so yet
    store.upsert_candle_batches("1m", candles(3))
    assert store.candle_count() == 3 and not disk.full


@pytest.mark.timeout(30)
async def test_a_full_disk_is_no_crash_the_service_waits_degraded_and_never_fails(
        autojump_clock):
    cfg = SupervisorConfig(backoff_initial_s=0.1, backoff_jitter=0.0, max_crashes=3,
                           failure_window_s=600.0)
    kinds: list[str] = []

    async def record(service, kind, message, tb):
        kinds.append(kind)

    sup = Supervisor(cfg, on_incident=record)
    calls: list[float] = []

    async def writer():
        calls.append(trio.current_time())
        if len(calls) <= 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.supervise, "writer", writer)
        await trio.sleep(0.1)
        st = sup.snapshot()["writer"]
        assert st["state"] == DEGRADED and "disk full" in st["last_error"]
        await trio.sleep(60.0)
        assert len(calls) == 11 and sup.snapshot()["writer"]["state"] == RUNNING
        gaps = np.diff(calls)
        assert gaps[0] == pytest.approx(0.5) and max(gaps) == pytest.approx(DISK_MAX_WAIT_S)
        assert kinds == [] and sup.states["writer"].restarts == 0  # no crash on record
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(30)
async def test_chaos_disk_full_is_bounded_and_refused_where_real_orders_are(make_ctx,
                                                                          autojump_clock):
    ctx = make_ctx()
    disk = on_trio_time(ctx)
    assert await chaos_hook.disk_full_handler(ctx, {"seconds": 5}) == {"seconds": 5.0}
    assert disk.injected_s == 5.0
    for bad in (0, -1, 601, "nan"):
        with pytest.raises(ValueError):
            await chaos_hook.disk_full_handler(ctx, {"seconds": bad})
    ctx.cfg = replace(ctx.cfg, general=replace(ctx.cfg.general, exchange="bybit"),
                      bybit=replace(ctx.cfg.bybit, paper=False))
    disk.lift()
    with pytest.raises(PermissionError, match="chaos.enabled"):
        await chaos_hook.disk_full_handler(ctx, {"seconds": 5})
    ctx.cfg = replace(ctx.cfg, chaos=replace(ctx.cfg.chaos, enabled=True))
    with pytest.raises(PermissionError):  # never with real orders, even when enabled
        await chaos_hook.disk_full_handler(ctx, {"seconds": 5})
    assert disk.injected_s == 0.0


@pytest.mark.timeout(30)
async def test_the_appliance_says_once_that_the_disk_is_full_and_when_it_is_back(make_ctx,
                                                                               autojump_clock):
    ctx = make_ctx()
    disk = on_trio_time(ctx)
    watch = DiskWatch(ctx)
    disk.inject(30.0)
    with pytest.raises(OSError):
        await ctx.store.call("record_incident", "feed", "x", "a write", None)
    for _ in range(10):
        await watch.tick()
        await trio.sleep(0.3)

    def said(kind: str) -> list[dict]:
        return [e["data"] for e in ctx.bus.events_since(0, kinds=["incident"])
                if e["data"]["service"] == DISK and e["data"]["kind"] == kind]

    (outage,) = said("outage")
    assert "disk full" in outage["message"] and "only reducing" in outage["message"]
    shown = heartbeat_payload(ctx, {"trading": {"state": "running"}}, 0.0)
    assert shown["services"]["trading"]["state"] == "degraded"
    assert shown["services"]["trading"]["last_error"].startswith("disk full")
    assert shown["disk"]["full"] and shown["disk"]["refused"]["duckdb"] == 1
    assert 2 <= disk.refused["probe"] <= 4  # probed about once a second, not at every tick
    assert rows(ctx, "SELECT * FROM incidents") == []  # DuckDB cannot take it yet
    await trio.sleep(30.0)
    await watch.tick()  # the probe goes through: the episode ends
    (back,) = said("recovered")
    assert "takes writes again" in back["message"]
    assert not disk.full
    shown = heartbeat_payload(ctx, {"trading": {"state": "running"}}, 0.0)
    assert shown["services"]["trading"]["state"] == "running"
    recorded = rows(ctx, "SELECT kind, message FROM incidents WHERE service = ? ORDER BY id",
                    [DISK])
    assert [r["kind"] for r in recorded] == ["outage", "recovered"]
    disk.inject(5.0)
    await watch.tick()
    assert len(said("outage")) == 1  # the watch learns of a full disk from a refused write
    with pytest.raises(OSError):
        await ctx.store.call("record_incident", "feed", "x", "a write", None)
    await watch.tick()
    await watch.tick()
    assert len(said("outage")) == 2  # a new episode is said again, once


@pytest.mark.timeout(240)
async def test_a_full_disk_refuses_new_positions_lets_reductions_through_and_loses_nothing(
        make_ctx, autojump_clock):
    ctx = make_ctx(speed=60)
    disk = on_trio_time(ctx)
    await with_model(ctx)
    engine = trading.TradingEngine(ctx)
    await trade_for(ctx, engine, 2)
    held = {p.symbol: p.qty for p in await ctx.exchange.positions()}
    assert held, "the model opened nothing before the disk filled"
    written_fills = len(fills(ctx))
    disk.inject(600.0)
    with pytest.raises(OSError):  # a write meets the full disk: the engine learns of it
        await ctx.store.call("record_incident", "feed", "x", "a write", None)

    symbol, qty = next(iter(held.items()))
    step = engine.instruments[symbol].qty_step
    (book,) = engine.ledger.prod_books()
    batch = engine.gateway.begin(engine.ledger, engine.marks)
    assert batch.view.disk_full
    grow, shrink = (Side.BUY, Side.SELL) if qty > 0 else (Side.SELL, Side.BUY)
    assert not engine.gateway.add(batch, book, symbol, grow, step, False)
    assert not engine.gateway.add(batch, book, "SOLUSDT", Side.BUY, Decimal(1), False)
    assert {o.reason for o in batch.refused} == {"disk_full"}
    assert engine.gateway.add(batch, book, symbol, shrink, step, True)  # reducing goes
    assert await engine.execute(batch) is False  # sent, but kept in memory: disk full
    now = {p.symbol: p.qty for p in await ctx.exchange.positions()}
    assert abs(now.get(symbol, Decimal(0))) == abs(qty) - step

    result = await engine.flatten("drill")  # a flatten closes everything meanwhile
    assert result["recorded"] is False and set(result["closed"]) == set(held)
    assert await ctx.exchange.positions() == [] and engine.ledger.positions() == {}
    assert len(fills(ctx)) == written_fills  # nothing could be written yet...
    assert engine.gateway.journal.entries()  # ...and the journal keeps the orders

    disk.lift()
    assert await engine.flush()
    assert not engine.gateway.journal.entries()
    done = fills(ctx)
    assert len(done) == written_fills + 1 + len(held)  # the reduction and the closes, once
    assert len({f["fill_id"] for f in done}) == len(done)
    refused = rows(ctx, "SELECT reason, count(*) AS n FROM orders WHERE status = 'refused' "
                        "GROUP BY reason")
    assert {r["reason"]: r["n"] for r in refused}.get("disk_full") == 2
    assert await engine.reconcile() == []  # the books are the venue's

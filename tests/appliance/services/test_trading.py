"""The trading engine on the virtual clock with a real model, DuckDB, bus and paper venue."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from decimal import Decimal

import pytest
import trio

from appliance.backfill import backfill_symbol
from appliance.bus import MAINTENANCE_MODE
from appliance.ledger_store import load_positions
from appliance import lifecycle
from appliance.lifecycle import REGISTRY_VERSION
from appliance.services import trading
from data.lake import Lake
from models.registry import list_models
from models.training import train_run

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
HOUR = 3600 / 60  # trio seconds per market hour at speed 60


async def with_model(ctx, mode: str = "prod", **trading_cfg):
    """A real rf trained on the lake, registered, and put in ``mode``."""
    ctx.cfg = replace(ctx.cfg, trading=replace(ctx.cfg.trading, threshold=0.0, **trading_cfg))
    lake = Lake(ctx.cfg.state_path / "lake")
    end = int(ctx.clock.now() * 1000) // 60_000 * 60_000
    for s in SYMBOLS:
        await backfill_symbol(ctx.exchange, lake, s, end - 10 * 86_400_000, end, inline=True)
        lake.resample(s)
    result = train_run(ctx.cfg.state_path, "run-test", "t1-a", SYMBOLS, "rf")
    store = ctx.store.store
    lifecycle.register(store, result, now=ctx.clock.now())
    model_id = list_models(store)[0]["model_id"]
    op = lifecycle.promote if mode == "prod" else lifecycle.start_shadow
    op(store, model_id, actor="test", reason="test", now=ctx.clock.now())
    ctx.bus.counter_incr(REGISTRY_VERSION)
    ctx.bus.set_tradable_pairs(SYMBOLS)
    return model_id


def fills(ctx, mode="prod"):
    return ctx.store.store._dicts("SELECT * FROM fills WHERE mode = ? ORDER BY ts", [mode])


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_prod_model_trades_rounded_orders_and_books_match_the_venue(make_ctx,
                                                                          autojump_clock):
    ctx = make_ctx(speed=60)
    model_id = await with_model(ctx)
    engine = trading.TradingEngine(ctx)
    with trio.move_on_after(3 * HOUR):
        await trading.run(ctx, engine)
    done = fills(ctx)
    assert done, "no prod fill in three market hours"
    for f in done:
        step = engine.instruments[f["symbol"]].qty_step
        assert Decimal(str(f["qty"])) % step == 0  # whole lots only
        assert f["model_id"] == model_id and f["fee"] > 0
    assert await engine.reconcile() == []  # our books equal the venue's
    ours = {p["symbol"]: Decimal(str(p["qty"])) for p in
            load_positions(ctx.store.store, "prod")}
    assert ours == {p.symbol: p.qty for p in await ctx.exchange.positions()}
    trades = ctx.bus.events_since(0, ["trade"])
    assert len(trades) == len(done) and trades[0]["data"]["mode"] == "prod"
    bars = ctx.store.store.sql("SELECT count(DISTINCT ts) FROM model_bars")[0][0]
    assert bars >= 30  # every 5m bar of the three hours, or nearly
    assert ctx.store.store.sql("SELECT count(*) FROM equity")[0][0] >= bars
    assert ctx.metrics.trade_latency_ms._sum.get() > 0


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_kill_switch_from_another_process_stops_orders_and_flatten_closes(make_ctx,
                                                                               state_dir,
                                                                               autojump_clock):
    ctx = make_ctx(speed=60)
    await with_model(ctx)
    engine = trading.TradingEngine(ctx)
    with trio.move_on_after(2 * HOUR):
        await trading.run(ctx, engine)
    at_switch = {p.symbol: p.qty for p in await ctx.exchange.positions()}
    assert at_switch, "the model opened nothing before the drill"
    switch_ts = int(ctx.clock.now() * 1000)
    subprocess.run([sys.executable, "-c",
                    "from appliance.bus import Bus, MAINTENANCE_MODE; "
                    f"Bus({str(state_dir / 'bus')!r}).set_switch(MAINTENANCE_MODE, True, "
                    "actor='ops', reason='drill', source='cli')"], check=True, timeout=60)
    assert ctx.bus.switch(MAINTENANCE_MODE)
    with trio.move_on_after(2 * HOUR):
        await trading.run(ctx, engine)
    after = {p.symbol: p.qty for p in await ctx.exchange.positions()}
    for symbol, qty in after.items():  # only reduce-only orders passed: nothing grew
        before_qty = at_switch.get(symbol, Decimal(0))
        assert abs(qty) <= abs(before_qty) and qty * before_qty >= 0
    refused = ctx.store.store.sql("SELECT DISTINCT reason FROM orders WHERE status = "
                                  "'refused' AND ts >= ?", [switch_ts])
    assert refused in ([], [("maintenance_mode",)])
    positions_before_flatten = await ctx.exchange.positions()
    result = await engine.flatten("drill")
    assert await ctx.exchange.positions() == []
    assert set(result["closed"]) == {p.symbol for p in positions_before_flatten}


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_risk_limit_refuses_orders_with_its_reason(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60)
    await with_model(ctx, max_symbol_notional=1.0)
    engine = trading.TradingEngine(ctx)
    with trio.move_on_after(2 * HOUR):
        await trading.run(ctx, engine)
    assert fills(ctx) == []
    reasons = {r[0] for r in ctx.store.store.sql(
        "SELECT reason FROM orders WHERE status = 'refused'")}
    assert reasons == {"symbol_notional_cap"}
    assert ctx.metrics.orders_refused_total.labels("symbol_notional_cap")._value.get() > 0


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_shadow_trades_on_paper_at_one_percent_unrounded(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60)
    model_id = await with_model(ctx, mode="shadow")
    engine = trading.TradingEngine(ctx)
    with trio.move_on_after(3 * HOUR):
        await trading.run(ctx, engine)
    assert fills(ctx, "prod") == [] and await ctx.exchange.positions() == []
    shadow = fills(ctx, "shadow")
    assert shadow
    book = engine.books[model_id]
    assert book.equity() < Decimal("1100")  # a 1% book of the 100k account
    steps = {s: engine.instruments[s].qty_step for s in SYMBOLS}
    assert any(Decimal(str(f["qty"])) % steps[f["symbol"]] != 0 for f in shadow)  # unrounded
    eq = ctx.store.store.sql("SELECT count(*) FROM model_equity WHERE model_id = ?",
                             [model_id])[0][0]
    assert eq >= 30


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_reconciliation_mismatch_is_an_incident_and_halts_the_symbol(make_ctx,
                                                                          autojump_clock):
    ctx = make_ctx(speed=60)
    await with_model(ctx)
    engine = trading.TradingEngine(ctx)
    with trio.move_on_after(2 * HOUR):
        await trading.run(ctx, engine)
    from appliance.domain import OrderIntent, Side
    await ctx.exchange.place_order(OrderIntent("BTCUSDT", Side.BUY, Decimal("0.5")))  # by hand
    assert await engine.reconcile() == ["BTCUSDT"]
    assert "BTCUSDT" in engine.halted
    incidents = ctx.store.store.incidents()
    assert incidents[0]["kind"] == "reconciliation" and "BTCUSDT" in incidents[0]["message"]
    count = len([f for f in fills(ctx) if f["symbol"] == "BTCUSDT"])
    with trio.move_on_after(HOUR):
        await trading.run(ctx, engine)
    assert len([f for f in fills(ctx) if f["symbol"] == "BTCUSDT"]) == count  # halted

"""The kill switch is read once per bar's batch, yet a switch thrown while the batch is being
sent stops the next order: the real gateway, bus, journal and paper venue (taking orders one at
a time, as a network venue does); the switch thrown by another process, or as a kill file. A
paper venue that fills a batch in one step gets it in one call, after the last check."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from appliance.bus import MAINTENANCE_MODE
from appliance.domain import Side
from appliance.exchange.base import BATCH_FILLS
from appliance.paths import StatePaths
from appliance.safety import kill_file, write_kill_file
from appliance.services import trading

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


async def batch_of_buys(ctx, n: int):
    """An engine started on the sim venue and a batch of ``n`` buys of one lot each for the
    house (each adds risk: none is reduce-only)."""
    engine = trading.TradingEngine(ctx)
    await engine.start()
    now = int(ctx.clock.now() * 1000)
    for s in SYMBOLS:
        engine.marks[s] = Decimal(repr(ctx.exchange.market.last_price(s, now)))
    batch = engine.gateway.begin(engine.ledger, engine.marks, now)
    house = engine.ledger.house
    for i in range(n):
        inst = engine.instruments[SYMBOLS[i % len(SYMBOLS)]]
        assert engine.gateway.add(batch, house, inst.symbol, Side.BUY,
                                  max(inst.min_order_qty, inst.qty_step), False)
    return engine, batch


def after_fills(ctx, n: int, action) -> list[str]:
    """Make the venue take orders one at a time, as a network venue does (no
    ``BATCH_FILLS``), and run ``action`` once it has filled ``n``; returns the ids it
    filled."""
    ctx.exchange.capabilities = ctx.exchange.capabilities - {BATCH_FILLS}
    place, filled = ctx.exchange.place_order, []

    async def placing(intent):
        fill = await place(intent)
        filled.append(intent.order_link_id)
        if len(filled) == n:
            action()
        return fill

    ctx.exchange.place_order = placing
    return filled


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_batch_reads_the_switch_itself_once(make_ctx, autojump_clock):
    ctx = make_ctx()
    engine, batch = await batch_of_buys(ctx, 6)
    await engine.gateway.send(batch)
    assert [o.status for o in batch.orders] == ["filled"] * 6
    assert engine.gateway.kill.reads == 1  # at begin; each send checked the token only
    assert len({o.order_id for o in batch.orders}) == 6


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_paper_venue_gets_the_batch_in_one_call_and_saves_its_account_once(
        make_ctx, state_dir, autojump_clock, monkeypatch):
    ctx = make_ctx()
    ctx.exchange.account_file = StatePaths(state_dir).sim_account
    engine, batch = await batch_of_buys(ctx, 6)
    calls, saves = [], []
    place_orders, save = ctx.exchange.place_orders, ctx.exchange._save
    monkeypatch.setattr(ctx.exchange, "place_orders",
                        lambda intents: calls.append(len(intents)) or place_orders(intents))
    monkeypatch.setattr(ctx.exchange, "_save", lambda: saves.append(1) or save())
    monkeypatch.setattr(ctx.exchange, "place_order", None)  # never one at a time
    await engine.gateway.send(batch)
    assert [o.status for o in batch.orders] == ["filled"] * 6
    assert calls == [6] and len(saves) == 1
    saved = ctx.exchange.account_file.read_text()
    assert all(o.order_id in saved for o in batch.orders)  # every fill in the saved account
    assert sum(o.fill.qty for o in batch.orders) == sum(
        p.qty for p in ctx.exchange.broker.positions.values())


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_switch_thrown_before_a_paper_batch_leaves_stops_all_of_it(
        make_ctx, autojump_clock):
    ctx = make_ctx()
    engine, batch = await batch_of_buys(ctx, 4)
    ctx.bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="drill", source="cli")
    await engine.gateway.send(batch)
    assert [o.status for o in batch.orders] == ["refused"] * 4
    assert ctx.exchange.broker.by_link == {}  # the venue saw none


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_switch_thrown_by_another_process_mid_batch_stops_the_next_order(
        make_ctx, state_dir, autojump_clock):
    ctx = make_ctx()
    engine, batch = await batch_of_buys(ctx, 6)
    assert not batch.view.maintenance_mode

    def kill() -> None:
        subprocess.run([sys.executable, "-c",
                        "from appliance.bus import Bus, MAINTENANCE_MODE; "
                        f"Bus({str(state_dir / 'bus')!r}).set_switch(MAINTENANCE_MODE, True, "
                        "actor='ops', reason='drill', source='cli')"], check=True, timeout=60)

    filled = after_fills(ctx, 2, kill)
    await engine.gateway.send(batch)
    assert [o.status for o in batch.orders] == ["filled"] * 2 + ["refused"] * 4
    assert {o.reason for o in batch.orders[2:]} == {"maintenance_mode"}
    assert filled == [o.order_id for o in batch.orders[:2]]  # the venue saw no other order
    assert set(ctx.exchange.broker.by_link) == set(filled)
    assert engine.gateway.kill.reads == 2  # begin, then once when the token moved


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_kill_file_written_mid_batch_stops_the_next_order(make_ctx, state_dir,
                                                                 autojump_clock):
    ctx = make_ctx()
    engine, batch = await batch_of_buys(ctx, 5)
    after_fills(ctx, 3, lambda: write_kill_file(state_dir, "drill", "the bus is damaged"))
    await engine.gateway.send(batch)
    assert [o.status for o in batch.orders] == ["filled"] * 3 + ["refused"] * 2
    assert {o.reason for o in batch.orders[3:]} == {"maintenance_mode"}


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_switch_stamp_that_cannot_be_read_falls_back_to_reading_the_switch(
        make_ctx, state_dir, autojump_clock):
    """Fail closed: without its token the guard reads the switch itself before each order
    (still OFF here: the orders go); a switch written then, even behind the bus's back (no
    stamp, no journal), is seen at once."""
    ctx = make_ctx()
    stamp = state_dir / "bus" / "switches.stamp"
    stamp.unlink()
    stamp.mkdir()  # the stamp cannot be opened, mapped or written
    engine, batch = await batch_of_buys(ctx, 4)
    assert ctx.bus.switch_token() is None

    def tamper() -> None:
        ctx.bus.cache.set(f"switch:{MAINTENANCE_MODE}", {"value": True})

    after_fills(ctx, 2, tamper)
    await engine.gateway.send(batch)
    assert [o.status for o in batch.orders] == ["filled"] * 2 + ["refused"] * 2
    # begin, then before each of the first three orders; once ON it stays ON for the batch
    assert engine.gateway.kill.reads == 4


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_rebuilt_stamp_is_mapped_again_at_the_next_batch(make_ctx, state_dir,
                                                                 autojump_clock):
    ctx = make_ctx()
    engine, batch = await batch_of_buys(ctx, 2)
    stamp = state_dir / "bus" / "switches.stamp"
    stamp.unlink()  # a bus rebuilt by another process: a new stamp file
    stamp.write_bytes(bytes(8))
    batch = engine.gateway.begin(engine.ledger, engine.marks)
    house = engine.ledger.house
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        inst = engine.instruments[symbol]
        engine.gateway.add(batch, house, symbol, Side.BUY, max(inst.min_order_qty,
                                                              inst.qty_step), False)
    after_fills(ctx, 1, lambda: ctx.bus.set_switch(MAINTENANCE_MODE, True, actor="ops",
                                                   reason="drill", source="cli"))
    await engine.gateway.send(batch)
    assert [o.status for o in batch.orders] == ["filled", "refused", "refused"]


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_batch_begins_on_the_reading_taken_after_the_last_bar_unless_it_moved(
        make_ctx, state_dir, autojump_clock):
    """The engine reads the switch once a bar's orders have left; the next batch begins on
    that reading (no read of its own) when nothing was thrown since, and on a fresh read
    when anything was: by another process through the bus, or as a kill file. A reading
    serves one batch: the batch after reads the switch itself."""
    ctx = make_ctx()
    engine = trading.TradingEngine(ctx)
    await engine.start()
    guard = engine.gateway.kill
    guard.read_ahead()
    reads = guard.reads
    assert not engine.gateway.begin(engine.ledger, engine.marks).view.maintenance_mode
    assert guard.reads == reads  # began on the reading taken ahead
    assert not engine.gateway.begin(engine.ledger, engine.marks).view.maintenance_mode
    assert guard.reads == reads + 1  # that reading served one batch only

    guard.read_ahead()
    subprocess.run([sys.executable, "-c",
                    "from appliance.bus import Bus, MAINTENANCE_MODE; "
                    f"Bus({str(state_dir / 'bus')!r}).set_switch(MAINTENANCE_MODE, True, "
                    "actor='ops', reason='drill', source='cli')"], check=True, timeout=60)
    assert engine.gateway.begin(engine.ledger, engine.marks).view.maintenance_mode

    ctx.bus.set_switch(MAINTENANCE_MODE, False, actor="ops", reason="resume", source="cli")
    guard.read_ahead()
    write_kill_file(state_dir, "drill", "kill from the command line")
    assert engine.gateway.begin(engine.ledger, engine.marks).view.maintenance_mode

    kill_file(state_dir).unlink()
    guard.read_ahead()
    assert not guard.value
    kill_file(state_dir).write_text("{}")  # a kill file whose stamp never came
    assert engine.gateway.begin(engine.ledger, engine.marks).view.maintenance_mode


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_switch_written_behind_the_bus_is_seen_by_the_batch_after_next_at_worst(
        make_ctx, autojump_clock):
    """A record written straight into the bus's store (no stamp, no journal: the switches
    service audits it and sets the switch ON) does not move the token: the batch that begins
    on a reading taken before it misses it, the one after reads the switch itself."""
    ctx = make_ctx()
    engine = trading.TradingEngine(ctx)
    await engine.start()
    engine.gateway.kill.read_ahead()
    ctx.bus.cache.set(f"switch:{MAINTENANCE_MODE}", {"value": True})
    assert not engine.gateway.begin(engine.ledger, engine.marks).view.maintenance_mode
    assert engine.gateway.begin(engine.ledger, engine.marks).view.maintenance_mode

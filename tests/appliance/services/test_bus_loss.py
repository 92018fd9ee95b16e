"""``run`` on a rebuilt bus (issue 11, bus loss): the new bus numbers its events and its audit
journal past the lost one's, also when the wall clock it numbers from stepped back, so a
client that remembered an event number misses nothing and ``audit_log`` copies every new
entry. Real bus, real DuckDB."""

from __future__ import annotations

import shutil
import time

import pytest

from appliance.bus import MAINTENANCE_MODE
from appliance.contracts import Event
from appliance.services.operator import sync_audit
from appliance.startup import Findings, recover_lost_bus, settle

pytestmark = [pytest.mark.trio, pytest.mark.timeout(60)]
HOUR_BACK = 3600.0


def step_clock_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The wall clock an hour behind what it was when the lost bus numbered its entries."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() - HOUR_BACK)


async def test_a_bus_lost_under_run_is_rebuilt_numbering_past_the_lost_one(
        make_ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx()
    ctx.bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="drill")
    ctx.bus.publish(Event.TRADE, {"symbol": "BTCUSDT"})
    events, audit = ctx.bus.last_event_seq(), ctx.bus.last_audit_seq()
    shutil.rmtree(ctx.bus.path)
    step_clock_back(monkeypatch)
    assert await recover_lost_bus(ctx, sync_audit)
    monkeypatch.undo()
    after = ctx.bus.events_since(events)  # what a client that remembered `events` reads
    assert "bus_lost" in [e["data"].get("kind") for e in after if e["kind"] == Event.INCIDENT]
    assert ctx.bus.last_audit_seq() > audit
    assert await sync_audit(ctx) >= 2  # the switches restored on the new bus reach audit_log
    assert ctx.bus.maintenance_mode


async def test_a_bus_rebuilt_while_run_was_down_numbers_its_journal_past_audit_log(
        make_ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx()
    ctx.bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="drill")
    await sync_audit(ctx)
    shutil.rmtree(ctx.bus.path)
    step_clock_back(monkeypatch)
    ctx.bus.reopen()  # what `run` opens at its next start
    monkeypatch.undo()
    await settle(ctx, Findings(fresh=False))
    assert await sync_audit(ctx) >= 2  # restored switches journalled above audit_log's newest
    assert ctx.bus.switch_meta(MAINTENANCE_MODE)["value"] is True

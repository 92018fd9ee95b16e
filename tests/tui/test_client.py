"""The bus reader: change detection per section, live events over snapshots, read errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from textual.widgets import Digits

from appliance.bus import MAINTENANCE_MODE, Bus
from appliance.safety import kill_file
from tests.tui.conftest import (MARKET_T0, TRADES, fill_bus, heartbeat, make_app, run_scenario,
                                switch_to, trade, wait_for)
from tests.tui.helpers import rows, text
from tui.client import SECTIONS, BusReader
from tui.dialogs.confirm import ConfirmDialog

pytestmark = pytest.mark.timeout(60)


def test_reader_reports_only_the_sections_that_changed(tmp_path: Path) -> None:
    with Bus(tmp_path / "bus") as bus:
        fill_bus(bus)
        reader = BusReader(bus)
        first = reader.read()
        assert first is not None and first.version == 1 and first.changed == SECTIONS
        assert len(first.trades) == 50 and first.trades[0] == trade(59)
        bus.beat(heartbeat())  # a new wall_ts only
        assert reader.read() is None
        bus.publish("trade", trade(60))
        second = reader.read()
        assert second is not None and second.version == 2 and second.changed == {"trades"}
        assert second.trades[0] == trade(60) and len(second.trades) == 50


def test_progress_events_move_runs_until_a_newer_snapshot_replaces_them(tmp_path: Path) -> None:
    with Bus(tmp_path / "bus") as bus:
        fill_bus(bus)
        reader = BusReader(bus)
        reader.read()
        bus.publish("training_progress", {"run_id": "r-new", "kind": "mlp", "epoch": 1,
                                          "loss": 0.9, "percent": 10.0, "status": "running"})
        bus.publish("training_progress", {"run_id": "r-new", "kind": "mlp", "epoch": 2,
                                          "loss": 0.8, "percent": 20.0, "status": "running"})
        state = reader.read()
        assert state is not None and state.changed == {"training"}
        run = next(r for r in state.training if r["run_id"] == "r-new")
        assert (run["percent"], run["loss_curve"]) == (20.0, [0.9, 0.8])
        bus.put_snapshot("training", [{"run_id": "r-new", "status": "completed", "percent": 100,
                                       "epoch": 2, "loss_curve": [0.9, 0.8]}])
        state = reader.read()
        assert state is not None
        assert [(r["run_id"], r["status"]) for r in state.training] == [("r-new", "completed")]


def test_a_bus_read_error_shows_in_the_banner_and_clears(bus_state: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    broken = [True]
    real = Bus.heartbeat

    def heartbeat_or_fail(self: Bus):
        if broken[0]:
            raise OSError("disk I/O error")
        return real(self)

    monkeypatch.setattr(Bus, "heartbeat", heartbeat_or_fail)
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        assert "BUS ERROR: OSError('disk I/O error')" in text(app, "#banner")
        broken[0] = False
        await wait_for(lambda: app.state.error is None and app.state.running)
        assert not app.screen.query_one("#banner").display

    run_scenario(app, scenario)


def test_a_reader_whose_bus_went_back_to_an_older_copy_reads_it_afresh(tmp_path: Path) -> None:
    """Issue 11, bus loss: the bus replaced by an older copy (a backup put back) numbers below
    what the reader remembered. The reader starts over on it, as a new TUI would, instead of
    waiting for its numbers to pass the old ones (and showing nothing new until then)."""
    path, copy = tmp_path / "bus", tmp_path / "copy"
    with Bus(path) as bus:
        fill_bus(bus)
    shutil.copytree(path, copy)
    bus = Bus(path)
    reader = BusReader(bus)
    for i in range(TRADES, TRADES + 5):
        bus.publish("trade", trade(i))
    for value in (True, False):
        bus.set_switch(MAINTENANCE_MODE, value, actor="carol", reason="later", source="cli")
    state = reader.read()
    assert state is not None and state.trades[0] == trade(TRADES + 4)
    assert [e["actor"] for e in state.switch_history[:2]] == ["carol", "carol"]
    shutil.rmtree(path)
    shutil.copytree(copy, path)
    bus.reopen()
    bus.publish("trade", trade(99))
    bus.set_switch(MAINTENANCE_MODE, True, actor="dave", reason="restored", source="cli")
    state = reader.read()
    assert state is not None
    assert state.trades == tuple([trade(99)] + [trade(i) for i in range(TRADES - 1, 10, -1)])
    assert [e["actor"] for e in state.switch_history] == ["dave", "bob", "alice", "alice"]
    bus.close()


def test_mission_control_follows_the_bus_rebuilt_after_a_loss(bus_state: Path) -> None:
    """Issue 11, bus loss: the bus directory deleted under a running TUI. While it is gone the
    banner says so and a kill goes to the kill file (not into the deleted files, which nobody
    reads), and the TUI does not create a bus itself; once ``run`` rebuilt it in place, the TUI
    reads the new bus and follows its events."""
    path = bus_state / "bus"
    app = make_app(bus_state)
    rebuilt: list[Bus] = []

    async def scenario(pilot) -> None:
        assert app.state.trades[0] == trade(TRADES - 1)
        with Bus(path) as bus:
            events, audit = bus.last_event_seq(), bus.last_audit_seq()
        shutil.rmtree(path)
        await wait_for(lambda: "was deleted" in (app.state.error or ""))
        assert text(app, "#banner").startswith(f"BUS ERROR: the bus at {path} was deleted")
        await pilot.press("k")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(lambda: bool(app.actions_done))
        assert app.actions_done[-1].ok and "kill file written" in app.actions_done[-1].detail
        assert kill_file(bus_state).exists() and not path.exists()
        bus = Bus(path)  # `run` reopens it in place and carries the numbers forward
        rebuilt.append(bus)
        bus.raise_sequences(events=events, audit=audit)
        bus.put_snapshot("status", {"equity": 777.25})
        bus.publish("trade", trade(TRADES), market_ts=MARKET_T0 + TRADES * 60)
        await wait_for(lambda: app.state.error is None and app.state.trades[0] == trade(TRADES))
        assert app.state.maintenance_mode  # the kill file holds it on the new bus
        assert app.screen.query_one("#equity Digits", Digits).value == "777.25"
        await switch_to(app, pilot, "2", "trades")
        bus.publish("trade", trade(TRADES + 1), market_ts=MARKET_T0 + (TRADES + 1) * 60)
        await wait_for(lambda: rows(app, "#blotter")[0][0] == "2024-06-01 13:01:00")
        assert rows(app, "#blotter")[1][0] == "2024-06-01 13:00:00"

    try:
        run_scenario(app, scenario)
    finally:
        for bus in rebuilt:
            bus.close()

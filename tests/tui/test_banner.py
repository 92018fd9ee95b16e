"""The "APPLIANCE NOT RUNNING" banner (stale or missing heartbeat) on every screen, the kill
switch still working then, and screens that show "—" for missing or malformed data."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from appliance.bus import Bus
from tests.tui.conftest import make_app, run_scenario, switch_to, wait_for
from tests.tui.helpers import rows, text
from appliance.liveness import RunLock
from tui.dialogs.confirm import ConfirmDialog

pytestmark = pytest.mark.timeout(60)
SCREENS = ("dashboard", "trades", "training", "pipeline", "models", "incidents")


async def visit_all(app, pilot, check) -> None:
    for key, mode in enumerate(SCREENS, start=1):
        await switch_to(app, pilot, str(key), mode)
        check(mode)


def test_stopped_appliance_shows_the_banner_everywhere_and_kill_still_works(
        stopped_bus_state: Path) -> None:
    state = stopped_bus_state
    app = make_app(state, now=lambda: time.time() + 65)

    def banner_shown(mode: str) -> None:
        banner = app.screen.query_one("#banner")
        assert banner.display, mode
        shown = text(app, "#banner")
        # the heartbeat is 65 s old at the start and ages while the six screens are visited
        age = re.match(r"APPLIANCE NOT RUNNING — last heartbeat (\d+) s ago", shown)
        assert age and 65 <= int(age.group(1)) < 300, (mode, shown)
        assert "○ NOT RUNNING" in text(app, "#statusbar"), mode

    async def scenario(pilot) -> None:
        assert not app.state.running
        await visit_all(app, pilot, banner_shown)
        assert text(app, "#incidents-summary").startswith("crashes 1")
        await pilot.press("k")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_for(lambda: app.state.maintenance_mode)

    run_scenario(app, scenario)
    with Bus(state / "bus") as bus:
        assert bus.maintenance_mode


def test_a_clean_stop_shows_not_running_at_once_though_the_heartbeat_is_fresh(
        stopped_bus_state: Path) -> None:
    """Issue 9 #7: the TUI and `status` give one answer. A heartbeat written a second ago by an
    appliance that has since stopped does not make the TUI say RUNNING."""
    with Bus(stopped_bus_state / "bus") as bus:
        beat = bus.heartbeat()["wall_ts"]
    app = make_app(stopped_bus_state, now=lambda: beat + 1.0)

    async def scenario(pilot) -> None:
        assert not app.state.running
        assert app.screen.query_one("#banner").display
        assert app.state.heartbeat_age is not None and app.state.heartbeat_age < 5

    run_scenario(app, scenario)


def test_banner_goes_away_when_the_appliance_comes_back(stopped_bus_state: Path) -> None:
    app = make_app(stopped_bus_state)
    lock = RunLock(stopped_bus_state)

    async def scenario(pilot) -> None:
        assert app.screen.query_one("#banner").display
        lock.acquire()  # what `run` does at start
        await wait_for(lambda: not app.screen.query_one("#banner").display)
        assert app.state.running
        lock.release()  # and what the kernel does when it exits, however it exits
        await wait_for(lambda: app.screen.query_one("#banner").display)

    try:
        run_scenario(app, scenario)
    finally:
        lock.release()


def test_empty_bus_shows_dashes_and_no_heartbeat(tmp_path: Path) -> None:
    app = make_app(tmp_path / "state")

    def empty(mode: str) -> None:
        assert text(app, "#banner").startswith("APPLIANCE NOT RUNNING — no heartbeat on the bus")

    async def scenario(pilot) -> None:
        await visit_all(app, pilot, empty)
        await switch_to(app, pilot, "1", "dashboard")
        assert text(app, "#equity .missing") == "—"
        assert app.screen.query_one("#equity .missing").display
        assert text(app, "#models .value") == "prod —   shadow —"
        assert "pid — · — ×— · market — UTC" in text(app, "#statusbar")

    run_scenario(app, scenario)


def test_malformed_snapshots_render_as_dashes_without_crashing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with Bus(state / "bus") as bus:
        bus.beat({"pid": "x", "services": {"feed": None, "risk": {"state": 3, "restarts": "?"}}})
        bus.put_snapshot("status", {"equity": "lots", "sharpe": float("nan"), "models": [1],
                                    "sources": {"ws": None, "rest": {"lag_s": "slow"}},
                                    "symbols": "BTC"})
        bus.put_snapshot("models", [None, 3, {"model_id": "m1", "mode": "prod", "sharpe": "?"},
                                    {"model_id": "m1", "mode": "shadow"}])
        bus.put_snapshot("training", {"not": "a list"})
        bus.put_snapshot("pipeline", {"backfill": [1, 2], "missing": None,
                                      "discovery": [None, {"event": "listed"}]})
        bus.put_snapshot("incidents", [{"kind": "chaos", "mttr_s": "fast"}, "boom"])
        bus.publish("trade", {"symbol": None, "pnl": "?"})
        bus.publish("trade", "not a dict")  # type: ignore[arg-type]
        bus.publish("training_progress", {"run_id": "r1", "epoch": "one", "loss": None})
    app = make_app(state)

    async def scenario(pilot) -> None:
        await visit_all(app, pilot, lambda mode: None)
        assert rows(app, "#incidents") == [["—", "—", "chaos", "—", "—"]]
        await switch_to(app, pilot, "1", "dashboard")
        assert text(app, "#equity .missing") == "—" and text(app, "#sharpe .missing") == "—"
        assert rows(app, "#sources") == [["rest"] + ["—"] * 4, ["ws"] + ["—"] * 4]
        await switch_to(app, pilot, "2", "trades")
        assert rows(app, "#blotter") == [["—"] * 5 + ["—", "—", "—"]] * 2
        await switch_to(app, pilot, "5", "models")
        assert [r[0] for r in rows(app, "#leaderboard")] == ["m1", "m1"]

    run_scenario(app, scenario)

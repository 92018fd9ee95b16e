"""``v`` on the Models screen opens the selected model's report: the text of ``methtrader
report``, read by a worker thread (DuckDB read-only while the appliance is down, through the
bus while it runs), shown in a dialog that Escape closes."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from appliance.bus import Bus
from tests.builders import reported_model
from tests.tui.conftest import fill_bus, make_app, run_scenario, switch_to, wait_for
from tui.dialogs.report import ReportDialog

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def report_state(tmp_path: Path) -> Path:
    """A stopped appliance's state dir: a real registry in DuckDB, its model on the bus."""
    state = tmp_path / "state"
    model_id = reported_model(state)
    with Bus(state / "bus") as bus:
        fill_bus(bus)
        bus.put_snapshot("models", [
            {"model_id": model_id, "group": "t1-a", "kind": "rf", "mode": "prod",
             "sharpe": 3.1, "pnl": 48.0, "trades": 12, "fills": 30, "pinned": False},
            {"model_id": "m-gone", "group": "t2-a", "kind": "mlp", "mode": "shadow",
             "sharpe": 0.2}])
    return state


async def open_report(app, pilot) -> ReportDialog:
    await pilot.press("v")
    await wait_for(lambda: isinstance(app.screen, ReportDialog))
    dialog = app.screen
    await wait_for(lambda: dialog.loaded is not None)
    await pilot.pause()
    return dialog


def shown(dialog: ReportDialog) -> str:
    return str(dialog.query_one("#report-text", Static).content)


def test_v_shows_the_selected_models_report_and_escape_closes_it(report_state: Path) -> None:
    app = make_app(report_state)
    seen: dict[str, str] = {}

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "5", "models")
        dialog = await open_report(app, pilot)
        seen["first"] = shown(dialog)
        await pilot.press("escape")
        await wait_for(lambda: getattr(app.screen, "MODE", None) == "models")
        await pilot.press("down")
        seen["second"] = shown(await open_report(app, pilot))
        await pilot.press("escape")
        await wait_for(lambda: not isinstance(app.screen, ReportDialog))

    run_scenario(app, scenario)
    text = seen["first"]
    assert text.startswith("model m-rep  rf  group t1-a")
    assert "shadow → prod  by shadow-desk" in text
    assert "score 0.71 = mean 1.00 - std 0.50 / sqrt(3 folds)" in text
    assert "no: the spread (0.012)" in text
    # the bus lists a model the registry no longer has: the dialog says so, the TUI lives on
    assert seen["second"].startswith("no report: no model 'm-gone'")


def test_while_the_appliance_runs_the_report_is_asked_through_the_bus(bus_state: Path) -> None:
    """Nobody answers here (no `run` behind the lock): the command is cancelled after its
    deadline and the dialog says so, instead of opening the DuckDB file run would hold."""
    app = make_app(bus_state, command_deadline_s=1.0)
    seen: dict[str, str] = {}

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "5", "models")
        seen["text"] = shown(await open_report(app, pilot))
        await pilot.press("escape")

    run_scenario(app, scenario)
    assert seen["text"].startswith("no report: the appliance did not answer within 1s")
    assert not (bus_state / "methtrader.duckdb").exists()
    with Bus(bus_state / "bus") as bus:
        queued = bus.pending_commands()
        assert [c["command"] for c in queued] == ["report"]
        assert bus.command_state(queued[0]["id"])["state"] == "cancelled"
        assert not bus.claim_command(queued[0]["id"])  # a run starting now would not run it
        sent = [e for e in bus.audit_entries(0) if e["action"] == "command:report cancelled"]
    assert [e["details"]["args"]["model_id"] for e in sent] == ["m000"]

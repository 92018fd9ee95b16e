"""Kill switch, kill-and-flatten, resume, promote/demote: confirmed actions reach the bus (a
second process sees them), cancelled ones leave it unchanged, and all are audited."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.bus import MAINTENANCE_MODE, Bus, operator_name
from tests.tui.conftest import make_app, run_scenario, switch_to, wait_for
from tui.app import MissionControl
from tui.dialogs.confirm import ConfirmDialog
from tui.dialogs.help import HelpDialog

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def switch_in_other_process(state_dir: Path) -> bool:
    """Read maintenance_mode from a fresh Python process, as `methtrader status` would."""
    code = ("import sys; from appliance.bus import Bus; "
            "bus = Bus(sys.argv[1]); print(bus.maintenance_mode); bus.close()")
    out = subprocess.run([sys.executable, "-c", code, str(state_dir / "bus")], cwd=ROOT,
                         capture_output=True, text=True, timeout=30, check=True)
    return {"True": True, "False": False}[out.stdout.strip()]


def audit(state_dir: Path) -> list[dict]:
    with Bus(state_dir / "bus") as bus:
        return bus.audit_entries(0)


async def answer_dialog(app: MissionControl, pilot, key: str, *answer: str) -> None:
    await pilot.press(key)
    await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
    await pilot.press(*answer)
    await wait_for(lambda: not isinstance(app.screen, ConfirmDialog))


@pytest.mark.parametrize("answer", ["y", "enter"])
def test_kill_switch_confirmed_is_seen_by_a_second_process(bus_state: Path, answer: str) -> None:
    app = make_app(bus_state)
    before = len(audit(bus_state))

    async def scenario(pilot) -> None:
        assert not app.state.maintenance_mode
        await answer_dialog(app, pilot, "k", answer)
        await wait_for(lambda: app.actions_done and app.state.maintenance_mode)
        assert app.actions_done[0].ok and app.actions_done[0].action == "kill"
        assert "MAINTENANCE ON" in str(app.screen.query_one("#statusbar").content)

    run_scenario(app, scenario)
    assert switch_in_other_process(bus_state) is True
    with Bus(bus_state / "bus") as bus:
        meta = bus.switch_meta(MAINTENANCE_MODE)
    assert (meta["actor"], meta["reason"], meta["source"]) == \
        ("operator-test", "operator via tui", "tui")
    entries = audit(bus_state)[before:]
    assert [(e["actor"], e["action"], e["reason"]) for e in entries] == [
        ("operator-test", "maintenance_mode=on", "operator via tui")]


@pytest.mark.parametrize("answer", ["n", "escape"])
def test_kill_switch_cancelled_leaves_the_bus_unchanged(bus_state: Path, answer: str) -> None:
    app = make_app(bus_state)
    before = audit(bus_state)

    async def scenario(pilot) -> None:
        await answer_dialog(app, pilot, "k", answer)
        await pilot.pause(0.3)  # several poll intervals: nothing may arrive
        assert app.actions_done == [] and not app.state.maintenance_mode

    run_scenario(app, scenario)
    assert switch_in_other_process(bus_state) is False
    assert audit(bus_state) == before


def test_kill_and_flatten_sets_the_switch_and_sends_flatten(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await answer_dialog(app, pilot, "K", "y")
        await wait_for(lambda: bool(app.actions_done))
        assert app.actions_done[0].command_id

    run_scenario(app, scenario)
    with Bus(bus_state / "bus") as bus:
        assert bus.maintenance_mode
        [command] = bus.pending_commands()
    assert (command["command"], command["args"], command["actor"], command["source"]) == \
        ("flatten", {}, "operator-test", "tui")
    assert [e["action"] for e in audit(bus_state)[-2:]] == [
        "maintenance_mode=on", "command flatten"]


def test_resume_asks_first_and_enter_defaults_to_cancel(bus_state: Path) -> None:
    with Bus(bus_state / "bus") as bus:
        bus.set_switch(MAINTENANCE_MODE, True, actor="alice", reason="incident", source="cli")
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        assert app.state.maintenance_mode
        await answer_dialog(app, pilot, "r", "enter")
        await pilot.pause(0.3)
        assert app.state.maintenance_mode and not app.actions_done
        await answer_dialog(app, pilot, "r", "y")
        await wait_for(lambda: not app.state.maintenance_mode)

    run_scenario(app, scenario)
    assert switch_in_other_process(bus_state) is False
    assert audit(bus_state)[-1]["action"] == "maintenance_mode=off"


def test_promote_and_demote_send_audited_commands(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "5", "models")
        await pilot.press("p")  # m000 is prod: promote does not apply, no dialog
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
        await answer_dialog(app, pilot, "d", "y")
        await pilot.press("down", "down")
        await answer_dialog(app, pilot, "p", "y")
        await wait_for(lambda: len(app.actions_done) == 2)

    run_scenario(app, scenario)
    with Bus(bus_state / "bus") as bus:
        commands = [(c["command"], c["args"], c["actor"], c["source"])
                    for c in bus.pending_commands()]
    assert commands == [
        ("demote", {"model_id": "m000", "reason": "operator via tui"}, "operator-test", "tui"),
        ("promote", {"model_id": "m002", "reason": "operator via tui"}, "operator-test", "tui")]
    assert [(e["actor"], e["action"], e["details"]["model_id"]) for e in audit(bus_state)[-2:]] == [
        ("operator-test", "command demote", "m000"), ("operator-test", "command promote", "m002")]


def test_rollback_asks_first_and_sends_the_group(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "5", "models")
        await pilot.press("b")  # m000's group (BTCUSDT) has no retired model: nothing to do
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmDialog)
        await pilot.press("down")  # m001: ETHUSDT, whose m006 is retired
        await answer_dialog(app, pilot, "b", "n")
        await pilot.pause(0.3)
        assert not app.actions_done
        await answer_dialog(app, pilot, "b", "y")
        await wait_for(lambda: len(app.actions_done) == 1)

    run_scenario(app, scenario)
    with Bus(bus_state / "bus") as bus:
        commands = [(c["command"], c["args"]) for c in bus.pending_commands()]
    assert commands == [("rollback", {"group": "ETHUSDT", "reason": "operator via tui"})]
    assert audit(bus_state)[-1]["action"] == "command rollback"


def test_keys_do_not_stack_dialogs_and_help_closes(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await pilot.press("?")
        await wait_for(lambda: isinstance(app.screen, HelpDialog))
        await pilot.press("k", "2")
        await pilot.pause()
        assert isinstance(app.screen, HelpDialog) and app.current_mode == "dashboard"
        await pilot.press("escape")
        await wait_for(lambda: not isinstance(app.screen, HelpDialog))
        await pilot.press("k")
        await wait_for(lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("K", "q")
        await pilot.pause()
        assert len(app.screen_stack) == 2 and app.is_running
        await pilot.press("escape")

    run_scenario(app, scenario)
    assert switch_in_other_process(bus_state) is False


def test_actions_are_recorded_under_the_operator_user_name(bus_state: Path) -> None:
    assert MissionControl(bus_state).client.actor == operator_name()

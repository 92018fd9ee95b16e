"""Issue 11, holes 2, 3, 4 and 8 (and issue 9's one liveness rule), as a user meets them:
``methtrader`` as a subprocess on a real state dir, read back from DuckDB and the bus."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import diskcache
import duckdb
import pytest

from appliance.bus import MAINTENANCE_MODE, Bus, operator_name
from appliance.liveness import RunLock
from tests.e2e.conftest import methtrader, status_json, stderr_of
from tests.e2e.safety_helpers import QUIET, copy_state, one_error_line, run_briefly
from tui.client import BusReader

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def rows(state: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(state / "methtrader.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def audit(state: Path) -> list[tuple[str, str, str]]:
    return rows(state, "SELECT actor, action, reason FROM audit_log ORDER BY id")


def incident_kinds(state: Path) -> list[str]:
    return [r[0] for r in rows(state, "SELECT kind FROM incidents ORDER BY id")]


@pytest.fixture(scope="module")
def ran_once(tmp_path_factory) -> Path:
    """A state dir that `run` has used once (1 s of real time), stopped."""
    state = tmp_path_factory.mktemp("base") / "state"
    run_briefly(state)
    return state


@pytest.fixture
def state(ran_once: Path, tmp_path: Path) -> Path:
    return copy_state(ran_once, tmp_path / "state")


# -- liveness: one lock (hole 8, issue 9 #7) -----------------------------------------------

def test_a_reused_pid_with_a_fresh_heartbeat_is_not_a_running_appliance(state: Path) -> None:
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        with Bus(state / "bus") as bus:  # the heartbeat a crashed run left, pid now reused
            bus.beat({"pid": sleeper.pid, "services": {}, "stopped": False})
        assert status_json(state)["running"] is False
        with Bus(state / "bus") as bus:
            seen = BusReader(bus).read()
        assert seen is not None and seen.running is False and seen.heartbeat_age < 10
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_second_run_is_refused_and_sigkill_frees_the_lock_at_once(state: Path,
                                                                     run_proc) -> None:
    proc = run_proc(state, "--speed", "60", *QUIET)
    wait_for(lambda: status_json(state)["running"], 60, "the appliance to run")
    assert status_json(state)["pid"] == proc.pid
    lock = state / "run.lock"
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    assert json.loads(lock.read_text())["pid"] == proc.pid

    second = run_briefly(state, check=False)
    line = one_error_line(second, 1)
    assert "already running" in line and str(proc.pid) in line

    proc.kill()
    proc.wait(timeout=30)
    assert status_json(state)["running"] is False  # no 10 s of false RUNNING
    with Bus(state / "bus") as bus:
        assert BusReader(bus).read().running is False
    assert run_briefly(state).returncode == 0  # the lock is free for the next run


def test_after_a_clean_stop_status_and_the_tui_say_not_running_at_once(state: Path) -> None:
    run_briefly(state)
    with Bus(state / "bus") as bus:
        seen = BusReader(bus).read()
    assert seen is not None and seen.heartbeat_age < 10  # the heartbeat is still fresh
    assert seen.running is False
    assert status_json(state)["running"] is False


def test_a_clock_file_moved_back_a_week_resumes_at_the_newest_stored_candle(state: Path) -> None:
    newest_open_ms = rows(state, "SELECT max(open_time) FROM candles WHERE interval = '1m'")[0][0]
    saved = json.loads((state / "clock.json").read_text())
    saved["market_time"] -= 7 * 86_400
    (state / "clock.json").write_text(json.dumps(saved))
    run_briefly(state)
    assert json.loads((state / "clock.json").read_text())["market_time"] >= (
        newest_open_ms / 1000 + 60)
    found = rows(state, "SELECT message FROM incidents WHERE kind = 'clock_behind'")
    assert len(found) == 1 and found[0][0].startswith("market time moved forward")
    hours = float(found[0][0].split()[4])
    assert 7 * 24 - 0.5 < hours <= 7 * 24  # back to where the stored candles end


# -- the kill switch fails closed (hole 2) --------------------------------------------------

def test_a_truncated_bus_after_kill_restores_the_switch_from_duckdb(state: Path) -> None:
    methtrader("kill", "--reason", "drill", "--state-dir", str(state))
    run_briefly(state)  # copies the journal into audit_log
    (state / "bus" / "cache.db").write_bytes(b"")  # the bus forgets every key
    assert status_json(state)["maintenance_mode"] is True  # missing reads as ON

    run_briefly(state)
    assert status_json(state)["maintenance_mode"] is True
    restored = [r for r in audit(state) if r[1] == "maintenance_mode=on"
                and r[2].startswith("restored from audit_log")]
    assert restored and restored[-1][0] == "appliance"
    assert "switch_restored" in incident_kinds(state)


def test_a_switch_written_behind_the_bus_is_audited_and_fails_closed(state: Path,
                                                                     run_proc) -> None:
    methtrader("kill", "--reason", "drill", "--state-dir", str(state))
    proc = run_proc(state, "--speed", "60", *QUIET)
    wait_for(lambda: status_json(state)["running"], 60, "the appliance to run")
    raw = diskcache.Cache(str(state / "bus"))
    raw.set(f"switch:{MAINTENANCE_MODE}", False)  # no journal entry: nobody can say who
    raw.close()

    def flagged() -> bool:
        with Bus(state / "bus") as bus:
            return any(e["action"] == "maintenance_mode unaudited change"
                       for e in bus.audit_entries())

    wait_for(flagged, 30, "the unaudited change to be audited")
    assert status_json(state)["maintenance_mode"] is True
    proc.terminate()
    assert proc.wait(timeout=30) == 0, stderr_of(proc)[-2000:]
    assert any(a == "maintenance_mode unaudited change" for _, a, _ in audit(state))
    assert "unaudited_switch_change" in incident_kinds(state)


@pytest.mark.parametrize("command", [
    ["kill"], ["resume"], ["unfreeze", "--reason", "x"], ["promote", "m1", "--reason", "x"],
    ["pin", "m1"], ["rollback", "t1-a", "--reason", "x"], ["tui"]])
@pytest.mark.parametrize("where", ["typo", "empty"])
def test_state_changing_commands_refuse_a_directory_that_is_not_a_state_dir(
        tmp_path: Path, command: list[str], where: str) -> None:
    target = tmp_path / "typo"
    if where == "empty":
        target.mkdir()
    out = methtrader(*command, "--state-dir", str(target), check=False)
    assert "not a methtrader state dir" in one_error_line(out, 2)
    assert (not target.exists()) if where == "typo" else list(target.iterdir()) == []


@pytest.mark.parametrize("where", ["typo", "empty", "file"])
def test_read_commands_create_nothing_and_name_a_file_given_as_the_state_dir(
        tmp_path: Path, where: str) -> None:
    """`models` on a mistyped --state-dir made its bus/ there (and said "no models yet");
    `status` on a file read it as a never-started state dir and exited 0."""
    target = tmp_path / "typo"
    if where == "empty":
        target.mkdir()
    elif where == "file":
        target.write_text("not a state dir")
    out = methtrader("models", "--state-dir", str(target), check=False)
    assert "not a methtrader state dir" in one_error_line(out, 2)
    status = methtrader("status", "--state-dir", str(target), check=False)
    if where == "file":
        assert "is not a directory" in one_error_line(status, 2)
    else:  # nothing there yet: status says so, as for a state dir that never ran
        assert status.returncode == 0 and "never started" in status.stdout
    if where == "typo":
        assert not target.exists()
    elif where == "empty":
        assert list(target.iterdir()) == []
    else:
        assert target.read_text() == "not a state dir"


def test_kill_on_a_damaged_bus_writes_a_kill_file_that_run_honours(state: Path) -> None:
    (state / "bus" / "cache.db").write_bytes(os.urandom(20_000))
    assert "damaged" in one_error_line(methtrader("status", "--state-dir", str(state),
                                                  check=False), 1)
    out = methtrader("kill", "--reason", "bus broken", "--state-dir", str(state))
    assert "kill file" in out.stdout
    kill = state / "KILL"
    assert stat.S_IMODE(kill.stat().st_mode) == 0o600
    assert json.loads(kill.read_text())["reason"] == "bus broken"

    run_briefly(state)
    assert list(state.glob("bus.corrupt-*")) and not kill.exists()
    assert status_json(state)["maintenance_mode"] is True
    assert (operator_name(), "maintenance_mode=on", "kill file: bus broken") in audit(state)
    assert {"bus_rebuilt", "kill_file"} <= set(incident_kinds(state))
    methtrader("resume", "--state-dir", str(state))
    assert status_json(state)["maintenance_mode"] is False


# -- permissions (hole 3) -------------------------------------------------------------------

def test_state_is_private_and_run_reports_looser_permissions(ran_once: Path,
                                                            state: Path) -> None:
    assert stat.S_IMODE(ran_once.stat().st_mode) == 0o700
    loose = [str(p) for p in ran_once.rglob("*") if not p.is_symlink()
             and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == []
    state.chmod(0o755)
    (state / "methtrader.duckdb").chmod(0o644)
    out = run_briefly(state)
    warnings = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")
                and "readable by others" in line]
    assert warnings and str(state / "methtrader.duckdb") + " (644)" in warnings[0]["paths"]
    messages = rows(state, "SELECT message FROM incidents WHERE kind = 'permissions'")
    assert messages and "methtrader.duckdb (644)" in messages[0][0]


# -- commands expire (hole 4) ---------------------------------------------------------------

def test_a_command_the_cli_gave_up_on_never_runs_later(state: Path) -> None:
    with RunLock(state):  # "running", but never answering: a hung appliance
        out = methtrader("promote", "m-none", "--reason", "try", "--state-dir", str(state),
                         check=False, env={"METHTRADER__BUS__COMMAND_DEADLINE_S": "1"})
    assert "cancelled and will not run" in one_error_line(out, 1)
    run_briefly(state)
    actions = [a for _, a, _ in audit(state)]
    assert "command:promote cancelled" in actions and "command:promote" not in actions


def test_resume_cancels_a_flatten_queued_while_the_appliance_was_down(state: Path) -> None:
    out = methtrader("kill", "--flatten", "--reason", "weekend", "--state-dir", str(state))
    assert "flatten queued" in out.stdout
    out = methtrader("resume", "--reason", "false alarm", "--state-dir", str(state))
    assert "cancelled 1 pending flatten" in out.stdout
    run_briefly(state)
    actions = [a for _, a, _ in audit(state)]
    assert "command:flatten cancelled" in actions and "command:flatten" not in actions

"""`methtrader doctor` as an operator runs it on a new server: it says what works, what to fix,
and exits 1 only when `run` could not work — and it changes nothing."""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
from pathlib import Path

import pytest

from appliance.config import build_config
from appliance.doctor import (check_database, check_metrics_port, check_queue_file,
                              check_virtual_clock, render)
from appliance.exchange.factory import StartupError
from appliance.liveness import RunLock
from appliance.startup import open_store
from appliance.store import Store
from tests.e2e.conftest import methtrader
from tests.e2e.safety_helpers import QUIET, copy_state, run_briefly

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def doctor(*args: str) -> tuple[int, dict[str, dict]]:
    out = methtrader("doctor", "--json", *args, check=False)
    assert out.returncode in (0, 1), out.stderr
    return out.returncode, {f["check"]: f for f in json.loads(out.stdout)}


def test_a_fresh_server_with_no_gpu_no_network_and_no_state_dir_can_run(tmp_path: Path):
    state = tmp_path / "new" / "state"
    code, found = doctor("--state-dir", str(state), "--metrics-port", "0")
    assert code == 0, found
    assert all(f["status"] in ("ok", "warn") for f in found.values())
    assert found["package duckdb"]["status"] == "ok"
    assert "CPUExecutionProvider" in found["onnxruntime providers"]["detail"]
    assert found["exchange"]["detail"].startswith("sim")
    assert "would be created" in found["state dir"]["detail"]
    assert not state.parent.exists()  # probed, never created


def test_a_state_dir_that_is_a_file_fails_and_says_what_to_do(tmp_path: Path):
    not_a_dir = tmp_path / "state"
    not_a_dir.write_text("oops")
    code, found = doctor("--state-dir", str(not_a_dir), "--metrics-port", "0")
    assert code == 1
    assert found["state dir"]["status"] == "fail"
    assert "not a directory" in found["state dir"]["detail"]
    assert "--state-dir" in found["state dir"]["fix"]
    text = methtrader("doctor", "--state-dir", str(not_a_dir), "--metrics-port", "0",
                      check=False)
    assert text.returncode == 1
    assert "FAIL  state dir" in text.stdout and "cannot work" in text.stdout


def test_a_loose_state_dir_is_a_warning_with_the_chmod(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    code, found = doctor("--state-dir", str(state), "--metrics-port", "0")
    assert code == 0
    assert found["state dir permissions"]["status"] == "warn"
    assert found["state dir permissions"]["fix"] == f"chmod 700 {state}"


def test_the_metrics_port_taken_by_another_program_fails_but_not_by_the_appliance(
        tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = str(other.getsockname()[1])
        code, found = doctor("--state-dir", str(state), "--metrics-port", port)
        assert code == 1
        assert found["metrics port"]["status"] == "fail"
        assert "in use" in found["metrics port"]["detail"]
        lock = RunLock(state).acquire()  # the appliance itself holds the port
        try:
            code, found = doctor("--state-dir", str(state), "--metrics-port", port)
        finally:
            lock.release()
        assert code == 0 and found["metrics port"]["status"] == "ok"
        assert "running" in found["metrics port"]["detail"]


def test_a_configured_exchange_is_asked_and_a_dead_one_fails(tmp_path: Path, fake_bybit):
    url = fake_bybit()
    state = str(tmp_path / "state")
    code, found = doctor("--state-dir", state, "--metrics-port", "0", "--exchange", "bybit",
                         "--base-url", url)
    assert code == 0 and found["exchange"]["status"] == "ok", found["exchange"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, found = doctor("--state-dir", state, "--metrics-port", "0", "--exchange", "bybit",
                         "--base-url", dead)
    assert code == 1 and found["exchange"]["status"] == "fail"
    assert dead in found["exchange"]["detail"]


def test_a_redis_job_queue_is_asked_and_a_dead_one_fails(tmp_path: Path, redis_url):
    state = str(tmp_path / "state")
    env = {"METHTRADER__JOBS__BACKEND": "redis", "METHTRADER__JOBS__REDIS_URL": redis_url}
    out = methtrader("doctor", "--json", "--state-dir", state, "--metrics-port", "0", env=env)
    found = {f["check"]: f for f in json.loads(out.stdout)}
    assert found["job queue"]["status"] == "ok" and "answers" in found["job queue"]["detail"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"redis://:hunter2@127.0.0.1:{s.getsockname()[1]}/0"
    out = methtrader("doctor", "--json", "--state-dir", state, "--metrics-port", "0",
                     env={**env, "METHTRADER__JOBS__REDIS_URL": dead}, check=False)
    assert out.returncode == 1
    found = {f["check"]: f for f in json.loads(out.stdout)}
    assert found["job queue"]["status"] == "fail" and "cannot reach Redis" in \
        found["job queue"]["detail"]
    assert "hunter2" not in out.stdout + out.stderr


# -- the state files `run` opens: a damaged one fails here, as `run` would ------------------

#: each state file and the doctor check that reads it
CHECK_OF = {"methtrader.duckdb": "database", "queue.db": "job queue",
            "clock.json": "virtual clock"}


@pytest.fixture(scope="module")
def ran_once(tmp_path_factory) -> Path:
    """A state dir as `run` leaves it: DuckDB file, SQLite queue, clock.json, bus."""
    state = tmp_path_factory.mktemp("ran") / "state"
    run_briefly(state)
    assert all((state / name).is_file() for name in CHECK_OF)
    return state


@pytest.fixture
def state(ran_once: Path, tmp_path: Path) -> Path:
    return copy_state(ran_once, tmp_path / "state")


def state_checks(state: Path) -> tuple[int, dict[str, dict]]:
    """doctor's three state-file checks, in this process (a doctor subprocess spends seconds
    importing what it checks; the CLI around them is tested by the tests that run it): the
    exit code doctor would give on them, and the findings by check."""
    cfg = build_config(env={}, overrides={"general": {"state_dir": str(state)}})
    found = [check_database(state), check_queue_file(state), check_virtual_clock(cfg)]
    code = 1 if any(f.status == "fail" for f in found) else 0
    return code, {f.check: f.as_dict() for f in found}


def truncate_to_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def overwrite_first_16k(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(random.Random(7).randbytes(16 * 1024))


def contents(root: Path) -> dict[str, str]:
    """Every path under ``root`` → its sha256 (files) or "dir"."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(root.rglob("*"))}


def test_a_state_dir_run_left_passes_and_doctor_changes_nothing_in_it(state: Path):
    before = contents(state)
    code, found = doctor("--state-dir", str(state), *QUIET)
    assert code == 0, found
    for name, check in CHECK_OF.items():
        assert found[check]["status"] == "ok", found[check]
        assert str(state / name) in found[check]["detail"]
    assert "schema version" in found["database"]["detail"]
    assert contents(state) == before  # no byte written, no -wal or -shm left behind


@pytest.mark.parametrize("damage", [truncate_to_half, overwrite_first_16k])
@pytest.mark.parametrize("name", list(CHECK_OF))
def test_a_damaged_state_file_fails_naming_the_file_and_what_to_do(state: Path, name: str,
                                                                   damage) -> None:
    damage(state / name)
    code, found = state_checks(state)
    assert code == 1
    finding = found[CHECK_OF[name]]
    assert finding["status"] == "fail", finding
    assert finding["detail"].startswith(str(state / name)), finding
    assert ("not a usable" in finding["detail"] or "is damaged" in finding["detail"]), finding
    assert finding["fix"], finding
    assert [c for c, f in found.items() if f["status"] == "fail"] == [CHECK_OF[name]]


def test_every_damaged_state_file_is_one_fail_line_and_run_cannot_work(state: Path):
    for name in CHECK_OF:
        overwrite_first_16k(state / name)
    out = methtrader("doctor", "--state-dir", str(state), *QUIET, check=False)
    assert out.returncode == 1, out.stderr
    fails = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == len(CHECK_OF), out.stdout
    for line, (name, check) in zip(fails, CHECK_OF.items()):
        assert line.split(None, 1)[1].startswith(check) and str(state / name) in line, line
    assert "3 failing" in out.stdout and "cannot work" in out.stdout


def test_the_database_is_refused_with_the_words_run_uses(state: Path):
    overwrite_first_16k(state / "methtrader.duckdb")
    _, found = state_checks(state)
    with pytest.raises(StartupError) as refused:
        open_store(state, patience_s=0)
    finding = found["database"]
    assert str(refused.value) == f"{finding['detail']}; {finding['fix']}"


def leave_a_wal(state: Path) -> Path:
    """Commit incidents that stay in the DuckDB WAL, as after a `run` killed before its
    checkpoint."""
    store = Store(state / "methtrader.duckdb")
    try:
        store.sql("PRAGMA disable_checkpoint_on_shutdown")
        store.sql("SET wal_autocheckpoint = '1GB'")
        for i in range(50):
            store.record_incident("test", "probe", f"incident {i} " + "x" * 200)
    finally:
        store.close()
    wal = state / "methtrader.duckdb.wal"
    assert wal.stat().st_size > 0
    return wal


def flip_the_last_entry(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.seek(-64, os.SEEK_END)
        fh.write(random.Random(7).randbytes(64))


@pytest.mark.parametrize("damage", [flip_the_last_entry, truncate_to_half,
                                    overwrite_first_16k])
def test_doctor_and_run_agree_on_a_damaged_wal(state: Path, damage) -> None:
    """DuckDB refuses a WAL entry whose checksum fails, and replays a torn or foreign WAL up
    to what it can trust: doctor says what `run` will do, either way."""
    damage(leave_a_wal(state))
    code, found = state_checks(state)
    finding = found["database"]
    try:
        open_store(state, patience_s=0).close()
    except StartupError as exc:
        assert code == 1 and finding["status"] == "fail", finding
        assert str(exc) == f"{finding['detail']}; {finding['fix']}"
    else:
        assert code == 0 and finding["status"] == "ok", finding
    if damage is flip_the_last_entry:
        assert finding["status"] == "fail" and "WAL" in finding["detail"], finding


def test_while_run_holds_the_state_dir_its_files_are_left_alone(state: Path):
    overwrite_first_16k(state / "methtrader.duckdb")  # it would fail, were it opened
    lock = RunLock(state).acquire()
    try:
        code, found = state_checks(state)
    finally:
        lock.release()
    assert code == 0, found
    for check in CHECK_OF.values():
        assert found[check]["status"] == "ok" and "running appliance" in found[check]["detail"]


def test_while_run_holds_the_state_dir_doctor_does_not_say_run_can_start(state: Path):
    lock = RunLock(state).acquire()
    try:
        text = render([check_database(state), check_metrics_port(9108, state)])
    finally:
        lock.release()
    assert text.endswith("0 failing, 0 warning(s): `methtrader run` is running on this state dir")
    assert "127.0.0.1:9108 not tested" in text  # run may listen on another port (or none)


def test_a_fresh_state_dir_has_no_state_files_and_that_is_fine(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    code, found = doctor("--state-dir", str(state), *QUIET)
    assert code == 0, found
    for check in CHECK_OF.values():
        assert found[check]["status"] == "ok" and "none yet" in found[check]["detail"]
    assert list(state.iterdir()) == []

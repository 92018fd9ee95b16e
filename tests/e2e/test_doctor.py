"""`methtrader doctor` as an operator runs it on a new server: it says what works, what to fix,
and exits 1 only when `run` could not work — and it changes nothing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from appliance.liveness import RunLock
from tests.e2e.conftest import methtrader

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

"""``methtrader run`` end to end, as a subprocess, on the simulated market."""

from __future__ import annotations

import json
import signal
import time

import duckdb
import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import methtrader, status_json, stderr_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def scrape(port: int) -> str | None:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except httpx.HTTPError:
        return None
    return r.text if r.status_code == 200 and "candles_ingested_total{" in r.text else None


def test_run_for_20s_writes_candles_serves_metrics_and_takes_the_kill_switch(
        tmp_path, run_proc):
    state = tmp_path / "state"
    port = free_port()
    proc = run_proc(state, "--for", "20s", "--speed", "600", "--metrics-port", str(port))

    text = wait_for(lambda: scrape(port), 15, "the metrics endpoint")
    for name in ("pairs_total", "datasets_built_total", "models_trained_total",
                 "trade_latency_ms_bucket", "maintenance_mode", "heartbeat_age_seconds",
                 "candles_ingested_total"):
        assert name in text, name

    live = wait_for(lambda: (s := status_json(state))["running"] and s["candles"] and s, 15,
                    "status from the running appliance")
    assert live["source"] == "bus"
    methtrader("kill", "--reason", "e2e drill", "--state-dir", str(state))
    assert status_json(state)["maintenance_mode"] is True

    assert proc.wait(timeout=40) == 0, stderr_of(proc)[-3000:]
    after = status_json(state)
    assert after["running"] is False and after["source"] == "duckdb"
    assert after["candles"] > 0 and len(after["symbols"]) >= 10
    assert set(after["services"]) >= {"feed", "heartbeat", "operator"}
    assert all(s["state"] != "failed" and s["restarts"] == 0 for s in after["services"].values())
    assert after["maintenance_mode"] is True
    for key in ("heartbeat_age_s", "deploys_frozen", "models", "trades", "equity"):
        assert key in after

    con = duckdb.connect(str(state / "methtrader.duckdb"), read_only=True)
    audit = con.execute("SELECT actor, action, reason FROM audit_log").fetchall()
    con.close()
    assert any(a[1] == "maintenance_mode=on" and a[2] == "e2e drill" for a in audit)
    logs = (state / "logs" / "methtrader.jsonl").read_text().splitlines()
    assert logs and all("service" in json.loads(line) for line in logs)


def test_run_until_two_market_hours_stops_on_market_time(tmp_path, run_proc):
    state = tmp_path / "state"
    # the clock alone: market time does not wait for the first models here, nor for a long
    # backfill (the sim market serves one request at a time: 90 days of every pair's history
    # kept the feed, and so the clock, waiting for about 40 s)
    proc = run_proc(state, "--until", "2h", "--speed", "3600", "--metrics-port", "0",
                    env={"METHTRADER__TRAINING__BOOTSTRAP_HOLD_S": "0",
                         "METHTRADER__DATASETS__DAYS": "1"})
    assert proc.wait(timeout=120) == 0, stderr_of(proc)[-3000:]
    st = status_json(state)
    assert st["candles"] > 0 and len(st["symbols"]) >= 10
    assert not any(s["state"] == "failed" for s in st["services"].values())
    saved = json.loads((state / "clock.json").read_text())["market_time"]
    assert saved * 1000 >= max(st["latest"].values())  # nothing from the future was stored
    con = duckdb.connect(str(state / "methtrader.duckdb"), read_only=True)
    lo, hi = con.execute("SELECT min(open_time), max(open_time) FROM candles "
                         "WHERE symbol = 'BTCUSDT'").fetchone()
    n = con.execute("SELECT count(*) FROM candles WHERE symbol = 'BTCUSDT'").fetchone()[0]
    con.close()
    assert hi - lo >= 2 * 3600_000 and n == (hi - lo) // 60_000 + 1  # no gap


def test_sigterm_stops_cleanly_and_the_clock_resumes(tmp_path, run_proc):
    state = tmp_path / "state"
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0")
    wait_for(lambda: status_json(state)["candles"] > 0, 20, "first candles")
    second = methtrader("run", "--state-dir", str(state), "--metrics-port", "0", check=False)
    assert second.returncode == 1 and "already running" in second.stderr
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5.0
    stopped = json.loads((state / "clock.json").read_text())["market_time"]
    st = status_json(state)
    assert st["running"] is False
    assert all(s["state"] == "stopped" for s in st["services"].values())

    again = run_proc(state, "--for", "3s", "--speed", "60", "--metrics-port", "0")
    assert again.wait(timeout=30) == 0
    resumed = json.loads((state / "clock.json").read_text())["market_time"]
    assert stopped < resumed < stopped + 10 * 60  # resumed from the saved time, not wall time


def test_kill_and_resume_work_without_a_running_appliance(tmp_path):
    state = tmp_path / "state"
    methtrader("run", "--for", "1s", "--metrics-port", "0", "--state-dir", str(state))
    out = methtrader("kill", "--reason", "weekend", "--json", "--state-dir", str(state))
    body = json.loads(out.stdout)
    assert body["maintenance_mode"] is True and body["audit"]["reason"] == "weekend"
    assert status_json(state)["maintenance_mode"] is True
    methtrader("resume", "--state-dir", str(state))
    st = status_json(state)
    assert st["maintenance_mode"] is False and st["running"] is False


def test_config_check_reports_the_bad_key_and_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[general]\nspeed = 10\n[feed]\nwarmup_minutes = 'lots'\n")
    out = methtrader("config", "check", str(bad), check=False)
    assert out.returncode == 2 and out.stdout == ""
    assert "feed.warmup_minutes" in out.stderr and "line 4" in out.stderr

    good = tmp_path / "good.toml"
    good.write_text("[general]\nspeed = 10\n")
    out = methtrader("config", "check", str(good), "--json")
    assert json.loads(out.stdout)["general"]["speed"] == 10.0
    out = methtrader("run", "--config", str(bad), "--state-dir", str(tmp_path / "s"),
                     check=False)
    assert out.returncode == 2 and not (tmp_path / "s").exists()  # nothing started

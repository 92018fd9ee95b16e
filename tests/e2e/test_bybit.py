"""The real ``bybit`` adapter against ``methtrader fake-bybit`` over loopback TCP, driven the
way an operator drives it: ``--exchange bybit --base-url http://127.0.0.1:PORT``."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from appliance.exchange.simmarket import DAY_MS, SimMarket
from tests.e2e.conftest import METHTRADER, methtrader, status_json, stderr_of
from tests.e2e.test_run import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def bybit(url: str) -> list[str]:
    return ["--exchange", "bybit", "--base-url", url]


def test_discover_through_the_adapter_matches_the_sim_market(tmp_path, fake_bybit):
    url = fake_bybit()
    out = methtrader("discover", "--json", *bybit(url), "--state-dir", str(tmp_path / "s"))
    rows = json.loads(out.stdout)
    assert {"symbol", "turnover24h", "tradable"} <= set(rows[0])
    tradable = {r["symbol"] for r in rows if r["tradable"]}
    sim = {t.symbol for t in SimMarket(7).tickers(int(time.time() * 1000))
           if t.turnover_24h > 10e6}
    assert len(tradable) >= 15 and len(tradable ^ sim) <= 2  # a pair may sit on the bar


def day_files(state: Path, symbol: str) -> list[Path]:
    return sorted((state / "lake/candles/interval=1m" / f"symbol={symbol}").glob("day=*.parquet"))


def test_backfill_killed_midway_resumes_without_gaps_or_duplicates(tmp_path, fake_bybit):
    url = fake_bybit("--latency-ms", "40")
    state = tmp_path / "state"
    args = [*METHTRADER, "backfill", "--days", "60", *bybit(url), "--state-dir", str(state),
            "--json", "BTCUSDT", "ETHUSDT"]
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: len(day_files(state, "BTCUSDT")) >= 25, 60, "a first run of days written")
    first.kill()  # SIGKILL: no clean-up at all
    first.wait(timeout=10)
    assert len(day_files(state, "ETHUSDT")) < 61  # it really was cut short

    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    report = {r["symbol"]: r for r in json.loads(out.stdout)}
    market = SimMarket(7)
    for symbol in ("BTCUSDT", "ETHUSDT"):
        assert report[symbol]["days_skipped"] >= (25 if symbol == "BTCUSDT" else 0)
        files = day_files(state, symbol)
        assert len(files) == 61
        times = np.concatenate([pq.read_table(f).column("open_time").to_numpy() for f in files])
        assert np.all(np.diff(times) == 60_000)  # every minute once, in order
        complete = files[:-1]  # the last day is today's, still running
        for f in complete:
            table = pq.read_table(f)
            t0 = int(table.column("open_time")[0].as_py())
            truth = market.candles(symbol, t0, t0 + DAY_MS)
            assert table.num_rows == 1440
            assert np.array_equal(table.column("close").to_numpy(), truth[:, 4])
        # the pair's funding history over the same 60 days, next to its candles
        funding = pq.read_table(state / "lake/funding" / f"symbol={symbol}" / "funding.parquet")
        times = funding.column("time").to_numpy()
        assert funding.num_rows in (180, 181) and np.all(np.diff(times) == 8 * 3_600_000)
        assert funding.column("rate").to_pylist() == [
            r for _, r in market.funding_rates(symbol, int(times[0]) - 1, int(times[-1]))]
        assert (state / "lake/manifests" / f"{symbol}-funding.json").exists()


def test_run_on_the_bybit_adapter_feeds_candles(tmp_path, fake_bybit, run_proc):
    url = fake_bybit()
    state = tmp_path / "state"
    proc = run_proc(state, *bybit(url), "--for", "15s", "--metrics-port", "0")
    assert proc.wait(timeout=60) == 0, stderr_of(proc)[-3000:]
    st = status_json(state)
    assert st["exchange"] == "bybit" and st["candles"] > 0 and len(st["symbols"]) >= 10
    assert not any(s["state"] == "failed" for s in st["services"].values())
    assert all(s["restarts"] == 0 for s in st["services"].values()), st["services"]


def test_run_with_keys_bybit_refuses_stops_in_one_line_with_maintenance_on(tmp_path, fake_bybit,
                                                                          run_proc):
    """A refused API key (retCode 10003) is no outage to wait out: nothing private works until
    an operator fixes it, so live `run` stops at once, fails closed, and never shows the key."""
    url = fake_bybit()
    live = tmp_path / "live.toml"
    live.write_text("[bybit]\npaper = false\n")
    state = tmp_path / "state"
    keys = {"BYBIT_API_KEY": "not-a-key-4c1e", "BYBIT_API_SECRET": "not-a-secret-9d2f"}
    proc = run_proc(state, "--config", str(live), *bybit(url), "--for", "60s",
                    "--metrics-port", "0", env=keys)
    assert proc.wait(timeout=60) == 1
    err = stderr_of(proc)
    lines = [line for line in err.splitlines() if line.startswith("methtrader: ")]
    assert len(lines) == 1 and "Bybit refused the API key" in lines[0]
    assert "retCode 10003" in lines[0] and "maintenance mode ON" in lines[0]
    assert "not-a-secret-9d2f" not in err
    assert status_json(state)["maintenance_mode"] is True

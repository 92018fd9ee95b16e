"""``methtrader drift`` as an operator runs it: a real subprocess reading the bus of a state dir
whose DuckDB file another process holds (as `run` does), text and --json, and the one-line
answers when there is nothing yet or a symbol has no figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from appliance.bus import Bus
from appliance.store import Store
from tests.e2e.conftest import methtrader

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

T = 1_780_000_000.0


def symbol_figures(verdict: str, kl: float, line: float | None) -> dict:
    return {"model_id": "m-20260528-t1-a-rf", "group": "t1-a", "timeframe": "5m", "kl": kl,
            "features": {"atr_14": 3 * kl, "vol_12": 2 * kl, "ret_1": kl / 2},
            "verdict": verdict, "mean": -3.0, "std": 0.2, "line": line,
            "zscore": None if line is None else 4.2, "points": 0 if line is None else 120,
            "history": [[T - 3600 * i, 0.05] for i in range(5, 0, -1)] + [[T, kl]],
            "moved": ["atr_14", "vol_12", "ret_1"], "bars": 864,
            "vol_ratio": 2.5 if verdict == "drift" else 1.0,
            "vol_regime": "high" if verdict == "drift" else "normal",
            "last_retrain": None if verdict != "drift" else
            {"ts": T, "run_id": "20260528-t1-a-rf-drift2000"}}


@pytest.fixture
def state(tmp_path: Path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    store = Store(state_dir / "methtrader.duckdb")  # held, as `run` holds it
    with Bus(state_dir / "bus"):
        pass
    yield state_dir
    store.close()


def put(state_dir: Path) -> None:
    with Bus(state_dir / "bus") as bus:
        bus.put_snapshot("drift", {"ts": T, "sigma": 3.0, "window_s": 3 * 86400.0,
                                   "interval_s": 3600.0, "symbols": {
                                       "BTCUSDT": symbol_figures("ok", 0.04, 0.09),
                                       "SOLUSDT": symbol_figures("drift", 0.4, 0.12),
                                       "ETHUSDT": symbol_figures("warming", 0.05, None)}})


def test_before_any_pass_it_says_so_in_one_line(state) -> None:
    out = methtrader("drift", "--state-dir", str(state), check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().startswith("methtrader: no drift figures yet")
    out = methtrader("drift", "--json", "--state-dir", str(state), check=False)
    assert out.returncode == 1 and "no drift figures yet" in json.loads(out.stdout)["error"]


def test_every_symbols_verdict_while_run_holds_the_database(state) -> None:
    put(state)
    text = methtrader("drift", "--state-dir", str(state)).stdout
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.split() and line.split()[0].endswith("USDT")}
    assert {s: r[1:3] for s, r in rows.items()} == {
        "BTCUSDT": ["ok", "0.040"], "SOLUSDT": ["drift", "0.400"], "ETHUSDT": ["warming", "0.050"]}
    assert list(rows) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert rows["SOLUSDT"][3] == "0.120" and rows["ETHUSDT"][3] == "—"
    assert "early retrain 20260528-t1-a-rf-drift2000" in text
    assert "seasonal volatility ×2.50 of its profile (high regime)" in text


def test_named_symbols_get_every_feature_and_json_carries_the_figures(state) -> None:
    put(state)
    text = methtrader("drift", "solusdt", "--state-dir", str(state)).stdout
    assert "BTCUSDT" not in text
    features = [line.split() for line in text.splitlines() if line.startswith("    ")
                and not line.strip().startswith(("early", "seasonal"))]
    assert [f[0] for f in features] == ["atr_14", "vol_12", "ret_1"]  # largest first
    assert "moved most" in text
    data = json.loads(methtrader("drift", "SOLUSDT", "BTCUSDT", "--json", "--state-dir",
                                 str(state)).stdout)
    assert list(data["symbols"]) == ["SOLUSDT", "BTCUSDT"]
    assert data["symbols"]["SOLUSDT"]["verdict"] == "drift"
    out = methtrader("drift", "DOGEUSDT", "--state-dir", str(state), check=False)
    assert out.returncode == 1
    assert "no drift figures for DOGEUSDT" in out.stderr and "BTCUSDT" in out.stderr

"""Drift on mission control: the Data pipeline screen's drift column per symbol (aggregate,
sparkline of its history, the 3σ line, the verdict, the seasonal volatility ratio and regime) and the Incidents screen's drift retrains,
read from the ``drift`` snapshot as the drift service publishes it, under Pilot."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.bus import Bus
from tests.tui.conftest import MARKET_T0, make_app, run_scenario, switch_to, wait_for
from tests.tui.helpers import rows

pytestmark = pytest.mark.timeout(60)
RETRAIN = {"ts": MARKET_T0 - 600, "symbol": "SOLUSDT", "group": "t2-a", "model_id": "m-sol",
           "kl": 0.41, "line": 0.12, "zscore": 5.2, "features": ["vol_48", "atr_14", "vol_12"],
           "run_id": "20240601-t2-a-rf-drift1150"}


def figures(kl: float, line: float | None, verdict: str, history: list[float],
            vol: float | None = 1.04, regime: str | None = "normal") -> dict:
    return {"vol_ratio": vol, "vol_regime": regime, "model_id": "m-x", "group": "t1-a", "timeframe": "5m", "kl": kl,
            "features": {"atr_14": kl}, "verdict": verdict, "mean": None, "std": None,
            "line": line, "zscore": None, "points": len(history), "moved": ["atr_14"],
            "history": [[MARKET_T0 - 3600 * (len(history) - i), v]
                        for i, v in enumerate(history)], "bars": 864, "last_retrain": None}


def put_drift(state_dir: Path, symbols: dict, retrains: list) -> None:
    with Bus(state_dir / "bus") as bus:
        bus.put_snapshot("drift", {"ts": MARKET_T0, "sigma": 3.0, "window_s": 259_200.0,
                                   "interval_s": 3600.0, "symbols": symbols,
                                   "retrains": retrains})


def test_the_pipeline_shows_each_symbols_drift_history_and_line(bus_state: Path) -> None:
    put_drift(bus_state, {"BTCUSDT": figures(0.05, 0.09, "ok", [0.04, 0.05, 0.06, 0.05]),
                          "ETHUSDT": figures(0.06, None, "warming", [0.06], None, None)}, [])
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "4", "pipeline")
        table = app.screen.query_one("#drift")  # the sparkline is scaled to reach the line
        assert rows(app, "#drift") == [["BTCUSDT", "0.050", "▁▂▄▂", "0.090", "ok", "1.04"],
                                       ["ETHUSDT", "0.060", "▁", "—", "warming", "—"]]
        assert table.border_subtitle == "0/2 drifted"
        # the next pass: BTC crosses its line
        put_drift(bus_state, {"BTCUSDT": figures(0.3, 0.09, "drift",
                                                 [0.04, 0.05, 0.06, 0.05, 0.3], 2.65, "high"),
                              "ETHUSDT": figures(0.06, None, "warming", [0.06, 0.06])},
                  [RETRAIN])
        await wait_for(lambda: rows(app, "#drift")[0][4] == "drift")
        assert rows(app, "#drift")[0][:2] == ["BTCUSDT", "0.300"]
        assert rows(app, "#drift")[0][2][-1] == "█" and table.border_subtitle == "1/2 drifted"
        assert rows(app, "#drift")[0][5] == "2.65 high"

    run_scenario(app, scenario)


def test_incidents_list_the_drift_retrains(bus_state: Path) -> None:
    app = make_app(bus_state)

    async def scenario(pilot) -> None:
        await switch_to(app, pilot, "6", "incidents")
        assert rows(app, "#drift-retrains") == []
        put_drift(bus_state, {}, [RETRAIN, {**RETRAIN, "ts": MARKET_T0 - 90_000,
                                            "symbol": "BTCUSDT", "run_id": None}])
        await wait_for(lambda: len(rows(app, "#drift-retrains")) == 2)
        assert rows(app, "#drift-retrains") == [
            ["2024-06-01 11:50:00", "SOLUSDT", "t2-a", "0.410 / 0.120",
             "vol_48, atr_14, vol_12", "20240601-t2-a-rf-drift1150"],
            ["2024-05-31 11:00:00", "BTCUSDT", "t2-a", "0.410 / 0.120",
             "vol_48, atr_14, vol_12", "(retraining off)"]]
        # the rest of the screen is as before
        assert [r[2] for r in rows(app, "#incidents")] == ["chaos", "chaos", "restart", "crash"]

    run_scenario(app, scenario)

"""A real bus in tmp_path filled with fixed data (fixed market timestamps, so screenshots are
deterministic), and helpers to drive the app from sync tests with asyncio.run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

import pytest

from appliance.bus import DEPLOYS_FROZEN, MAINTENANCE_MODE, Bus
from appliance.liveness import RunLock
from tui.app import MissionControl

MARKET_T0 = 1_717_243_200  # 2024-06-01 12:00:00 UTC
TRADES = 60
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "AVAXUSDT")
SERVICES = {
    "feed": ("running", 0, None), "discovery": ("running", 0, None),
    "datasets": ("running", 0, None), "training": ("running", 1, None),
    "shadow": ("running", 0, None),
    "trading": ("running", 2, "ConnectionResetError: peer closed the socket"),
    "risk": ("running", 0, None), "drift": ("backoff", 3, "ValueError: empty reference window"),
    "chaos": ("running", 0, None), "huey": ("running", 0, None), "metrics": ("running", 0, None),
}


def trade(i: int) -> dict[str, Any]:
    """Trade number i (0 = oldest); its P&L sign varies so both colours show."""
    return {"ts_ms": (MARKET_T0 + i * 60) * 1000, "symbol": SYMBOLS[i % len(SYMBOLS)],
            "side": "Buy" if i % 3 else "Sell", "qty": round(0.01 * (i + 1), 4),
            "price": round(100 + i * 1.25, 4), "pnl": round(((i * 37) % 21 - 10) * 0.75, 2),
            "model_id": f"m{i % 4:03d}", "mode": "prod" if i % 2 else "shadow"}


def heartbeat() -> dict[str, Any]:
    return {"pid": 4242, "market_time": MARKET_T0 + 3600, "started_at": MARKET_T0 - 86400,
            "exchange": "sim", "speed": 60.0,
            "services": {name: {"state": s, "restarts": r, "last_error": e}
                         for name, (s, r, e) in SERVICES.items()}}


def fill_bus(bus: Bus) -> None:
    bus.beat(heartbeat())
    bus.put_snapshot("status", {
        "candles": 1_296_000, "symbols": list(SYMBOLS),
        "latest": {s: (MARKET_T0 + 3540) * 1000 for s in SYMBOLS},
        "models": {"prod": 3, "shadow": 5, "candidate": 2, "retired": 1, "rejected": 4,
                   "archived": 7},
        "trades": 1284, "equity": 10234.56, "daily_pnl": -182.4, "sharpe": 1.87,
        "sources": {
            "bybit-rest": {"lag_s": 1.2, "missing": 0, "cache_hit_rate": 0.97, "healthy": True},
            "bybit-ws": {"lag_s": 0.4, "missing": 3, "cache_hit_rate": None, "healthy": True},
            "lake": {"lag_s": 75.0, "missing": 12, "cache_hit_rate": 0.81, "healthy": False},
        }})
    bus.put_snapshot("models", [
        {"model_id": "m000", "group": "BTCUSDT", "kind": "lstm", "mode": "prod", "sharpe": 1.92,
         "pnl": 812.5, "days_in_shadow": 7.0, "trades": 412, "fills": 1650, "parity": 0.0031,
         "pinned": True, "since": 1717243200.0, "run_id": "r000", "timeframe": "1h"},
        {"model_id": "m001", "group": "ETHUSDT", "kind": "rf", "mode": "prod", "sharpe": 1.41,
         "pnl": 301.0, "days_in_shadow": 7.0, "trades": 390, "pinned": False},
        {"model_id": "m002", "group": "BTCUSDT", "kind": "ensemble", "mode": "shadow",
         "sharpe": 2.35, "pnl": 55.2, "days_in_shadow": 3.5, "trades": 88, "pinned": False,
         "autogen": True},
        {"model_id": "m003", "group": "SOLUSDT", "kind": "ddqn", "mode": "shadow",
         "sharpe": -0.4, "pnl": -12.0, "days_in_shadow": 1.25, "trades": 40, "pinned": False,
         "run_id": "r003", "timeframe": "5m", "parent_run_id": "r000",
         "parent_model_id": "m000"},
        {"model_id": "m004", "group": "XRPUSDT", "kind": "mlp", "mode": "candidate"},
        {"model_id": "m005", "group": "XRPUSDT", "kind": "mlp", "mode": "archived",
         "sharpe": 0.1, "pnl": -3.0, "days_in_shadow": 7.0, "trades": 12, "pinned": False},
        {"model_id": "m006", "group": "ETHUSDT", "kind": "mlp", "mode": "retired",
         "sharpe": 0.9, "since": 1717200000.0, "pinned": False},
    ])
    bus.put_snapshot("training", [
        {"run_id": "r-lstm-btc", "model_id": "m010", "group": "BTCUSDT", "symbols": ["BTCUSDT"],
         "kind": "lstm", "status": "running", "percent": 40.0, "epoch": 4, "loss": 0.612,
         "loss_curve": [0.95, 0.81, 0.70, 0.612], "device": "cuda"},
        {"run_id": "r-rf-eth", "model_id": "m011", "group": "ETHUSDT", "symbols": ["ETHUSDT"],
         "kind": "rf", "status": "completed", "percent": 100.0, "epoch": 1, "loss": 0.41,
         "loss_curve": [0.41], "device": "cpu", "timeframe": "1h", "wf_mean": 1.2,
         "wf_std": 0.8, "wf_score": 0.8,
         "folds": [{"start": 1, "end": 2, "sharpe": 2.0, "trades": 31},
                   {"start": 2, "end": 3, "sharpe": 0.4, "trades": 27}]},
        {"run_id": "r-ddqn-sol", "model_id": "m012", "group": "SOLUSDT", "symbols": ["SOLUSDT"],
         "kind": "ddqn", "status": "failed", "percent": 12.5, "epoch": 2, "loss": None,
         "loss_curve": [1.3, 1.7], "device": "cpu"},
        {"run_id": "r-ens-all", "model_id": "m013", "group": "basket",
         "symbols": list(SYMBOLS), "kind": "ensemble", "status": "queued", "percent": 0.0},
        {"run_id": "r-mlp-xrp", "model_id": "m014", "group": "XRPUSDT", "symbols": ["XRPUSDT"],
         "kind": "mlp", "status": "queued"},
    ])
    bus.put_snapshot("pipeline", {
        "backfill": {"BTCUSDT": 100.0, "ETHUSDT": 100.0, "SOLUSDT": 64.5, "DOGEUSDT": 3.0},
        "missing": {"BTCUSDT": 0, "ETHUSDT": 2, "SOLUSDT": 10},
        "cache_hit_rate": 0.91,
        "discovery": [
            {"ts": MARKET_T0 - 7200, "symbol": "AVAXUSDT", "event": "listed"},
            {"ts": MARKET_T0 - 3600, "symbol": "LUNAUSDT", "event": "delisted"},
            {"ts": MARKET_T0 - 1800, "symbol": "DOGEUSDT", "event": "crossed_bar"},
        ]})
    bus.put_snapshot("incidents", [
        {"ts": MARKET_T0 - 5000, "service": "trading", "kind": "crash",
         "message": "ConnectionResetError: peer closed the socket", "mttr_s": None},
        {"ts": MARKET_T0 - 4990, "service": "trading", "kind": "restart", "message": "restarted",
         "mttr_s": 1.4},
        {"ts": MARKET_T0 - 3000, "service": "feed", "kind": "chaos",
         "message": "chaos: killed feed", "mttr_s": 0.8},
        {"ts": MARKET_T0 - 2000, "service": "datasets", "kind": "chaos",
         "message": "chaos: disk full on lake write", "mttr_s": 1.6},
    ])
    for i in range(TRADES):
        bus.publish("trade", trade(i), service="trading", market_ts=MARKET_T0 + i * 60)
    bus.set_switch(MAINTENANCE_MODE, True, actor="alice", reason="drill", source="cli")
    bus.set_switch(MAINTENANCE_MODE, False, actor="alice", reason="drill over", source="cli")
    bus.set_switch(DEPLOYS_FROZEN, True, actor="bob", reason="release freeze", source="cli")


@pytest.fixture
def stopped_bus_state(tmp_path: Path) -> Path:
    """A filled bus whose appliance is not running (nobody holds its run lock)."""
    state = tmp_path / "state"
    with Bus(state / "bus") as bus:
        fill_bus(bus)
    return state


@pytest.fixture
def bus_state(stopped_bus_state: Path) -> Iterator[Path]:
    """A filled bus with its appliance up: this test holds the run lock, as `run` would."""
    with RunLock(stopped_bus_state):
        yield stopped_bus_state


def make_app(state_dir: Path, **kwargs: Any) -> MissionControl:
    kwargs.setdefault("poll_interval", 0.1)
    kwargs.setdefault("actor", "operator-test")
    return MissionControl(state_dir, **kwargs)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Yield to the app until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        await asyncio.sleep(0.02)


def run_scenario(app: MissionControl, scenario: Callable[[Any], Awaitable[None]],
                 size: tuple[int, int] = (120, 40)) -> None:
    """Run ``scenario(pilot)`` against ``app`` once its first bus update has arrived."""
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await wait_for(lambda: app.state.version > 0)
            await pilot.pause()
            await scenario(pilot)

    asyncio.run(main())


async def switch_to(app: MissionControl, pilot: Any, key: str, mode: str) -> None:
    """Press ``key`` and wait until the screen of ``mode`` is up and has drawn a state."""
    await pilot.press(key)
    await wait_for(lambda: getattr(app.screen, "MODE", None) == mode
                   and app.screen.shown_version > 0)

"""``methtrader bench tui``: what mission control costs while the appliance is busy.

A temporary bus is filled for ``n_symbols`` (models, training runs, backfill, incidents), then
the real app runs headless (``App.run_test``) while a thread plays the appliance: it publishes
``events_per_s`` events (trades, training progress, source updates) and refreshes the heartbeat
and status snapshot every second. Figures:

* CPU of the TUI as % of one core (process CPU time minus the publisher thread's, over wall
  time), on the dashboard and on the trade feed; the budget is 10 % (docs/architecture.md);
* latency of a screen switch: press ``2`` then ``1`` and time until the new screen is up and
  has drawn the current state (the first visit of a screen composes it, so it is reported
  apart).

Headless means Textual composes every frame but writes no bytes to a terminal, so the cost of
the terminal and of SSH is not included.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from appliance.bus import Bus
from appliance.paths import StatePaths
from tui.app import MissionControl

CPU_BUDGET_PCT = 10.0
KINDS = ("rf", "mlp", "lstm", "ddqn", "ensemble")


def _symbols(n: int) -> list[str]:
    return [f"SYM{i:03d}USDT" for i in range(n)]


def _status(symbols: list[str], equity: float) -> dict[str, Any]:
    return {"candles": 129_600 * len(symbols), "symbols": symbols,
            "latest": {s: 1_717_243_200_000 for s in symbols},
            "models": {"prod": len(symbols), "shadow": 2 * len(symbols), "candidate": 3,
                       "archived": 40},
            "trades": 5000, "equity": equity, "daily_pnl": equity - 10_000.0, "sharpe": 1.4,
            "sources": {name: {"lag_s": 0.5, "missing": 0, "cache_hit_rate": 0.95,
                               "healthy": True} for name in ("bybit-rest", "bybit-ws", "lake")}}


def _heartbeat() -> dict[str, Any]:
    services = ("feed", "discovery", "datasets", "training", "shadow", "trading", "risk",
                "drift", "chaos", "huey", "metrics")
    return {"pid": 1, "market_time": 1_717_243_200.0, "started_at": 1_717_200_000.0,
            "exchange": "sim", "speed": 60.0,
            "services": {s: {"state": "running", "restarts": 0, "last_error": None}
                         for s in services}}


def fill(bus: Bus, n_symbols: int) -> None:
    """A bus as the appliance leaves it with ``n_symbols`` pairs."""
    symbols = _symbols(n_symbols)
    bus.beat(_heartbeat())
    bus.put_snapshot("status", _status(symbols, 10_000.0))
    bus.put_snapshot("models", [
        {"model_id": f"m-{s}-{j}", "group": s, "kind": KINDS[(i + j) % len(KINDS)],
         "mode": "prod" if j == 0 else "shadow", "sharpe": 1.0 + (i % 7) / 10, "pnl": 12.5 * j,
         "days_in_shadow": float(j), "trades": 100 + i, "pinned": False}
        for i, s in enumerate(symbols) for j in range(3)])
    bus.put_snapshot("training", [
        {"run_id": f"r-{s}", "model_id": f"m-{s}-9", "group": s, "symbols": [s],
         "kind": KINDS[i % len(KINDS)], "status": "running", "percent": 10.0, "epoch": 2,
         "loss": 0.8, "loss_curve": [1.0, 0.8], "device": "CPU"} for i, s in enumerate(symbols)])
    bus.put_snapshot("pipeline", {"backfill": {s: 100.0 for s in symbols},
                                  "missing": {s: 0 for s in symbols}, "cache_hit_rate": 0.95,
                                  "discovery": [{"ts": 1_717_000_000 + i, "symbol": s,
                                                 "event": "listed"}
                                                for i, s in enumerate(symbols)]})
    bus.put_snapshot("incidents", [{"ts": 1_717_000_000 + i, "service": "feed", "kind": "chaos",
                                    "message": "chaos: killed feed", "mttr_s": 0.5}
                                   for i in range(20)])


class Publisher(threading.Thread):
    """Plays the appliance at a fixed event rate; ``cpu_s`` is this thread's CPU time so far."""

    def __init__(self, bus_path: Path, symbols: list[str], events_per_s: float) -> None:
        super().__init__(name="bench-publisher", daemon=True)
        self.bus_path, self.symbols, self.rate = bus_path, symbols, events_per_s
        self.stop_event = threading.Event()
        self.published = 0
        self.cpu_s = 0.0

    def run(self) -> None:
        with Bus(self.bus_path) as bus:
            start = next_beat = time.monotonic()
            while not self.stop_event.is_set():
                self._publish_one(bus, self.published)
                self.published += 1
                now = time.monotonic()
                if now >= next_beat:
                    bus.beat(_heartbeat())
                    bus.put_snapshot("status", _status(self.symbols, 10_000.0 + self.published))
                    next_beat = now + 1.0
                self.cpu_s = time.thread_time()
                delay = start + self.published / self.rate - time.monotonic()
                if delay > 0:
                    self.stop_event.wait(delay)

    def _publish_one(self, bus: Bus, i: int) -> None:
        symbol = self.symbols[i % len(self.symbols)]
        if i % 10 < 7:
            bus.publish("trade", {"ts_ms": 1_717_243_200_000 + i * 1000, "symbol": symbol,
                                  "side": "Buy" if i % 2 else "Sell", "qty": 0.01,
                                  "price": 100.0 + i % 50, "pnl": (i % 11 - 5) * 0.5,
                                  "model_id": f"m-{symbol}-{i % 3}",
                                  "mode": "prod" if i % 3 == 0 else "shadow"})
        elif i % 10 < 9:
            bus.publish("training_progress", {"run_id": f"r-{symbol}", "kind": "lstm",
                                              "epoch": 3 + i, "loss": 0.8 / (1 + i / 1000),
                                              "percent": min(100.0, 10 + i / 10),
                                              "status": "running"})
        else:
            bus.publish("data_source_update", {"source": "bybit-ws", "symbols": [symbol],
                                               "candles": 1, "lag_s": 0.3, "percent": 100.0})


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the TUI did not reach the expected state")
        await asyncio.sleep(0.001)


async def _cpu_window(app: MissionControl, publisher: Publisher,
                      seconds: float) -> dict[str, float]:
    wall0, cpu0, pub0 = time.monotonic(), time.process_time(), publisher.cpu_s
    v0 = app.state.version
    await asyncio.sleep(seconds)
    wall = time.monotonic() - wall0
    process = time.process_time() - cpu0
    tui = process - (publisher.cpu_s - pub0)
    return {"cpu_pct": round(100 * tui / wall, 2),
            "process_cpu_pct": round(100 * process / wall, 2),
            "updates_per_s": round((app.state.version - v0) / wall, 2)}


async def _switch(app: MissionControl, key: str, mode: str) -> float:
    """Milliseconds from the key press to the new screen showing the current state. The key
    is posted like a terminal's (Pilot.press would also wait for the process to go idle)."""
    start = time.perf_counter()
    app.simulate_key(key)
    await _until(lambda: getattr(app.screen, "MODE", None) == mode
                 and app.screen.shown_version == app.state.version)
    return (time.perf_counter() - start) * 1000


async def _measure(state: Path, symbols: list[str], events_per_s: float, seconds: float,
                   switches: int) -> dict[str, Any]:
    app = MissionControl(state, actor="bench")
    publisher = Publisher(StatePaths(state).bus, symbols, events_per_s)
    async with app.run_test(size=(120, 40)):
        await _until(lambda: app.state.version > 0)
        publisher.start()
        try:
            await asyncio.sleep(1.0)
            dashboard = await _cpu_window(app, publisher, seconds)
            first = await _switch(app, "2", "trades")
            trade_feed = await _cpu_window(app, publisher, seconds)
            latencies = []
            for _ in range(switches):
                latencies.append(await _switch(app, "1", "dashboard"))
                latencies.append(await _switch(app, "2", "trades"))
        finally:
            publisher.stop_event.set()
            await asyncio.to_thread(publisher.join, 10)
    return {"dashboard": dashboard, "trade_feed": trade_feed,
            "events_published": publisher.published,
            "key_switch_first_visit_ms": round(first, 1),
            "key_switch_ms_p50": round(statistics.median(latencies), 1),
            "key_switch_ms_max": round(max(latencies), 1)}


def run(n_symbols: int = 50, events_per_s: int = 100, seconds: float = 5,
        switches: int = 10) -> dict[str, Any]:
    """Measure the TUI; takes about ``2 * seconds + 3`` s. No pass/fail: figures only."""
    with tempfile.TemporaryDirectory(prefix="methtrader-bench-tui-") as tmp:
        state = Path(tmp) / "state"
        with Bus(StatePaths(state).bus) as bus:
            fill(bus, n_symbols)
        figures = asyncio.run(_measure(state, _symbols(n_symbols), events_per_s, seconds,
                                       switches))
    return {"n_symbols": n_symbols, "events_per_s": events_per_s, "seconds": seconds,
            "cpu_budget_pct": CPU_BUDGET_PCT, **figures}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))

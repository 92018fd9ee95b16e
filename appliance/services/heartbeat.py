"""Heartbeats and status snapshots on the bus, in wall-clock time.

Every ``heartbeat_interval_s`` the appliance writes its heartbeat (pid, market time, each
service's state and restart count, whether the disk takes writes) and refreshes the metrics
that mirror the bus; it also announces a full disk and probes it until it takes writes again
(:class:`~appliance.disk_full.DiskWatch`). Every few
seconds it also refreshes the ``status`` snapshot from DuckDB, so ``methtrader status`` and the
TUI can answer while ``run`` holds the DuckDB file. It saves the virtual clock as it goes, so a
crash loses at most one interval of market time.
"""

from __future__ import annotations

import os
import shutil
import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import trio

from appliance.clock import VirtualClock, save_virtual_clock
from appliance.context import ServiceContext
from appliance.disk_full import DiskWatch, reducing_why
from appliance.contracts import Snapshot
from appliance.services.operator import sync_audit
from appliance.startup import recover_lost_bus
from appliance.store import Store
from models.metrics import periods_per_year, sharpe_ratio

NAME = "heartbeat"
TRADING = "trading"
SNAPSHOT_EVERY_S = 2.0


def status_snapshot(store: Store) -> dict[str, Any]:
    """The DuckDB half of ``methtrader status`` (runs in the store's thread)."""
    latest = store.latest_open_times("1m")
    return {
        "candles": store.candle_count(),
        "symbols": sorted(latest),
        "latest": latest,
        "models": store.model_counts(),
        "trades": store.trade_count(),
        "fills": store.fill_count(),
        "equity": store.last_equity(),
        "allocation": store.allocation(),
        **performance(store),
    }


def performance(store: Store) -> dict[str, Any]:
    """Today's P&L and the annualised Sharpe of the last 7 days of per-bar equity."""
    rows = store.sql("SELECT ts, equity FROM equity WHERE ts >= (SELECT max(ts) FROM equity) "
                     "- 7 * 86400000 ORDER BY ts")
    if len(rows) < 2:
        return {"daily_pnl": 0.0 if rows else None, "sharpe": None}
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    eq = np.array([r[1] for r in rows], dtype=float)
    day = ts[-1] - ts[-1] % 86_400_000
    start = eq[ts < day][-1] if np.any(ts < day) else eq[0]
    step = int(np.median(np.diff(ts))) or 300_000
    return {"daily_pnl": float(eq[-1] - start),
            "sharpe": sharpe_ratio(np.diff(eq) / eq[:-1], periods_per_year(step))}


def incidents_snapshot(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """The latest incidents, newest first, without tracebacks (the TUI's history after it
    starts; new ones reach it as events). A chaos incident carries its MTTR in its message
    (``mttr=1.234s``, :mod:`chaos.runner`); it is given as ``mttr_s`` for the MTTR column."""
    return [{"ts": i["ts"], "service": i["service"], "kind": i["kind"],
             "message": i["message"], "mttr_s": _mttr(i["message"]) if i["kind"] == "chaos"
             else None} for i in store.incidents(limit)]


def _mttr(message: str) -> float | None:
    m = re.search(r"mttr=([0-9.]+)s", message or "")
    return float(m.group(1)) if m else None


def pipeline_snapshot(store: Store, backfill: dict[str, float] | None) -> dict[str, Any]:
    """The Data pipeline screen's figures: backfill progress, missing candles, discoveries."""
    return {
        "backfill": backfill or {},
        "missing": {d["symbol"]: int(d["missing"] or 0) for d in store.datasets()
                    if d["interval"] == "1m"},
        "cache_hit_rate": None,
        "discovery": [{"ts": e["ts"], "symbol": e["symbol"], "event": e["event"]}
                      for e in store.pair_events(50)],
    }


def source_health(latest: dict[str, int], market_now: float, missing: int,
                  speed: float = 1.0) -> dict[str, Any]:
    """Lag of the newest stored candle's close behind the market clock.

    Healthy under 3 market minutes, plus what 5 wall seconds of polling are worth at the
    clock's speed (at ×600 the feed legitimately trails by several market minutes)."""
    if not latest:
        return {"lag_s": None, "missing": missing, "cache_hit_rate": None, "healthy": False}
    lag = market_now - (max(latest.values()) + 60_000) / 1000
    return {"lag_s": round(lag, 1), "missing": missing, "cache_hit_rate": None,
            "healthy": lag < 180 + 5 * speed}


def service_states(ctx: ServiceContext, services: dict[str, dict[str, object]]
                   ) -> dict[str, dict[str, object]]:
    """The supervisor's service states as ``status`` shows them: a service that runs while the
    venue is down under it is ``degraded``, with why."""
    services = {name: dict(st) for name, st in services.items()}
    for name, why in ctx.degraded.items():
        if services.get(name, {}).get("state") == "running":
            services[name].update(state="degraded", last_error=why)
    return services


def heartbeat_payload(ctx: ServiceContext, services: dict[str, dict[str, object]],
                      started_at: float, *, final: bool = False) -> dict[str, Any]:
    now = time.time()
    services = service_states(ctx, services)
    disk_why = reducing_why(ctx)  # running, but only reducing positions: the disk is full
    if disk_why and services.get(TRADING, {}).get("state") == "running":
        services[TRADING].update(state="degraded", last_error=disk_why)
    return {
        "pid": os.getpid(), "market_time": ctx.clock.now(), "started_at": started_at,
        "exchange": ctx.exchange.name, "speed": getattr(ctx.clock, "speed", 1.0),
        "services": services, "stopped": final,
        "service_beats": {k: round(now - v, 3) for k, v in ctx.beats.items()},
        "disk": ctx.disk.snapshot(),
    }


async def run(ctx: ServiceContext, services: Callable[[], dict[str, dict[str, object]]],
              state_dir: Path, started_at: float, disk: DiskWatch | None = None) -> None:
    last_snapshot = 0.0
    disk = disk or DiskWatch(ctx)
    while True:
        ctx.beat(NAME)
        if await recover_lost_bus(ctx, sync_audit):
            last_snapshot = 0.0
        await disk.tick()
        states = services()
        ctx.bus.beat(heartbeat_payload(ctx, states, started_at))
        ctx.metrics.maintenance_mode.set(1 if ctx.bus.maintenance_mode else 0)
        ctx.metrics.deploys_frozen.set(1 if ctx.bus.deploys_frozen else 0)
        ctx.metrics.market_time_seconds.set(ctx.clock.now())
        usage = shutil.disk_usage(state_dir)
        ctx.metrics.disk_used_ratio.set(1 - usage.free / usage.total if usage.total else 0.0)
        now = time.time()
        for name, st in states.items():
            ctx.metrics.service_up.labels(name).set(1 if st["state"] == "running" else 0)
            if name in ctx.beats:
                ctx.metrics.heartbeat_age_seconds.labels(name).set(now - ctx.beats[name])
        if isinstance(ctx.clock, VirtualClock):
            await trio.to_thread.run_sync(save_virtual_clock, state_dir, ctx.clock)
        if now - last_snapshot >= SNAPSHOT_EVERY_S:
            snap = await ctx.store.run(status_snapshot, ctx.store.store)
            for mode, n in snap["models"].items():
                ctx.metrics.models.labels(mode).set(n)
            pipeline = await ctx.store.run(pipeline_snapshot, ctx.store.store,
                                           ctx.bus.snapshot(Snapshot.BACKFILL))
            snap["sources"] = {ctx.exchange.name: source_health(
                snap["latest"], ctx.clock.now(), sum(pipeline["missing"].values()),
                getattr(ctx.clock, "speed", 1.0))}
            ctx.bus.put_snapshot(Snapshot.STATUS, snap)
            ctx.bus.put_snapshot(Snapshot.PIPELINE, pipeline)
            ctx.bus.put_snapshot(Snapshot.INCIDENTS, await ctx.store.run(
                incidents_snapshot, ctx.store.store))
            last_snapshot = now
        await trio.sleep(ctx.cfg.supervisor.heartbeat_interval_s)

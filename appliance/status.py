"""``methtrader status``: what the appliance is doing, whether or not it is running.

Whether it runs is :func:`appliance.liveness.is_running` (the run lock), the same answer the TUI
gives; the heartbeat only tells how fresh the figures are. While ``run`` is up it owns the
DuckDB file, so the answer comes from the bus (the heartbeat and the ``status`` snapshot it
keeps current). After it stopped, the DuckDB file is read directly (read-only) so the figures
are exact. Nothing is created: a directory with no bus is reported as never started. A DuckDB
file that cannot be read is reported (``store_error``) beside what the bus still knows: whether
it runs and the kill switch are the answers an operator needs most then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from appliance.bus import DEPLOYS_FROZEN, MAINTENANCE_MODE, Bus
from appliance.contracts import Snapshot
from appliance.liveness import is_running, lock_holder
from appliance.paths import StatePaths
from appliance.services.heartbeat import status_snapshot
from appliance.store import Store, StoreDamaged, StoreError


def gather_status(state_dir: Path) -> dict[str, Any]:
    paths = StatePaths(state_dir)
    running = is_running(state_dir)
    bus = Bus(paths.bus) if paths.bus.is_dir() else None
    try:
        hb = bus.heartbeat() if bus else None
        age = bus.heartbeat_age() if bus else None
        snap = (bus.snapshot(Snapshot.STATUS) if bus else None) or {}
        source = "bus"
        store_error = None
        if not running and paths.duckdb.exists():
            try:
                store = Store(paths.duckdb, read_only=True)
            except duckdb.Error as exc:  # not a DuckDB file (any more): keep the snapshot
                store_error = f"{paths.duckdb} cannot be read ({str(exc).splitlines()[0]})"
            except StoreError:
                pass  # someone holds it (a run starting up): keep the snapshot
            else:
                try:
                    snap = status_snapshot(store)
                    source = "duckdb"
                except StoreDamaged as exc:
                    store_error = (f"{paths.duckdb} is damaged "
                                   f"({str(exc.__cause__ or exc).splitlines()[0]})")
                finally:
                    store.close()
        services = {name: {"state": st.get("state"), "restarts": st.get("restarts", 0),
                           "last_error": st.get("last_error")}
                    for name, st in ((hb or {}).get("services") or {}).items()}
        holder = lock_holder(state_dir) if running else None
        return {
            "running": running,
            "health": health(services) if running else None,
            "heartbeat_age_s": None if age is None else round(age, 3),
            "pid": (holder or {}).get("pid") or (hb or {}).get("pid"),
            "market_time": (hb or {}).get("market_time"),
            "exchange": (hb or {}).get("exchange"),
            "services": services,
            "candles": int(snap.get("candles") or 0),
            "symbols": list(snap.get("symbols") or []),
            "latest": dict(snap.get("latest") or {}),
            MAINTENANCE_MODE: bus.maintenance_mode if bus else True,
            "maintenance_why": _why(bus, MAINTENANCE_MODE) if bus else None,
            DEPLOYS_FROZEN: bus.deploys_frozen if bus else True,
            "models": {"prod": 0, "shadow": 0, "candidate": 0, "retired": 0, "rejected": 0,
                       "archived": 0, **(snap.get("models") or {})},
            "trades": int(snap.get("trades") or 0),
            "fills": int(snap.get("fills") or 0),
            "allocation": {"rule": None, "weights": {}, **(snap.get("allocation") or {}),
                           **(_weights(bus) if bus else {})},
            "equity": float(snap.get("equity") or 0.0),
            "daily_pnl": snap.get("daily_pnl"),
            "sharpe": snap.get("sharpe"),
            "source": source,
            "store_error": store_error,
            "state_dir": str(state_dir),
        }
    finally:
        if bus is not None:
            bus.close()


def _why(bus: Bus, name: str) -> str | None:
    """Who set a switch that is ON, and why (the journalled record); None when it is off."""
    meta = bus.switch_meta(name)
    if not meta or not meta.get("value"):
        return None
    return f"by {meta.get('actor', 'unknown')}: {meta.get('reason', '')}"


def health(services: dict[str, dict[str, Any]]) -> str:
    """The headline of a running appliance: FAILED when a service is down, DEGRADED when one
    runs through an exchange outage or waits to restart, else OK."""
    states = {st.get("state") for st in services.values()}
    if "failed" in states:
        return "FAILED"
    if states & {"degraded", "backoff", "starting"}:
        return "DEGRADED"
    return "OK"


def _weights(bus: Bus) -> dict[str, Any]:
    """The allocation rule's current weights, as the running engine last computed them."""
    live = bus.snapshot(Snapshot.ALLOCATION) or {}
    return {"rule": live.get("rule"), "weights": live.get("rule_weights", {})} if live else {}

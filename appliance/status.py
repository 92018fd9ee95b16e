"""``methtrader status``: what the appliance is doing, whether or not it is running.

While ``run`` is up it owns the DuckDB file, so the answer comes from the bus (the heartbeat
and the ``status`` snapshot it keeps current). After it stopped, the DuckDB file is read
directly (read-only) so the figures are exact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from appliance.bus import DEPLOYS_FROZEN, MAINTENANCE_MODE, Bus
from appliance.paths import StatePaths
from appliance.services.heartbeat import status_snapshot
from appliance.store import Store, StoreError


def gather_status(state_dir: Path, stale_after_s: float = 10.0) -> dict[str, Any]:
    bus = Bus(StatePaths(state_dir).bus)
    try:
        hb = bus.heartbeat()
        age = bus.heartbeat_age()
        running = (hb is not None and not hb.get("stopped") and age is not None
                   and age < stale_after_s and is_alive(int(hb.get("pid", 0))))
        snap = bus.snapshot("status") or {}
        source = "bus"
        db = StatePaths(state_dir).duckdb
        if not running and db.exists():
            try:
                store = Store(db, read_only=True)
            except StoreError:
                pass  # someone holds it (a run starting up): keep the snapshot
            else:
                try:
                    snap = status_snapshot(store)
                    source = "duckdb"
                finally:
                    store.close()
        services = {name: {"state": st.get("state"), "restarts": st.get("restarts", 0),
                           "last_error": st.get("last_error")}
                    for name, st in ((hb or {}).get("services") or {}).items()}
        return {
            "running": bool(running),
            "heartbeat_age_s": None if age is None else round(age, 3),
            "pid": (hb or {}).get("pid"),
            "market_time": (hb or {}).get("market_time"),
            "exchange": (hb or {}).get("exchange"),
            "services": services,
            "candles": int(snap.get("candles") or 0),
            "symbols": list(snap.get("symbols") or []),
            "latest": dict(snap.get("latest") or {}),
            MAINTENANCE_MODE: bus.maintenance_mode,
            DEPLOYS_FROZEN: bus.deploys_frozen,
            "models": {"prod": 0, "shadow": 0, "candidate": 0, "retired": 0, "rejected": 0,
                       "archived": 0, **(snap.get("models") or {})},
            "trades": int(snap.get("trades") or 0),
            "fills": int(snap.get("fills") or 0),
            "allocation": {"rule": None, "weights": {}, **(snap.get("allocation") or {}),
                           **_weights(bus)},
            "equity": float(snap.get("equity") or 0.0),
            "daily_pnl": snap.get("daily_pnl"),
            "sharpe": snap.get("sharpe"),
            "source": source,
            "state_dir": str(state_dir),
        }
    finally:
        bus.close()


def _weights(bus: Bus) -> dict[str, Any]:
    """The allocation rule's current weights, as the running engine last computed them."""
    live = bus.snapshot("allocation") or {}
    return {"rule": live.get("rule"), "weights": live.get("rule_weights", {})} if live else {}


def is_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

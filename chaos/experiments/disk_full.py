"""Disk full: every write of the store (DuckDB) and the lake (Parquet) fails with ENOSPC for a
bounded time (``chaos_disk_full``, honoured in the sim and paper runs only:
:mod:`appliance.chaos_hook`), as a full disk would; then the space returns.

Hypothesis (:mod:`appliance.disk_full`): while the disk is full no service crashes or is marked
failed (a service whose write was refused is degraded and waits), the appliance says so once (one
``outage`` incident of service ``disk`` for the episode) and shows trading degraded with the
reason (no new or larger positions); once writes go through again everything recovers by itself
(a ``recovered`` incident of ``disk``, healthy, data flowing), no minute is missing (the feed
fetches again what it could not store), no candle is stored twice and nothing is half-written.
MTTR: the end of the fault → healthy with a candle newer than any before the fault.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import duckdb

from appliance.commands import CommandFailed, send_and_wait
from appliance.contracts import Command, Event
from appliance.disk_full import NAME as DISK
from appliance.paths import StatePaths
from chaos.experiment import Experiment, Result, Verdict
from chaos.experiments.store_fault import orphans
from chaos.harness import Harness, RunProcess, duplicates, minute_gaps, start_healthy, stored_rows

NAME = "disk-full"


def _during(app: RunProcess, until: float) -> dict[str, Any]:
    """What the heartbeat showed until wall time ``until``: services failed and degraded, the
    disk's state and the trading service's reason."""
    seen: dict[str, Any] = {"failed": set(), "degraded": set(), "disk_full": False,
                            "trading_why": None}
    while time.time() < until:
        bus = app.bus()
        hb = (bus.heartbeat() if bus else None) or {}
        for svc, st in (hb.get("services") or {}).items():
            if st.get("state") == "failed":
                seen["failed"].add(svc)
            if st.get("state") == "degraded":
                seen["degraded"].add(svc)
                if svc == "trading":
                    seen["trading_why"] = st.get("last_error")
        seen["disk_full"] = seen["disk_full"] or bool((hb.get("disk") or {}).get("full"))
        time.sleep(0.1)
    return seen


def _orders_between(state_dir: Path, start_ms: int, end_ms: int) -> dict[str, int]:
    """Prod orders decided in [start_ms, end_ms) of market time, by status and reason."""
    con = duckdb.connect(str(StatePaths(state_dir).duckdb), read_only=True)
    try:
        rows = con.execute("SELECT status || ':' || coalesce(reason, ''), count(*) FROM orders "
                           "WHERE mode = 'prod' AND ts >= ? AND ts < ? GROUP BY 1",
                           [start_ms, end_ms]).fetchall()
    finally:
        con.close()
    return {k: int(n) for k, n in rows}


def run(h: Harness, rng: random.Random, *, fault_s: float = 8.0,
        recover_within_s: float = 60.0) -> Result:
    v = Verdict(NAME)
    state = h.state_dir(NAME)
    app = start_healthy(h, v, state, recover_within_s, "the fault")
    if app is None:
        return v.result(None)
    time.sleep(rng.uniform(0.0, 1.0))
    bus = app.bus()
    seq = bus.last_event_seq()
    newest = app.latest_candle()
    market_from = int(float((bus.heartbeat() or {}).get("market_time", 0)) * 1000)
    sent = time.time()  # the fault begins after this, so it ends after sent + fault_s
    try:
        send_and_wait(bus, Command.CHAOS_DISK_FULL, {"seconds": fault_s, "actor": "chaos"},
                      deadline_s=10, source="chaos")
    except CommandFailed as exc:
        v.check(False, f"the fault was not injected ({exc})")
        return v.result(None)
    ended = sent + fault_s
    seen = _during(app, ended)
    hb = app.bus().heartbeat() or {}
    market_to = int(float(hb.get("market_time", 0)) * 1000)
    mttr = app.wait_recovered(ended, recover_within_s, newer_than=newest)
    disk = (app.bus().heartbeat() or {}).get("disk") or {}
    incidents = [e["data"] for e in app.bus().events_since(seq, kinds=[Event.INCIDENT])]
    crashes = [f"{i['service']}: {i['kind']}: {i['message'][:120]}" for i in incidents
               if i.get("kind") in ("crash", "failed")]
    told = [i for i in incidents if i.get("service") == DISK and i.get("kind") == "outage"]
    back = [i for i in incidents if i.get("service") == DISK and i.get("kind") == "recovered"]
    v.check(bool(disk.get("refused", {}).get("duckdb")),
            "the fault never reached the appliance (no write was refused)")
    v.check(seen["disk_full"], "the heartbeat never said the disk was full")
    v.check(not seen["failed"], f"services marked failed: {sorted(seen['failed'])}")
    v.check(not crashes, f"crashes during the fault: {crashes}")
    v.check(len(told) == 1, f"{len(told)} disk-full incidents (want exactly one)")
    v.check(bool(told) and "disk full" in told[0]["message"],
            "the disk-full incident does not say the disk is full")
    v.check(bool(back), "no recovered incident after the disk took writes again")
    v.check("only reducing" in str(seen["trading_why"]),
            f"trading was not shown degraded for the full disk ({seen['trading_why']!r})")
    v.check(not disk.get("full"), "the disk still reads as full after the fault")
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    dup, gaps, half = duplicates(stored_rows(state)), minute_gaps(state), orphans(state)
    v.check(not half, f"half-written rows: {half}")
    orders = _orders_between(state, market_from, market_to)
    opened = {k: n for k, n in orders.items() if k.startswith("filled")}
    v.lost = sum(dup.values()) + sum(gaps.values()) + sum(half.values())
    v.details.update(fault_s=fault_s, refused_writes=disk.get("refused", {}),
                     degraded=sorted(seen["degraded"]), trading_reason=seen["trading_why"],
                     incidents={"outage": len(told), "recovered": len(back)},
                     orders_during_fault=orders, filled_during_fault=opened, duplicated=dup,
                     gaps=gaps, orphans=half)
    return v.result(mttr)


EXPERIMENT = Experiment(
    NAME, "writes refused for want of space: degraded, not crashed; said once; no new "
    "positions; everything recovers by itself with no minute missing or stored twice",
    "every DuckDB and lake write fails with ENOSPC for a few seconds, then space returns",
    target_mttr_s=5.0, run=run)

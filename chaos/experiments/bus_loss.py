"""Bus loss: the bus directory (``<state>/bus``) deleted under a running ``run``, twice: once
with both switches off, once after ``methtrader kill`` set maintenance mode ON.

``run`` notices that the directory it opened is gone (the heartbeat service checks every beat,
:func:`appliance.startup.recover_lost_bus`), copies what the lost journal still held into
DuckDB's ``audit_log``, reopens the bus and restores the switches from ``audit_log``.

Hypothesis: the same process keeps running; after each loss the switches on the new bus are
what they were before it (restored from ``audit_log`` by the appliance, with a ``bus_lost``
incident), so maintenance mode is still ON after the second loss and no order is accepted
after it; and data flows again.
MTTR: the deletion → healthy on the new bus with a new candle (the worse of the two).
"""

from __future__ import annotations

import random
import shutil
import time

import duckdb

from appliance.bus import DEPLOYS_FROZEN, MAINTENANCE_MODE
from appliance.contracts import Event
from appliance.paths import StatePaths
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import Harness, RunProcess, start_healthy, wait_until

NAME = "bus-loss"


def _lose_bus(app: RunProcess, v: Verdict, label: str, expect: dict[str, bool],
              recover_within_s: float) -> float | None:
    newest = app.latest_candle()
    app.drop_bus()
    shutil.rmtree(StatePaths(app.state_dir).bus)
    lost_at = time.time()
    took = app.wait_recovered(lost_at, recover_within_s, newer_than=newest)
    v.check(took is not None, f"{label}: not healthy on a new bus with a new candle within "
            f"{recover_within_s:g}s")
    bus = app.bus()
    restored = {n: bus.switch_meta(n) for n in (MAINTENANCE_MODE, DEPLOYS_FROZEN)} if bus \
        else {}
    for name, want in expect.items():
        rec = restored.get(name) or {}
        v.check(rec.get("value") is want and rec.get("actor") == "appliance"
                and "audit_log" in str(rec.get("reason")),
                f"{label}: {name} not restored {'ON' if want else 'off'} from audit_log "
                f"(found {rec or 'nothing'})")
    lost = wait_until(lambda: [e for e in bus.events_since(0, kinds=[Event.INCIDENT])
                               if e["data"].get("kind") == "bus_lost"], 5) if bus else None
    v.check(bool(lost), f"{label}: no bus_lost incident")
    v.details[label] = {"mttr_s": None if took is None else round(took, 3),
                        "switches": {n: (r or {}).get("value") for n, r in restored.items()}}
    return took


def run(h: Harness, rng: random.Random, *, recover_within_s: float = 60.0) -> Result:
    v = Verdict(NAME)
    state = h.state_dir(NAME)
    app = start_healthy(h, v, state, recover_within_s, "the loss")
    if app is None:
        return v.result(None)
    pid = app.pid
    time.sleep(rng.uniform(0.0, 1.0))
    first = _lose_bus(app, v, "switches off", {MAINTENANCE_MODE: False, DEPLOYS_FROZEN: False},
                      recover_within_s)
    out = app.cli("kill", "--reason", "chaos bus-loss")
    v.check(out.returncode == 0, f"methtrader kill failed: {out.stderr.strip()[-200:]}")
    killed_market_ms = int((app.bus().heartbeat() or {}).get("market_time", 0) * 1000)
    time.sleep(rng.uniform(0.0, 1.0))  # the kill may or may not be in audit_log yet
    second = _lose_bus(app, v, "after kill", {MAINTENANCE_MODE: True}, recover_within_s)
    bus = app.bus()
    v.check(bool(bus and bus.maintenance_mode), "maintenance_mode is not ON after the loss")
    v.check(app.alive and app.pid == pid, "run did not keep running through the losses")
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    con = duckdb.connect(str(StatePaths(state).duckdb), read_only=True)
    try:
        accepted = con.execute("SELECT count(*) FROM orders WHERE ts > ? AND status <> "
                               "'refused'", [killed_market_ms]).fetchone()[0]
    finally:
        con.close()
    v.check(accepted == 0, f"{accepted} orders accepted after the kill and the bus loss")
    v.details["accepted_after_kill"] = int(accepted)
    worst = None if first is None or second is None else max(first, second)
    return v.result(worst)


EXPERIMENT = Experiment(
    NAME, "run keeps running, reopens its bus and restores the switches from audit_log "
    "(maintenance stays ON after a kill); data flows again",
    "the bus directory deleted under a running `run`, before and after `methtrader kill`",
    target_mttr_s=5.0, run=run)

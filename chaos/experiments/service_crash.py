"""Service crash: an exception raised inside feed, trading, training, shadow and risk in turn
(``chaos_crash`` through the bus; :mod:`appliance.chaos_hook`).

Hypothesis: the supervisor records each crash as an incident and restarts the service; none is
marked failed; after each crash the appliance is healthy again and a new candle is stored.
MTTR: the crash → healthy with a new candle, the worst of the five (each is in the details,
with the supervisor's own crash → running time).
"""

from __future__ import annotations

import random
import time

from appliance.commands import CommandFailed, send_and_wait
from appliance.contracts import Command, Event
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import Harness, start_healthy, wait_until

NAME = "service-crash"
SERVICES = ("feed", "trading", "training", "shadow", "risk")


def run(h: Harness, rng: random.Random, *, services: tuple[str, ...] = SERVICES,
        recover_within_s: float = 60.0) -> Result:
    v = Verdict(NAME)
    app = start_healthy(h, v, h.state_dir(NAME), recover_within_s, "the first crash")
    if app is None:
        return v.result(None)
    worst: float | None = 0.0
    per: dict[str, dict] = {}
    for name in services:
        bus = app.bus()
        seq = bus.last_event_seq()
        before = int(app.services().get(name, {}).get("restarts") or 0)
        try:
            send_and_wait(bus, Command.CHAOS_CRASH, {"service": name, "reason": "chaos",
                                                    "actor": "chaos"}, deadline_s=10,
                          source="chaos")
        except CommandFailed as exc:
            v.check(False, f"{name}: the crash was not injected ({exc})")
            worst = None
            continue
        crash = wait_until(lambda: [
            e for e in bus.events_since(seq, kinds=[Event.INCIDENT])
            if e["data"].get("service") == name and e["data"].get("kind") == "crash"], 10)
        injected = crash[0]["ts"] if crash else time.time()
        v.check(bool(crash), f"{name}: no crash incident was recorded")
        took = app.wait_recovered(injected, recover_within_s, newer_than=app.latest_candle())
        st = app.services().get(name, {})
        v.check(int(st.get("restarts") or 0) > before, f"{name}: it was not restarted")
        v.check(took is not None, f"{name}: not healthy with a new candle within "
                f"{recover_within_s:g}s")
        per[name] = {"mttr_s": None if took is None else round(took, 3),
                     "supervisor_recovered_in_s": st.get("recovered_in_s")}
        worst = None if took is None or worst is None else max(worst, took)
    v.details["services"] = per
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    return v.result(worst)


EXPERIMENT = Experiment(
    NAME, "a service that raises is restarted, never marked failed, and data flows again",
    "an exception inside feed, trading, training, shadow and risk in turn",
    target_mttr_s=2.0, run=run)

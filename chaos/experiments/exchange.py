"""Exchange faults against ``methtrader fake-bybit``, each for a bounded time, then lifted: an
outage in three modes (every call answered HTTP 503; every connection dropped unanswered; every
request stalled unanswered). The rate-limit storm is :mod:`chaos.experiments.storm`.

The fault is timed to straddle a minute boundary, so the feed's poll for the minute that just
closed meets it (the venue is on wall time: one candle a minute); discovery polls its tickers
every few seconds and meets it too.

Hypothesis: the services that talk to the exchange run *degraded* through the fault (an
``outage`` incident), no service is marked failed, and once the fault is lifted the appliance
is healthy again and the missed minute is stored, with no gap in the stored minutes.
MTTR: the fault lifted → healthy with a candle newer than any before the fault (ours: < 10 s;
the issue's: candles within 30 s). For the dropped and the stalled venue that bound is part of
the hypothesis (``recover_target_s``): the Bybit adapter fails a call within a bound (dropped
connections: ``max_retries`` jittered retries; a stall: ``max_timeouts`` of its ``timeout_s``)
and an outage backs off at most 5 s, so data flows within 10 s of the venue's return.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from appliance.contracts import Event
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import Harness, minute_gaps, start_healthy


def _fault(name: str, knobs: dict[str, Any], h: Harness, rng: random.Random, *,
           fault_s: float, recover_within_s: float,
           recover_target_s: float | None = None) -> Result:
    v = Verdict(name)
    fake = h.fake_bybit(name)
    state = h.state_dir(name)
    app = start_healthy(h, v, state, recover_within_s, "the fault", exchange_url=fake.url)
    if app is None:
        return v.result(None)
    # start 1-2 s before a minute boundary (seeded), so the feed's next poll meets the fault
    lead = 1.0 + rng.random()
    boundary = math.ceil((time.time() + lead) / 60) * 60
    time.sleep(max(0.0, boundary - lead - time.time()))
    before = app.latest_candle()
    bus = app.bus()
    seq = bus.last_event_seq() if bus else 0
    faulted = fake.faulted()
    fake.faults(**knobs)
    failed: set[str] = set()
    degraded: set[str] = set()
    lift_at = time.monotonic() + max(fault_s, lead + 1.0)
    while time.monotonic() < lift_at:
        for svc, st in app.services().items():
            if st.get("state") == "failed":
                failed.add(svc)
            if st.get("state") == "degraded":
                degraded.add(svc)
        time.sleep(0.1)
    faulted = fake.faulted() - faulted
    fake.clear()
    lifted = time.time()
    mttr = app.wait_recovered(lifted, recover_within_s, newer_than=before)
    outages = [e["data"]["service"] for e in (bus.events_since(seq, kinds=[Event.INCIDENT])
                                              if bus else [])
               if e["data"].get("kind") == "outage"]
    v.check(not failed, f"services marked failed during the fault: {sorted(failed)}")
    v.check(faulted > 0, "the fault never reached the appliance (no call was refused)")
    if recover_target_s is not None and mttr is not None:
        v.check(mttr <= recover_target_s, f"data flowed {mttr:.1f}s after the lift "
                f"(> {recover_target_s:g}s)")
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    gaps = minute_gaps(state)
    v.lost = sum(gaps.values())
    v.details.update(fault_s=fault_s, refused_calls=faulted, degraded=sorted(degraded),
                     outage_incidents=sorted(set(outages)), gaps=gaps)
    return v.result(mttr)


def outage(h: Harness, rng: random.Random, *, fault_s: float = 30.0,
           recover_within_s: float = 120.0) -> Result:
    return _fault(OUTAGE.name, {"error_ratio": 1.0}, h, rng, fault_s=fault_s,
                  recover_within_s=recover_within_s)


def drop(h: Harness, rng: random.Random, *, fault_s: float = 30.0,
         recover_within_s: float = 120.0, recover_target_s: float = 10.0) -> Result:
    return _fault(DROP.name, {"outage": "drop"}, h, rng, fault_s=fault_s,
                  recover_within_s=recover_within_s, recover_target_s=recover_target_s)


def stall(h: Harness, rng: random.Random, *, fault_s: float = 30.0,
          recover_within_s: float = 120.0, recover_target_s: float = 10.0) -> Result:
    return _fault(STALL.name, {"outage": "stall"}, h, rng, fault_s=fault_s,
                  recover_within_s=recover_within_s, recover_target_s=recover_target_s)



OUTAGE = Experiment(
    "exchange-outage", "no service fails; candles flow again soon after the venue is back; "
    "no stored minute missing", "fake Bybit answers HTTP 503 to every call, then recovers",
    target_mttr_s=10.0, run=outage, needs_fake_bybit=True)
DROP = Experiment(
    "exchange-drop", "the feed degrades (not crashed, none failed); no stored minute missing "
    "after the venue is back; data flows within 10 s of the lift",
    "fake Bybit closes every API connection unanswered, then recovers",
    target_mttr_s=10.0, run=drop, needs_fake_bybit=True)
STALL = Experiment(
    "exchange-stall", "the adapter's timeouts bound each call, so the feed degrades instead of "
    "hanging (not crashed, none failed); no stored minute missing after the venue is back; "
    "data flows within 10 s of the lift",
    "fake Bybit reads every API request and never answers it until the fault is lifted",
    target_mttr_s=10.0, run=stall, needs_fake_bybit=True)

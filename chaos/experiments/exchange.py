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

The dropped and the stalled venue must also degrade the feed (``degrades``): the fault is held
for ``fault_s``, and then on until the feed has been seen degraded, for at most the feed's poll
plus the adapter's bound on one failed call (:func:`call_bound_s`) plus :data:`LOAD_SLACK_S`
after it began. A fixed window left that to chance: the feed's first call comes 1.5-2.5 s into
the fault and a dropped venue fails it after 5.6-11.2 s of jittered retries, so a 12 s drop was
lifted first whenever the draws were high or a loaded machine stretched the round trips. A
feed that hangs, or that never meets the fault, still fails the check, and the MTTR is still
measured from the lift.
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

from appliance.contracts import Event
from appliance.exchange.bybit import BybitSettings
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import Harness, minute_gaps, start_healthy

#: the feed polls this long after each minute boundary (:func:`appliance.services.feed.run`)
FEED_POLL_AFTER_S = 0.5
#: how much longer than the feed's poll and the adapter's bound a fault may be held for the
#: feed to be seen degraded: what a loaded machine adds to the retries' sleeps and round trips
LOAD_SLACK_S = 10.0


def call_bound_s(outage: str, s: BybitSettings = BybitSettings()) -> float:
    """The longest the Bybit adapter takes to fail one call at a venue that is down in
    ``outage`` mode (each backoff is jittered between half of it and all of it): a ``drop``
    refuses every attempt, each followed by its backoff; a ``stall`` times out
    ``max_timeouts`` attempts of ``timeout_s``, with a backoff between them."""
    backoffs = [min(s.backoff_max_s, s.backoff_base_s * 2 ** a) for a in range(s.max_retries + 1)]
    if outage == "stall":
        return s.max_timeouts * s.timeout_s + sum(backoffs[: s.max_timeouts - 1])
    return sum(backoffs)


def _fault(name: str, knobs: dict[str, Any], h: Harness, rng: random.Random, *,
           fault_s: float, recover_within_s: float,
           recover_target_s: float | None = None, degrades: str | None = None) -> Result:
    """``knobs`` set on the fake venue for ``fault_s`` (and, with ``degrades``, on until that
    service was seen degraded, within the bound the module docstring gives), then lifted."""
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
    began = time.monotonic()
    failed: set[str] = set()
    degraded: set[str] = set()
    lift_at = began + max(fault_s, lead + 1.0)
    hold_until = lift_at
    if degrades is not None:
        hold_until = max(lift_at, began + lead + FEED_POLL_AFTER_S
                         + call_bound_s(knobs.get("outage", "")) + LOAD_SLACK_S)
    while True:
        for svc, st in app.services().items():
            if st.get("state") == "failed":
                failed.add(svc)
            if st.get("state") == "degraded":
                degraded.add(svc)
        now = time.monotonic()
        if now >= hold_until or (now >= lift_at and (degrades is None or degrades in degraded)):
            break
        time.sleep(0.1)
    held_s = time.monotonic() - began
    faulted = fake.faulted() - faulted
    fake.clear()
    lifted = time.time()
    mttr = app.wait_recovered(lifted, recover_within_s, newer_than=before)
    outages = [e["data"]["service"] for e in (bus.events_since(seq, kinds=[Event.INCIDENT])
                                              if bus else [])
               if e["data"].get("kind") == "outage"]
    v.check(not failed, f"services marked failed during the fault: {sorted(failed)}")
    v.check(faulted > 0, "the fault never reached the appliance (no call was refused)")
    if degrades is not None:
        v.check(degrades in degraded, f"{degrades} was never degraded during the fault "
                f"(held {held_s:.1f}s)")
    if recover_target_s is not None and mttr is not None:
        v.check(mttr <= recover_target_s, f"data flowed {mttr:.1f}s after the lift "
                f"(> {recover_target_s:g}s)")
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    gaps = minute_gaps(state)
    v.lost = sum(gaps.values())
    v.details.update(fault_s=fault_s, held_s=round(held_s, 1), refused_calls=faulted,
                     degraded=sorted(degraded),
                     outage_incidents=sorted(set(outages)), gaps=gaps)
    return v.result(mttr)


def outage(h: Harness, rng: random.Random, *, fault_s: float = 30.0,
           recover_within_s: float = 120.0) -> Result:
    return _fault(OUTAGE.name, {"error_ratio": 1.0}, h, rng, fault_s=fault_s,
                  recover_within_s=recover_within_s)


def drop(h: Harness, rng: random.Random, *, fault_s: float = 30.0,
         recover_within_s: float = 120.0, recover_target_s: float = 10.0) -> Result:
    return _fault(DROP.name, {"outage": "drop"}, h, rng, fault_s=fault_s,
                  recover_within_s=recover_within_s, recover_target_s=recover_target_s,
                  degrades="feed")


def stall(h: Harness, rng: random.Random, *, fault_s: float = 30.0,
          recover_within_s: float = 120.0, recover_target_s: float = 10.0) -> Result:
    return _fault(STALL.name, {"outage": "stall"}, h, rng, fault_s=fault_s,
                  recover_within_s=recover_within_s, recover_target_s=recover_target_s,
                  degrades="feed")



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

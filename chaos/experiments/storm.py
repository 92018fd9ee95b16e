"""Rate-limit storm: ``methtrader fake-bybit`` answers retCode 10006 to every API call for a
bounded time, while the datasets service is backfilling the history of the pairs discovery
found, then the storm ends.

The appliance is started so that its backfill is in flight when the storm begins (a few weeks
of history for every tradable pair, started ``warmup_s`` before the storm), and the storm is
timed to straddle a minute boundary, so the feed's poll for the minute that just closed meets
it too.

Hypotheses:

* **discovery throttles**: it says so (a ``discovery_throttled`` event, reason
  ``rate_limited``) and backs off: its calls are not retried into the storm, so the venue sees
  at most one discovery request per try of the outage backoff (:func:`appliance.outage.
  outage_wait`), counted at the fake Bybit's request counts;
* **nothing is lost**: no stored minute missing or stored twice (the feed's candles), and every
  dataset backfilled has every minute of its range;
* **the backfill resumes**: every pair whose history was not complete when the storm began has
  its dataset built afterwards;
* and, as for every exchange fault, no service is marked failed.

MTTR: the storm lifted → healthy with a candle newer than any before the storm.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import duckdb

from appliance.contracts import Event
from appliance.outage import outage_wait
from appliance.paths import StatePaths
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import (Harness, RunProcess, duplicates, minute_gaps, start_healthy,
                           stored_rows, wait_until)
from data.lake import Lake

NAME = "rate-limit-storm"
DISCOVERY_PATHS = ("/v5/market/tickers", "/v5/market/instruments-info")


def tries_within(seconds: float) -> int:
    """How many tries the outage backoff allows in ``seconds`` (the first at once)."""
    n, t = 0, 0.0
    while t < seconds:
        n += 1
        t += outage_wait(n)
    return n


def _unbuilt(state: Path, pairs: list[str]) -> list[str]:
    """The pairs without a 1m dataset manifest in the lake yet."""
    try:
        built = {m.symbol for m in Lake(StatePaths(state).lake).manifests() if m.interval == "1m"}
    except (OSError, ValueError):  # a manifest being written: ask again
        return list(pairs)
    return sorted(set(pairs) - built)


def _holes(state: Path) -> dict[str, int]:
    """Per 1m dataset, the minutes of its range it does not hold (missing or doubled)."""
    con = duckdb.connect(str(StatePaths(state).duckdb), read_only=True)
    try:
        rows = con.execute("SELECT symbol, (end_time - start_time) // 60000 + 1 - rows, missing "
                           "FROM datasets WHERE interval = '1m'").fetchall()
    finally:
        con.close()
    return {s: abs(int(d)) + int(m or 0) for s, d, m in rows if d or m}


def _discovery_requests(stats: dict) -> int:
    by_path = stats.get("by_path") or {}
    return sum(int(by_path.get(p, 0)) for p in DISCOVERY_PATHS)


def _watch(app: RunProcess, until: float) -> tuple[set[str], set[str]]:
    failed: set[str] = set()
    degraded: set[str] = set()
    while time.monotonic() < until:
        for svc, st in app.services().items():
            if st.get("state") == "failed":
                failed.add(svc)
            if st.get("state") == "degraded":
                degraded.add(svc)
        time.sleep(0.1)
    return failed, degraded


def run(h: Harness, rng: random.Random, *, fault_s: float = 30.0,
        recover_within_s: float = 120.0, backfill_days: int = 30,
        warmup_s: float = 10.0) -> Result:
    v = Verdict(NAME)
    fake = h.fake_bybit(NAME)
    state = h.state_dir(NAME)
    lead = 1.0 + rng.random()  # the storm begins 1-2 s (seeded) before a minute boundary
    boundary = math.ceil((time.time() + lead + warmup_s) / 60) * 60
    time.sleep(max(0.0, boundary - lead - warmup_s - time.time()))
    env = {"METHTRADER__DATASETS__DAYS": str(backfill_days),
           "METHTRADER__DATASETS__CHECK_INTERVAL_S": "1"}
    app = start_healthy(h, v, state, recover_within_s, "the storm", exchange_url=fake.url,
                        env=env)
    if app is None:
        return v.result(None)
    time.sleep(max(0.0, boundary - lead - time.time()))
    bus = app.bus()
    pairs = (bus.tradable_pairs() if bus else None) or []
    in_flight = _unbuilt(state, pairs)
    v.check(bool(in_flight), "no backfill was in flight when the storm began")
    before = app.latest_candle()
    seq = bus.last_event_seq() if bus else 0
    stats_before = fake.stats()
    fake.faults(rate_limit_storm=True)
    storm_began = time.monotonic()
    failed, degraded = _watch(app, storm_began + max(fault_s, lead + 1.0))
    stats_storm = fake.stats()
    fake.clear()
    lifted = time.time()
    stormed_s = time.monotonic() - storm_began
    mttr = app.wait_recovered(lifted, recover_within_s, newer_than=before)
    resumed = wait_until(lambda: not _unbuilt(state, pairs), recover_within_s)
    left = [] if resumed else _unbuilt(state, pairs)
    refused = int((stats_storm.get("ret_codes") or {}).get("10006", 0)) - int(
        (stats_before.get("ret_codes") or {}).get("10006", 0))
    asked = _discovery_requests(stats_storm) - _discovery_requests(stats_before)
    allowed = tries_within(stormed_s) + 2  # a try in flight as the storm began, and one spare
    throttled = [e["data"] for e in (bus.events_since(seq, kinds=[Event.DISCOVERY_THROTTLED])
                                     if bus else [])]
    v.check(refused > 0, "the storm never reached the appliance (no call was refused)")
    v.check(not failed, f"services marked failed during the storm: {sorted(failed)}")
    v.check(any(t.get("throttled") and t.get("reason") == "rate_limited" for t in throttled),
            "discovery never said it was throttled for the rate limit")
    v.check(asked <= allowed, f"discovery asked the venue {asked} times in a {stormed_s:.0f}s "
            f"storm (its backoff allows {allowed})")
    v.check(not left, f"the backfill did not resume: no dataset for {left}")
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    gaps, dup, holes = minute_gaps(state), duplicates(stored_rows(state)), _holes(state)
    v.check(not holes, f"datasets with minutes missing or doubled: {holes}")
    v.lost = sum(gaps.values()) + sum(dup.values()) + sum(holes.values())
    v.details.update(fault_s=fault_s, refused_calls=refused, degraded=sorted(degraded),
                     backfill_in_flight=len(in_flight), pairs=len(pairs),
                     discovery_requests=asked, discovery_allowed=allowed,
                     throttled_events=throttled, gaps=gaps, duplicated=dup, dataset_holes=holes)
    return v.result(mttr)


EXPERIMENT = Experiment(
    NAME, "discovery throttles (says so, one request per backoff try); nothing lost (no minute "
    "missing or twice, in the store or the backfilled datasets); the interrupted backfill "
    "resumes and completes; none failed", "fake Bybit answers retCode 10006 to every call "
    "while a backfill is in flight",
    target_mttr_s=10.0, run=run, needs_fake_bybit=True)

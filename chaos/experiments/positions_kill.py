"""Process kill with open positions: ``run`` SIGKILLed at a random (seeded) moment while its
prod model holds positions at the sim venue, then started again.

The appliance is seeded with a prod model that trades every bar (:mod:`chaos.seed`), and the
kill comes once the venue (the persisted paper account) holds a position.

Hypotheses, beyond the plain process kill's (every acknowledged row there after the restart,
none twice, no minute missing):

* **positions reconcile**: the restarted appliance's reconciliation with the venue finds no
  mismatch (no ``reconciliation`` incident, no symbol halted), and once it has stopped again
  the account books' positions (the open prod books and the house) equal the venue's, symbol
  by symbol, to the last lot;
* **no order or fill lost or twice**: every one the killed process had stored is still there,
  none is stored twice, and every order the venue executed is a filled order with its fill;
* **the account identity holds after the restart**: at every bar recorded since, the books'
  total is the account's equity exactly, and the venue's own equity at the same marks agrees.

MTTR: the kill → the restarted appliance healthy with a candle newer than any before the kill.
"""

from __future__ import annotations

import json
import random
import time
from decimal import Decimal
from pathlib import Path

import duckdb

from appliance.contracts import Event
from appliance.paths import StatePaths
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import (Harness, duplicates, minute_gaps, missing, start_healthy,
                           stored_rows, wait_until)
from chaos.seed import TRADING_ENV, seed_prod_model, venue_orders, venue_positions

NAME = "process-kill-positions"
BARS_AFTER_MS = 11 * 60_000  # market time after the restart: two 5m bars closed and decided


def book_positions(state_dir: Path) -> dict[str, Decimal]:
    """The account books' positions (open prod books and the house), summed by symbol."""
    con = duckdb.connect(str(StatePaths(state_dir).duckdb), read_only=True)
    try:
        rows = con.execute("SELECT p.symbol, p.qty FROM book_positions p JOIN books b "
                           "USING (book_id) WHERE b.mode IN ('prod', 'house') "
                           "AND b.state = 'open'").fetchall()
    finally:
        con.close()
    out: dict[str, Decimal] = {}
    for symbol, qty in rows:
        out[symbol] = out.get(symbol, Decimal(0)) + Decimal(qty)
    return {s: q for s, q in out.items() if q}


def unbooked(state_dir: Path) -> list[str]:
    """The venue's executed orders that DuckDB does not hold as a filled order with its fill."""
    con = duckdb.connect(str(StatePaths(state_dir).duckdb), read_only=True)
    try:
        booked = {r[0] for r in con.execute(
            "SELECT o.order_id FROM orders o WHERE o.status = 'filled' AND EXISTS "
            "(SELECT 1 FROM fills f WHERE f.order_id = o.order_id)").fetchall()}
    finally:
        con.close()
    return sorted(venue_orders(state_dir) - booked)


def identity_breaks(state_dir: Path, since_ms: int) -> tuple[int, list[str]]:
    """The account rows from ``since_ms`` on, and those where the books' total is not the
    account's equity or the venue's equity (when known) differs from it."""
    con = duckdb.connect(str(StatePaths(state_dir).duckdb), read_only=True)
    try:
        rows = con.execute("SELECT ts, exact, venue_exact, books FROM equity WHERE ts >= ? "
                           "ORDER BY ts", [since_ms]).fetchall()
    finally:
        con.close()
    breaks = []
    for ts, exact, venue, books in rows:
        total = sum((Decimal(v) for v in json.loads(books).values()), Decimal(0))
        if Decimal(exact) != total:
            breaks.append(f"{ts}: equity {exact} != books {total}")
        elif venue is not None and abs(Decimal(exact) - Decimal(venue)) >= Decimal("1e-9"):
            breaks.append(f"{ts}: equity {exact} != venue {venue}")
    return len(rows), breaks


def run(h: Harness, rng: random.Random, *, kill_within_s: float = 6.0,
        recover_within_s: float = 120.0, hold_within_s: float = 90.0) -> Result:
    v = Verdict(NAME)
    state = h.state_dir(NAME)
    init = start_healthy(h, v, state, recover_within_s, "the seeding")
    if init is None:
        return v.result(None)
    v.check(init.stop() == 0, "the first run did not stop cleanly")
    model_id = seed_prod_model(state, h.env)
    app = start_healthy(h, v, state, recover_within_s, "the kill", env=TRADING_ENV)
    if app is None:
        return v.result(None)
    if not v.check(wait_until(lambda: venue_positions(state), hold_within_s) is not None,
                   f"the prod model opened no position within {hold_within_s:g}s"):
        return v.result(None)
    delay = rng.uniform(0.0, kill_within_s)
    time.sleep(delay)
    app.kill()
    killed_at = time.time()
    at_kill = stored_rows(state)
    held_at_kill = venue_positions(state)
    newest = max((k[2] for k in at_kill["candles"]), default=-1)

    again = h.start_run(state, env=TRADING_ENV)
    mttr = again.wait_recovered(killed_at, recover_within_s, newer_than=newest)
    bus = again.bus()
    hb = (bus.heartbeat() if bus else None) or {}
    restarted_ms = int(float(hb.get("market_time", 0)) * 1000)

    def market_ms() -> int:
        beat = (bus.heartbeat() if bus else None) or {}
        return int(float(beat.get("market_time", 0)) * 1000)

    # two 5m bars decided after the restart, so the identity is checked on the books it made
    wait_until(lambda: market_ms() >= restarted_ms + BARS_AFTER_MS, recover_within_s)
    incidents = [e["data"] for e in (bus.events_since(0, kinds=[Event.INCIDENT]) if bus else [])
                 if e["ts"] >= killed_at]
    mismatches = [i["message"] for i in incidents if i.get("kind") == "reconciliation"]
    v.check(not mismatches, f"reconciliation after the restart: {mismatches}")
    v.check(again.stop() == 0, "the restarted appliance did not stop cleanly")

    after = stored_rows(state)
    gone, dup, gaps = missing(at_kill, after), duplicates(after), minute_gaps(state)
    ours, theirs = book_positions(state), venue_positions(state)
    v.check(ours == theirs, f"the books hold {ours}, the venue {theirs}")
    lost_fills = unbooked(state)
    v.check(not lost_fills, f"orders the venue executed that the books lack: {lost_fills}")
    bars, breaks = identity_breaks(state, restarted_ms)
    v.check(bars > 0, "no account row recorded after the restart")
    v.check(not breaks, f"the account identity broke after the restart: {breaks[:3]}")
    v.lost = sum(gone.values()) + sum(dup.values()) + sum(gaps.values()) + len(lost_fills)
    v.details.update(model_id=model_id, kill_after_s=round(delay, 2),
                     held_at_kill={s: str(q) for s, q in held_at_kill.items()},
                     rows_at_kill={t: len(k) for t, k in at_kill.items()},
                     books={s: str(q) for s, q in ours.items()},
                     venue={s: str(q) for s, q in theirs.items()},
                     account_rows_after=bars, identity_breaks=breaks,
                     venue_orders=len(venue_orders(state)), unbooked=lost_fills,
                     reconciliation=mismatches, missing=gone, duplicated=dup, gaps=gaps)
    return v.result(mttr)


EXPERIMENT = Experiment(
    NAME, "with positions open at the venue: after a SIGKILL and a restart the books' "
    "positions are the venue's, no order or fill is lost or twice, and the account identity "
    "holds", "SIGKILL of `run` at a seeded moment while its prod model holds positions, then "
    "a restart", target_mttr_s=30.0, run=run)

"""Store fault: DuckDB writes refused on purpose (``chaos_store_fault``, honoured in the sim
and paper runs only: :mod:`appliance.chaos_hook`), a few rounds, each letting a seeded number of
writes through first so that the fault lands anywhere, inside a multi-statement transaction too
(a bar's orders, fills, model targets, book and account equity; a pass's candles).

Hypothesis: the service whose write failed is restarted (none is marked failed) and retries;
nothing is half-written: candles stay unique per (symbol, interval, open_time), no minute is
missing, every book equity row of a bar has the bar's account row, every fill its order; and
data flows again after each round.
MTTR: the injection → healthy with a new candle, the worst round.
"""

from __future__ import annotations

import random
import time

import duckdb

from appliance.commands import CommandFailed, send_and_wait
from appliance.contracts import Command
from appliance.paths import StatePaths
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import Harness, duplicates, minute_gaps, start_healthy, stored_rows

NAME = "store-fault"

#: rows that must never exist without their partner, written in the same transaction
ORPHANS = {
    "book equity rows without the bar's account row":
        "SELECT count(*) FROM book_equity b ANTI JOIN equity e ON b.ts = e.ts",
    "fills without their order":
        "SELECT count(*) FROM fills f ANTI JOIN orders o ON f.order_id = o.order_id "
        "WHERE f.mode <> 'paper'",
}


def orphans(state_dir) -> dict[str, int]:
    con = duckdb.connect(str(StatePaths(state_dir).duckdb), read_only=True)
    try:
        found = {what: int(con.execute(q).fetchone()[0]) for what, q in ORPHANS.items()}
    finally:
        con.close()
    return {k: n for k, n in found.items() if n}


def restarts(services: dict) -> int:
    return sum(int(st.get("restarts") or 0) for st in services.values())


def run(h: Harness, rng: random.Random, *, rounds: int = 3,
        recover_within_s: float = 60.0) -> Result:
    v = Verdict(NAME)
    state = h.state_dir(NAME)
    app = start_healthy(h, v, state, recover_within_s, "the first fault")
    if app is None:
        return v.result(None)
    worst: float | None = 0.0
    per = []
    before_restarts = restarts(app.services())
    for i in range(rounds):
        fail, after = rng.randint(1, 3), rng.randint(1, 8)
        newest = app.latest_candle()
        injected = time.time()
        try:
            send_and_wait(app.bus(), Command.CHAOS_STORE_FAULT,
                          {"fail": fail, "after": after, "actor": "chaos"}, deadline_s=10,
                          source="chaos")
        except CommandFailed as exc:
            v.check(False, f"round {i}: the fault was not injected ({exc})")
            worst = None
            continue
        took = app.wait_recovered(injected, recover_within_s, newer_than=newest)
        failed = [n for n, st in app.services().items() if st.get("state") == "failed"]
        v.check(not failed, f"round {i}: services marked failed: {failed}")
        v.check(took is not None, f"round {i}: not healthy with a new candle within "
                f"{recover_within_s:g}s")
        per.append({"fail": fail, "after": after,
                    "mttr_s": None if took is None else round(took, 3)})
        worst = None if took is None or worst is None else max(worst, took)
    restarted = restarts(app.services()) - before_restarts
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    v.check(restarted > 0, "no service met the fault (nothing was restarted)")
    dup, gaps, half = duplicates(stored_rows(state)), minute_gaps(state), orphans(state)
    v.check(not half, f"half-written rows: {half}")
    v.lost = sum(dup.values()) + sum(gaps.values()) + sum(half.values())
    v.details.update(rounds=per, restarts=restarted, duplicated=dup, gaps=gaps, orphans=half)
    return v.result(worst)


EXPERIMENT = Experiment(
    NAME, "a failed DuckDB write is retried (its service restarts), nothing half-written, "
    "no candle twice or missing", "the next 1-3 DuckDB writes after a few more refused, "
    "three times", target_mttr_s=5.0, run=run)

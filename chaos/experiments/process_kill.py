"""Process kill: ``run`` SIGKILLed at a random (seeded) moment, then started again.

Hypothesis: every candle, order, fill, book and registry row that DuckDB held at the kill is
still there after the restart and a clean stop, nothing is stored twice (one candle per symbol,
interval and open time; one fill per fill_id), the feed's minutes have no gap, and the feed's
last acknowledged candle (announced on the bus after its commit) survived.
MTTR: the kill → the restarted appliance healthy with a candle newer than any before the kill.
"""

from __future__ import annotations

import random
import time

from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import Harness, duplicates, minute_gaps, missing, start_healthy, stored_rows

NAME = "process-kill"


def run(h: Harness, rng: random.Random, *, kill_within_s: float = 6.0,
        recover_within_s: float = 120.0) -> Result:
    v = Verdict(NAME)
    state = h.state_dir(NAME)
    app = start_healthy(h, v, state, recover_within_s, "the kill")
    if app is None:
        return v.result(None)
    delay = rng.uniform(0.0, kill_within_s)
    time.sleep(delay)
    acked = app.latest_candle()  # committed before it was announced
    app.kill()
    killed_at = time.time()
    at_kill = stored_rows(state)  # what the killed process left in DuckDB
    newest = max((k[2] for k in at_kill["candles"]), default=-1)
    v.check(acked <= newest, f"the acknowledged candle {acked} is not in DuckDB after the kill")

    again = h.start_run(state)
    mttr = again.wait_recovered(killed_at, recover_within_s, newer_than=newest)
    v.check(again.stop() == 0, "the restarted appliance did not stop cleanly")
    after = stored_rows(state)
    gone, dup = missing(at_kill, after), duplicates(after)
    gaps = minute_gaps(state)
    v.lost = sum(gone.values()) + sum(dup.values()) + sum(gaps.values())
    v.details.update(kill_after_s=round(delay, 2), rows_at_kill={
        t: len(k) for t, k in at_kill.items()}, missing=gone, duplicated=dup, gaps=gaps)
    return v.result(mttr)


EXPERIMENT = Experiment(
    NAME, "every row acknowledged before a SIGKILL is there after the restart, none twice, "
    "no minute missing", "SIGKILL of `run` at a seeded random moment, then a restart",
    target_mttr_s=30.0, run=run)

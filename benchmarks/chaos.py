"""``methtrader bench chaos``: MTTR per experiment, the median of five runs, with the long
bounds the tests and a plain ``chaos run`` do not use (a 5-minute exchange outage in each of its
modes, a minute of full disk).

Takes a long while on purpose (each run starts real appliances); the figures are wall seconds.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

from chaos.experiments import EXPERIMENTS
from chaos.runner import interrupt_on_sigterm, run_experiments

RUNS = 5
#: the 5-minute venue outage in each of its modes (503s, dropped connections, a stall)
LONG: dict[str, dict[str, Any]] = {
    "exchange-outage": {"fault_s": 300.0, "recover_within_s": 300.0},
    "exchange-drop": {"fault_s": 300.0, "recover_within_s": 300.0},
    "exchange-stall": {"fault_s": 300.0, "recover_within_s": 300.0},
    "rate-limit-storm": {"fault_s": 60.0},
    "disk-full": {"fault_s": 60.0}}


def _runs(name: str) -> list[Any]:
    """The five runs of one experiment, each reported on stderr as it ends (the whole bench
    takes over an hour)."""
    results = []
    for s in range(RUNS):
        # one lane: no other experiment beside it, so the MTTR carries no contention
        got = run_experiments([name], seed=s, bounds=LONG, kill_seeds=1, lanes=1)
        for r in got:
            mttr = "—" if r.mttr_s is None else f"{r.mttr_s:.2f} s"
            print(f"bench chaos: {name} run {s + 1}/{RUNS}: "
                  f"{'held' if r.held else 'FAILED'}, MTTR {mttr}, lost {r.lost}",
                  file=sys.stderr, flush=True)
        results += got
    return results


def run() -> dict[str, Any]:
    interrupt_on_sigterm()  # a stopped bench leaves no scratch appliance behind
    figures: dict[str, Any] = {}
    for name in EXPERIMENTS:
        results = _runs(name)
        mttrs = [r.mttr_s for r in results if r.mttr_s is not None]
        figures[f"{name}_mttr_median_s"] = round(statistics.median(mttrs), 3) if mttrs else None
        figures[f"{name}_mttr_max_s"] = round(max(mttrs), 3) if mttrs else None
        figures[f"{name}_held"] = f"{sum(r.held for r in results)}/{len(results)}"
    figures["note"] = ("wall seconds from the fault (injected, or lifted for an exchange fault) "
                       "to every service running and a new candle stored; median of "
                       f"{RUNS}; targets: crash < 2 s, exchange < 10 s, full disk < 5 s, killed "
                       "process < 30 s")
    return figures

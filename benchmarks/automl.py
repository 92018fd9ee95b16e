"""``methtrader bench automl``: an AutoML study for one group on 90 days of 5m bars.

Budget (issue 13): a 50-trial study in < 20 min on 2 cores. The run is sized to finish in a
few minutes: the weekly study's search space (every kind, the default bounds and
``automl.max_train_samples``) on the sim market's learnable drift, three symbols, 90 days,
4 folds, for at most ``FULL`` trials or ``SEARCH_S`` seconds (then the trial in progress
finishes), and the selection. It reports the trials done, the time per trial (mean, and per
kind), the fraction pruned, the 50-trial study that rate extrapolates to against the budget,
and the study's verdict (hold-out DSR). The process's CPU seconds are reported beside the wall
clock (``*_cpu_s``): training runs on one thread, so on a quiet machine the wall time of a trial
is about its CPU time, and on a shared one the CPU figures are the ones that do not move with
the load (the 1-minute load average is reported at the start and the end).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from appliance.config import AutomlConfig
from models import automl
from models.honesty import sim_drift

FULL = 50
SEARCH_S = 240.0
BUDGET_S = 20 * 60
SYMBOLS = ("SOLUSDT", "DOGEUSDT", "AVAXUSDT")
DAYS = 90


def run(trials: int = FULL, search_s: float = SEARCH_S) -> dict[str, Any]:
    candles = sim_drift(0, symbols=SYMBOLS, days=DAYS)
    setup = automl.Setup(folds=4, max_train_samples=AutomlConfig().max_train_samples)
    space = automl.Space()
    pre, cut = automl.split_holdout(candles, setup.folds)
    started: dict[int, float] = {}
    spent: dict[int, float] = {}

    def timed(study: Any, trial: Any) -> None:
        spent[trial.number] = time.perf_counter() - started.get(trial.number, t0)
        started[trial.number + 1] = time.perf_counter()

    load_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as d:
        study = automl.open_study(Path(d), "bench", setup.seed)
        t0, c0 = time.perf_counter(), time.process_time()
        started[0] = t0
        automl.run_trials(study, pre, space, setup, trials, search_s, callbacks=[timed])
        search_s, search_cpu = time.perf_counter() - t0, time.process_time() - c0
        t1, c1 = time.perf_counter(), time.process_time()
        verdict = automl.select(study, candles, cut, setup, AutomlConfig().dsr_threshold)
        select_s, select_cpu = time.perf_counter() - t1, time.process_time() - c1
        done = automl.finished(study)
    per_kind: dict[str, list[float]] = defaultdict(list)
    for t in done:
        per_kind[t.params["kind"]].append(spent.get(t.number, 0.0))
    pruned = sum(t.state.name == "PRUNED" for t in done)
    per_trial = search_s / max(1, len(done))
    cpu_per_trial = search_cpu / max(1, len(done))
    return {
        "group": f"{len(SYMBOLS)} symbols x {DAYS} days of 5m",
        "trials": len(done),
        "search_s": round(search_s, 1),
        "time_per_trial_s": round(per_trial, 2),
        **{f"time_per_trial_{k}_s": round(statistics.mean(v), 2)
           for k, v in sorted(per_kind.items())},
        "fraction_pruned": round(pruned / max(1, len(done)), 3),
        "selection_s": round(select_s, 1),
        f"study_{FULL}_trials_s_extrapolated": round(per_trial * FULL + select_s, 0),
        "search_cpu_s": round(search_cpu, 1),
        "cpu_per_trial_s": round(cpu_per_trial, 2),
        "selection_cpu_s": round(select_cpu, 1),
        f"study_{FULL}_trials_cpu_s_extrapolated": round(cpu_per_trial * FULL + select_cpu, 0),
        f"budget_{FULL}_trials_s": BUDGET_S,
        "load_average_1m_start": load_start,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "verdict": verdict.reason,
    }

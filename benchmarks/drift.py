"""``methtrader bench drift``: one drift pass over 50 symbols × every feature.

Budget (issue 12): a pass costs < 50 ms of a core per ``drift.interval``.

Workload, as the drift service meets it: per symbol a 3-day window of 5m feature rows (864 rows
× all 15 fs1 features, held as the bar book's deque of rows and turned into an array as the
service does), a reference histogram for every feature (20 quantile bins from 30 days of
training rows), and a full 14-day history of hourly passes (336 points) behind the 3σ rule. The
figure is the thread's CPU time of the whole pass (best and median of REPEATS), so a busy box
does not inflate it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np

from models.drift import compile_reference, drift_pass, feature_kls_many, reference_histogram
from models.features import FEATURE_NAMES

SYMBOLS = 50
WINDOW = 3 * 288
TRAIN_ROWS = 30 * 288
HISTORY = 14 * 24
REPEATS = 20
BUDGET_MS = 50.0


def workload(seed: int = 0) -> tuple[list[deque], Any, list[tuple[float, dict]]]:
    rng = np.random.default_rng(seed)
    names = list(FEATURE_NAMES)
    train = rng.standard_t(4, (TRAIN_ROWS, len(names)))
    ref = compile_reference({n: reference_histogram(train[:, j]) for j, n in enumerate(names)},
                            names)  # once per model, as the service keeps it
    windows = [deque((row for row in rng.standard_t(4, (WINDOW, len(names))) * 1.1),
                     maxlen=WINDOW) for _ in range(SYMBOLS)]
    history = [(float(v), {n: float(v) for n in names})
               for v in 0.05 + 0.005 * rng.standard_normal(HISTORY)]
    return windows, ref, history


def one_pass(windows: list[deque], ref: Any, history: list) -> int:
    """What the service does each interval: every symbol's window turned into an array, the
    KL of all of them binned together (one reference here: the worst case, every symbol in
    one group, is also the one the service batches best; a reference per symbol is the
    ``drift_pass_cpu_ms_per_symbol_refs`` figure), then the rule per symbol."""
    arrays = [np.asarray(rows, dtype=np.float64) for rows in windows]
    fired = 0
    for kls in feature_kls_many(arrays, FEATURE_NAMES, ref):
        p = drift_pass(kls, history, min_history=48)
        fired += p is not None and p.verdict.fired
    return fired


def one_pass_apart(windows: list[deque], ref: Any, history: list) -> int:
    """The same, with every symbol binned on its own (as if each had its own model)."""
    fired = 0
    for rows in windows:
        (kls,) = feature_kls_many([np.asarray(rows, dtype=np.float64)], FEATURE_NAMES, ref)
        p = drift_pass(kls, history, min_history=48)
        fired += p is not None and p.verdict.fired
    return fired


def timed(fn: Any, *args: Any) -> tuple[list[float], list[float]]:
    fn(*args)  # warm: imports, numpy dispatch
    cpu, wall = [], []
    for _ in range(REPEATS):
        start, start_cpu = time.perf_counter(), time.thread_time()
        fn(*args)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
    return cpu, wall


def run(false_alarms: bool = False) -> dict[str, Any]:
    """The cost of a drift pass; with ``false_alarms`` the rule's false alarms and detection
    delays instead (:func:`false_alarm_figures`)."""
    if false_alarms:
        return false_alarm_figures()
    windows, ref, history = workload()
    cpu, wall = timed(one_pass, windows, ref, history)
    apart, _ = timed(one_pass_apart, windows, ref, history)
    best, median = min(cpu) * 1000, float(np.median(cpu)) * 1000
    return {"drift_symbols": SYMBOLS, "drift_features": len(FEATURE_NAMES),
            "drift_window_rows": WINDOW, "drift_history_points": HISTORY,
            "drift_pass_cpu_ms_best": round(best, 2),
            "drift_pass_cpu_ms_median": round(median, 2),
            "drift_pass_wall_ms_median": round(float(np.median(wall)) * 1000, 2),
            "drift_pass_cpu_ms_per_symbol_refs": round(float(np.median(apart)) * 1000, 2),
            "drift_budget_ms": BUDGET_MS,
            "drift_within_budget": median < BUDGET_MS}


def false_alarm_figures() -> dict[str, Any]:
    """``methtrader bench drift --false-alarms``: the 3σ rule as configured by default, over
    30 stationary sim days and over their shocked twins (returns ×3 from day 20) for every
    symbol/seed pair of :data:`models.drift_trial.PAIRS` (:mod:`models.drift_trial`; about
    10 s of a core per pair, 12 pairs). Per pair: the stationary hours it fired, the hours from
    the shock to its first firing (None: never in the 10 days after it), and the stationary
    hours fired after a retrain on the day the judged days start (its history seeded from
    stored candles, as the drift service seeds a new model's: ``false_alarm_hours_new_model_*``).
    """
    from appliance.config import DriftConfig
    from appliance.schedule import duration_s
    from models.drift import three_sigma
    from models.drift_trial import PAIRS, SHOCK_DAY, fired_hours, fresh, judge, trial

    cfg = DriftConfig()
    span = int(duration_s(cfg.history) // duration_s(cfg.interval))

    def rule(h: Any, v: float) -> bool:
        return three_sigma(h, v, min_history=cfg.min_history, k=cfg.sigma,
                           floor=cfg.sigma_floor, persist=cfg.persist, span=span).fired

    out: dict[str, Any] = {"drift_trial_pairs": len(PAIRS), "drift_trial_shock_day": SHOCK_DAY}
    verdicts = [judge(trial(symbol, seed), rule, span + cfg.persist - 1)
                for symbol, seed in PAIRS]
    for v in verdicts:
        out[f"false_alarm_hours_{v.symbol}_{v.seed}"] = v.false_hours
    for v in verdicts:
        out[f"detect_delay_h_{v.symbol}_{v.seed}"] = v.delay_h
    new_model = {f"{symbol}_{seed}": len(fired_hours(fresh(symbol, seed), rule,
                                                     span + cfg.persist - 1))
                 for symbol, seed in PAIRS}
    for pair, hours in new_model.items():
        out[f"false_alarm_hours_new_model_{pair}"] = hours
    out["drift_trial_quiet_pairs"] = sum(v.false_hours == 0 for v in verdicts)
    out["drift_trial_caught_within_72h"] = sum(v.delay_h is not None and v.delay_h <= 72
                                               for v in verdicts)
    out["drift_trial_quiet_pairs_new_model"] = sum(h == 0 for h in new_model.values())
    return out

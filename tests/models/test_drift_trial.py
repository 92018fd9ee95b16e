"""The false-alarm/detection harness (models.drift_trial) counts what it says: stationary hours
fired and the delay from the shock to the first firing, each pass judged against the passes
before it only. Synthetic aggregate series here; the sim's own are tests/models/
test_drift_sim.py's (and ``methtrader bench drift --false-alarms``)."""

from __future__ import annotations

import numpy as np

from models.drift_trial import DAYS, RUNNING, SHOCK_DAY, Series, fired_hours, judge

N = RUNNING + DAYS * 24


def above(level: float):
    return lambda history, value: value > level


def test_fired_hours_are_judged_hours_counted_from_zero():
    series = np.full(N, 0.05)
    series[RUNNING + 10] = series[RUNNING + 11] = 1.0
    series[RUNNING - 5] = 1.0  # before the judged days: not counted
    assert fired_hours(series, above(0.5), 336) == [10, 11]


def test_each_pass_sees_only_the_history_before_it():
    seen = []
    series = np.arange(N, dtype=float)

    def rule(history, value):
        seen.append((len(history), history[-1], value))
        return False

    fired_hours(series, rule, 48)
    assert seen[0] == (48, RUNNING - 1, RUNNING)
    assert all(n == 48 and last == v - 1 for n, last, v in seen)


def test_judge_counts_false_hours_on_calm_and_the_delay_after_the_shock():
    calm = np.full(N, 0.05)
    calm[RUNNING + 3] = 1.0  # one stationary alarm
    shocked = calm.copy()
    shocked[RUNNING + SHOCK_DAY * 24 + 30:] = 1.0  # crosses 30 h after the shock
    v = judge(Series("X", 1, calm, shocked), above(0.5), 336)
    assert (v.false_hours, v.delay_h, v.early) == (1, 30, 1)


def test_a_shock_never_crossed_has_no_delay():
    calm = np.full(N, 0.05)
    v = judge(Series("X", 1, calm, calm.copy()), above(0.5), 336)
    assert (v.false_hours, v.delay_h) == (0, None)

"""Seasonal volatility regime: is a symbol's volatility where its week usually has it?

Pure functions; the training run stores each symbol's profile, the drift service judges the
live day against it (:mod:`appliance.services.drift`).

* **Profile** (training, :func:`vol_profile`): per hour of the week (168 buckets, Monday 00:00
  UTC first) the median absolute 5m log return of the training bars that closed in it (robust:
  a few crash bars do not move a median), smoothed over the neighbouring hours (circularly, so
  Sunday 23:00 neighbours Monday 00:00); a bucket without bars takes the overall median.
* **Ratio** (live, :func:`vol_ratio`): the median, over the last day's 5m returns, of each
  absolute return divided by its hour's profile value. Dividing by the profile first takes the
  season out (a quiet Sunday night is not a calm regime), the median keeps the ratio robust; on
  the training data it is about 1.
* **Regime** (:func:`next_regime`): ``high`` once the ratio has been above ``high`` for
  ``sustain`` passes in a row, ``low`` below ``low`` likewise, ``normal`` once back within the
  band as long; anything less sustained keeps the regime it was in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

WEEK_HOURS = 168
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
STEP_MS = 300_000  # the profile is of 5m returns
SMOOTH = (0.25, 0.5, 0.25)  # weights of the hour before, the hour, the hour after
HIGH, LOW, NORMAL = "high", "low", "normal"


def hour_of_week(t_ms: np.ndarray) -> np.ndarray:
    """0 for Monday 00:00-00:59 UTC ... 167 for Sunday 23:00 (1970-01-01 was a Thursday)."""
    hours = np.asarray(t_ms, dtype=np.int64) // HOUR_MS
    return ((hours // 24 + 3) % 7) * 24 + hours % 24


def abs_returns(open_ms: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|log return| of each 5m bar over the bar before it, and the bar's open time; only
    consecutive bars (a gap is not a 5-minute return)."""
    t = np.asarray(open_ms, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    ok = (np.diff(t) == STEP_MS) & (c[1:] > 0) & (c[:-1] > 0)
    return t[1:][ok], np.abs(np.log(c[1:][ok] / c[:-1][ok]))


def vol_profile(open_ms: np.ndarray, close: np.ndarray) -> np.ndarray:
    """The (168,) profile of a symbol's 5m bars (see the module docstring)."""
    t, r = abs_returns(open_ms, close)
    if not len(r):
        raise ValueError("no consecutive 5m bars to profile")
    how = hour_of_week(t)
    order = np.argsort(how, kind="stable")
    buckets = np.split(r[order], np.searchsorted(how[order], np.arange(1, WEEK_HOURS)))
    overall = float(np.median(r))
    raw = np.array([float(np.median(b)) if len(b) else overall for b in buckets])
    before, here, after = SMOOTH
    return before * np.roll(raw, 1) + here * raw + after * np.roll(raw, -1)


def vol_ratio(open_ms: np.ndarray, close: np.ndarray, profile: Sequence[float],
              end_ms: int | None = None) -> float:
    """Realised over profiled volatility over the day before ``end_ms`` (default: the last
    bar's close); NaN without any return in that day."""
    t, r = abs_returns(open_ms, close)
    end = int(t[-1]) + STEP_MS if end_ms is None and len(t) else end_ms
    if end is None:
        return math.nan
    day = (t >= end - DAY_MS) & (t < end)
    if not day.any():
        return math.nan
    p = np.asarray(profile, dtype=np.float64)[hour_of_week(t[day])]
    ok = p > 0
    return float(np.median(r[day][ok] / p[ok])) if ok.any() else math.nan


def next_regime(current: str, ratios: Sequence[float], *, low: float, high: float,
                sustain: int) -> str:
    """The regime after the latest pass, from the last ratios (newest last)."""
    last = [x for x in ratios[-sustain:] if math.isfinite(x)]
    if len(last) < sustain:
        return current
    if all(x > high for x in last):
        return HIGH
    if all(x < low for x in last):
        return LOW
    if all(low <= x <= high for x in last):
        return NORMAL
    return current

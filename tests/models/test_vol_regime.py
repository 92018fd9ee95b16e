"""The seasonal volatility profile, the realised/profiled ratio and the sustained regime."""

from __future__ import annotations

import math

import numpy as np
import pytest

from appliance.schedule import utc
from models.vol_regime import (HIGH, LOW, NORMAL, abs_returns, hour_of_week, next_regime,
                               vol_profile, vol_ratio)

MONDAY = int(utc("2024-06-03 00:00")) * 1000
STEP = 300_000


def bars(weeks: float, scale: np.ndarray | float = 1.0, seed: int = 0,
         start: int = MONDAY) -> tuple[np.ndarray, np.ndarray]:
    """5m closes whose return volatility follows a seasonal pattern times ``scale``."""
    n = int(weeks * 7 * 288)
    t = start + STEP * np.arange(n)
    season = 1.0 + 0.8 * (hour_of_week(t) % 24 >= 12)  # afternoons are busier
    r = np.random.default_rng(seed).standard_normal(n) * 1e-3 * season * scale
    return t, 100 * np.exp(np.cumsum(r))


def test_hour_of_week_starts_on_monday_utc():
    assert list(hour_of_week(np.array([MONDAY, MONDAY + 3_600_000, MONDAY - 1]))) == [0, 1, 167]
    assert hour_of_week(np.array([int(utc("2024-06-09 23:30")) * 1000]))[0] == 167  # Sunday


def test_the_profile_recovers_the_weeks_pattern_and_a_gap_is_no_return():
    t, c = bars(8)
    p = vol_profile(t, c)
    assert p.shape == (168,)
    median_abs = 1e-3 * 0.6745  # median |N(0, 1e-3)|
    assert p[3] == pytest.approx(median_abs, rel=0.1)  # Monday 03:00 (quiet)
    assert p[15] == pytest.approx(1.8 * median_abs, rel=0.1)  # Monday 15:00 (busy)
    assert p[11] == pytest.approx((0.75 + 0.25 * 1.8) * median_abs, rel=0.1)  # smoothed edge
    t2, r2 = abs_returns(np.r_[t[:10], t[20:30]], np.r_[c[:10], c[20:30]])
    assert len(r2) == 18  # the jump over the gap is left out


def test_the_ratio_is_one_on_the_same_market_and_three_when_volatility_triples():
    t, c = bars(8)
    p = vol_profile(t, c)
    live_t, live_c = bars(1, seed=1, start=MONDAY + 8 * 7 * 86_400_000)
    assert vol_ratio(live_t, live_c, p) == pytest.approx(1.0, abs=0.1)
    wild_t, wild_c = bars(1, scale=3.0, seed=1, start=MONDAY + 8 * 7 * 86_400_000)
    assert vol_ratio(wild_t, wild_c, p) == pytest.approx(3.0, rel=0.1)
    # deseasonalised: a quiet night alone is not a low regime
    night = (hour_of_week(live_t) % 24 < 12) & (live_t >= live_t[-1] - 86_400_000)
    assert vol_ratio(live_t[night][-100:], live_c[night][-100:], p) == pytest.approx(1.0, abs=0.2)
    assert math.isnan(vol_ratio(live_t[:1], live_c[:1], p))


def test_a_regime_needs_a_sustained_departure_and_a_sustained_return():
    kw = {"low": 0.5, "high": 2.0, "sustain": 3}
    assert next_regime(NORMAL, [1.0, 2.5, 2.6], **kw) == NORMAL  # two passes only
    assert next_regime(NORMAL, [2.5, 2.6, 2.7], **kw) == HIGH
    assert next_regime(HIGH, [2.5, 1.0, 2.7], **kw) == HIGH  # a dip does not end it
    assert next_regime(HIGH, [1.0, 1.1, 0.9], **kw) == NORMAL
    assert next_regime(NORMAL, [0.4, 0.3, 0.2], **kw) == LOW
    assert next_regime(NORMAL, [0.4, 0.3], **kw) == NORMAL  # not enough passes yet

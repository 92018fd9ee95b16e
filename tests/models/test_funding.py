"""Funding arithmetic and the spread estimate, pure: no clock, no disk."""

from __future__ import annotations

import calendar
import time
from decimal import Decimal

import numpy as np
import pytest

from models.costs import quoted_half_spread, roll_half_spread
from models.funding import FUNDING_PERIOD_MS, funding_due, funding_per_bar, funding_times

D = Decimal
HOUR = 3_600_000


def utc(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")) * 1000


def test_funding_is_due_at_00_08_16_utc_in_the_half_open_span():
    times = funding_times(utc("2025-03-01 07:59"), utc("2025-03-02 08:00"))
    assert [time.strftime("%d %H:%M", time.gmtime(t / 1000)) for t in times] == [
        "01 08:00", "01 16:00", "02 00:00", "02 08:00"]
    # (start, end]: a span starting on a funding time leaves it out, one ending on it has it
    assert funding_times(utc("2025-03-01 08:00"), utc("2025-03-01 16:00")) == [
        utc("2025-03-01 16:00")]
    assert funding_times(utc("2025-03-01 08:01"), utc("2025-03-01 15:59")) == []
    assert all(t % FUNDING_PERIOD_MS == 0 for t in times)


def test_longs_pay_a_positive_rate_and_shorts_receive_it():
    assert funding_due(D("0.5"), D("40000.1"), D("0.0001")) == D("2.000005")
    assert funding_due(D("-0.5"), D("40000.1"), D("0.0001")) == D("-2.000005")
    assert funding_due(D("0.5"), D("40000.1"), D("-0.00022398")) < 0  # longs receive
    assert funding_due(D(0), D("40000"), D("0.0001")) == 0


def test_a_rate_series_lines_up_with_the_bars_whose_close_is_the_funding_time():
    closes = np.arange(1, 25) * HOUR  # hourly bars closing at 01:00 … 24:00
    events = [(0, 0.5), (8 * HOUR, 0.001), (16 * HOUR, -0.002), (24 * HOUR, 0.003),
              (32 * HOUR, 0.9)]
    per_bar = funding_per_bar(closes, events)
    assert per_bar[7] == 0.001 and per_bar[15] == -0.002 and per_bar[23] == 0.003
    assert np.count_nonzero(per_bar) == 3  # before the first bar and after the last: dropped
    # a missing bar: the funding is due at the next bar (no trade happened in between)
    gappy = np.delete(closes, 7)
    assert funding_per_bar(gappy, events)[7] == 0.001 and gappy[7] == 9 * HOUR
    # two funding times inside one (daily) bar add up; arrays work like tuples
    daily = funding_per_bar(np.array([0, 24 * HOUR]), np.array(events))
    assert daily[0] == 0.5 and daily[1] == pytest.approx(0.002)
    assert funding_per_bar(np.array([8 * HOUR]), [(8 * HOUR, 0.001)])[0] == 0.001
    assert len(funding_per_bar(closes, [])) == len(closes)


@pytest.mark.parametrize("half", [0.0005, 0.002, 0.01])
def test_roll_recovers_a_planted_spread_from_a_bid_ask_bounce_series(half):
    """Trades hit the bid or the ask at random around a random-walk mid; Roll's estimator
    recovers the half spread from the closes alone."""
    rng = np.random.default_rng(3)
    n = 200_000
    mid = 100.0 * np.exp(np.cumsum(rng.normal(0, 0.2 * half, n)))
    side = rng.choice([-1.0, 1.0], n)
    close = mid * (1 + side * half)
    assert roll_half_spread(close) == pytest.approx(half, rel=0.05)
    assert roll_half_spread(mid) < 0.2 * half  # no bounce, (almost) no spread
    assert quoted_half_spread(100 * (1 - half), 100 * (1 + half)) == pytest.approx(half)

"""Calendar arithmetic on market time (pure): nightly and weekly schedules in UTC."""

from __future__ import annotations

import calendar
import time

DAY_S = 86_400


def parse_hhmm(text: str) -> int:
    """'02:30' → seconds after midnight UTC; raises ValueError naming the text."""
    try:
        hh, mm = text.split(":")
        h, m = int(hh), int(mm)
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day; use HH:MM (UTC)") from None
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"{text!r} is not a time of day; use HH:MM (UTC)")
    return h * 3600 + m * 60


def next_daily(now: float, at_s: int) -> float:
    """The first moment strictly after ``now`` that is ``at_s`` seconds past a UTC midnight."""
    midnight = now - now % DAY_S
    t = midnight + at_s
    return t if t > now else t + DAY_S


def is_sunday(t: float) -> bool:
    return time.gmtime(t).tm_wday == 6


def day_tag(t: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(t))


def utc(text: str) -> float:
    """'2026-11-29 02:00' → epoch seconds (tests and config)."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))

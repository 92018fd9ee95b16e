"""Calendar arithmetic on market time (pure): nightly and weekly schedules in UTC."""

from __future__ import annotations

import calendar
import re
import time

DAY_S = 86_400
WEEK_S = 7 * DAY_S
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # time.gmtime's tm_wday order
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration_s(text: str) -> float:
    """'90s', '2h', '14d', '500ms', '1.5h' → seconds; a bare number is seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*", text)
    if not m:
        raise ValueError(f"{text!r} is not a duration; use a number with a unit, e.g. 90s, "
                         "15m, 2h, 14d")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


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


def parse_weekly(text: str) -> tuple[int, int]:
    """'Sun 04:00' → (weekday, seconds after midnight UTC), weekday 0 = Monday as in
    ``time.gmtime``; raises ValueError naming the text."""
    day, _, hhmm = text.strip().partition(" ")
    if day not in WEEKDAYS:
        raise ValueError(f"{text!r} is not a weekly time; use Ddd HH:MM (UTC), Ddd one of "
                         f"{', '.join(WEEKDAYS)}, e.g. Sun 04:00")
    return WEEKDAYS.index(day), parse_hhmm(hhmm.strip())


def next_weekly(after: float, weekday: int, at_s: int) -> float:
    """The first moment strictly after ``after`` that is weekday ``weekday`` (0 = Monday),
    ``at_s`` seconds past its UTC midnight."""
    midnight = after - after % DAY_S
    days_ahead = (weekday - time.gmtime(midnight).tm_wday) % 7
    t = midnight + days_ahead * DAY_S + at_s
    return t if t > after else t + WEEK_S


def is_sunday(t: float) -> bool:
    return time.gmtime(t).tm_wday == 6


def day_tag(t: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(t))


def utc(text: str) -> float:
    """'2026-11-29 02:00' → epoch seconds (tests and config)."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))

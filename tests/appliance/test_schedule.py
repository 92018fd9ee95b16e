import pytest

from appliance.schedule import is_sunday, next_daily, parse_hhmm, utc


def test_next_daily_is_strictly_after_now():
    at = parse_hhmm("02:00")
    assert next_daily(utc("2026-11-27 01:00"), at) == utc("2026-11-27 02:00")
    assert next_daily(utc("2026-11-27 02:00"), at) == utc("2026-11-28 02:00")
    assert next_daily(utc("2026-11-27 23:59"), at) == utc("2026-11-28 02:00")


def test_sunday_and_bad_times():
    assert is_sunday(utc("2026-11-29 02:00")) and not is_sunday(utc("2026-11-28 02:00"))
    with pytest.raises(ValueError, match="HH:MM"):
        parse_hhmm("2am")

"""When a group's weekly AutoML study is due (appliance.automl.study_due, pure)."""

from __future__ import annotations

from appliance.automl import study_due
from appliance.schedule import DAY_S, WEEK_S, parse_weekly, utc

SUNDAY_06 = parse_weekly("Sun 06:00")
PROD = utc("2026-11-05 12:00")  # a Thursday: the group's first prod model


def due(now: float, first=PROD, last=None) -> bool:
    return study_due(now, first, last, *SUNDAY_06)


def test_never_without_a_prod_model_so_never_at_a_first_start():
    assert not due(utc("2026-11-30 06:00"), first=None)
    assert not due(utc("2026-11-30 06:00"), first=None, last=None)


def test_the_first_study_comes_a_week_after_the_first_prod_model():
    assert not due(PROD + WEEK_S - 1)
    assert due(PROD + WEEK_S)  # Thursday 11-12, not the Sunday slot before it
    assert not due(utc("2026-11-08 06:00"))


def test_then_weekly_at_the_slot_and_a_missed_slot_runs_at_start():
    first = PROD + WEEK_S
    assert not due(first + DAY_S, last=first)
    assert not due(utc("2026-11-15 06:00"), last=first)  # under half a week after: too soon
    assert due(utc("2026-11-22 06:00"), last=first)
    assert not due(utc("2026-11-22 05:59"), last=utc("2026-11-15 07:00"))
    assert due(utc("2026-11-22 06:00"), last=utc("2026-11-15 07:00"))
    # run was down over the slot of 11-29: at start on Tuesday 12-01 it is due
    assert due(utc("2026-12-01 09:00"), last=utc("2026-11-22 06:00"))
    assert not due(utc("2026-12-01 09:00"), last=utc("2026-11-29 06:00"))

"""When the trading loop rehearses: from the next bar's close until it comes, for a bounded time."""

from __future__ import annotations

import pytest

from appliance.rehearsal import Rehearsals

IDLE = 0.25
CLOSE = 300_000  # the next bar's close, market ms


def test_the_loop_wakes_at_the_close_then_rehearses_every_few_ms_until_the_window_ends():
    r = Rehearsals(0.005, window_s=2.0)
    assert r.wait_s(None, 0, 10.0, IDLE) == (IDLE, False)  # no bar decided yet
    assert r.wait_s(CLOSE, CLOSE - 60_000, 10.0, IDLE) == (IDLE, False)  # a minute to go
    assert r.wait_s(CLOSE, CLOSE - 60_000, 10.0, IDLE, speed=600) == (0.1, False)
    assert r.wait_s(CLOSE, CLOSE - 100, 10.0, IDLE) == (0.1, False)  # woken at the close
    assert r.wait_s(CLOSE, CLOSE, 10.0, IDLE) == (0.005, True)  # closed, not come: rehearse
    assert r.wait_s(CLOSE, CLOSE + 500, 11.99, IDLE) == (0.005, True)
    assert r.wait_s(CLOSE, CLOSE + 600, 12.0, IDLE) == (IDLE, False)  # 2 s of wall time: stop
    # the bar came and was decided: the next close opens a window of its own
    assert r.wait_s(2 * CLOSE, 2 * CLOSE + 10, 13.0, IDLE) == (0.005, True)
    assert r.wait_s(2 * CLOSE, 2 * CLOSE + 10, 14.9, IDLE) == (0.005, True)


def test_off_it_never_rehearses_and_a_bad_setting_is_refused():
    r = Rehearsals(0.0)
    assert r.wait_s(CLOSE, CLOSE - 100, 10.0, IDLE) == (IDLE, False)  # as the loop always did
    assert r.wait_s(CLOSE, CLOSE + 1, 10.0, IDLE) == (IDLE, False)
    slow = Rehearsals(1.0)  # slower than the loop's idle beat: at the beat's pace
    assert slow.wait_s(CLOSE, CLOSE, 10.0, IDLE) == (IDLE, True)
    with pytest.raises(ValueError, match="must be >= 0"):
        Rehearsals(-0.001)

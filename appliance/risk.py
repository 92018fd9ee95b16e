"""Pure risk rules: no clock, no I/O; services pass in what they measured.

The money-path rules (pre-trade checks, drawdown freeze, VaR) join this module with the
money-path issue; the rate-limit rule is here because discovery needs it first.
"""

from __future__ import annotations

from typing import Sequence


def sustained_above(samples: Sequence[tuple[float, float]], now: float, threshold: float,
                    window_s: float) -> bool:
    """True when every sample of the last ``window_s`` seconds is above ``threshold`` and the
    samples cover the whole window (one high reading is not "sustained").

    ``samples`` are (time, value) pairs, oldest first.
    """
    start = now - window_s
    at_or_before = [v for t, v in samples if t <= start]
    if not at_or_before:
        return False  # the readings do not reach back a whole window yet
    inside = [v for t, v in samples if start < t <= now]
    return at_or_before[-1] > threshold and all(v > threshold for v in inside)

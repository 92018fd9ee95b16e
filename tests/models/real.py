"""Real candles for the model tests, read straight from the freqtrade JSON fixture files."""

from __future__ import annotations

import json

import numpy as np

from tests.conftest import REAL_DATA

FREQTRADE = REAL_DATA / "freqtrade"


def load_freqtrade(name: str) -> np.ndarray:
    """(n, 7) [open_time_ms, open, high, low, close, volume, turnover]; turnover = volume * close.

    The files hold [open_time_ms, open, high, low, close, volume] rows, oldest first.
    """
    rows = np.array(json.loads((FREQTRADE / name).read_text()), dtype=np.float64)
    return np.column_stack([rows, rows[:, 5] * rows[:, 4]])

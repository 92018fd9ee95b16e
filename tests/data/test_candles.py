import numpy as np
import pytest

from data.candles import CandleError, merge, missing_ranges, validate

M = 60_000


def bars(times):
    t = np.asarray(times, dtype=float)
    c = np.full(len(t), 10.0)
    return np.column_stack([t, c, c + 1, c - 1, c, c, c * 10])


def test_valid_candles_pass():
    validate(bars([0, M, 2 * M]))
    validate(np.zeros((0, 7)))


@pytest.mark.parametrize("rows, message", [
    (bars([0, M, M]), "duplicate"),
    (bars([0, 2 * M, M]), "ascending"),
    (bars([0, 1234]), "grid"),
    (np.column_stack([bars([0])[:, :2], [[9.0]], bars([0])[:, 3:]]), "high >= max"),
    (np.column_stack([bars([0])[:, :6], [[np.nan]]]), "NaN"),
    (np.zeros((3, 5)), "shape"),
])
def test_bad_candles_are_refused(rows, message):
    with pytest.raises(CandleError, match=message):
        validate(rows)


def test_missing_ranges():
    assert missing_ranges(np.array([0, M, 4 * M]), 0, 6 * M) == [(2 * M, 4 * M), (5 * M, 6 * M)]
    assert missing_ranges(np.array([]), 0, 2 * M) == [(0, 2 * M)]
    assert missing_ranges(np.array([0, M]), 0, 2 * M) == []


def test_merge_unions_by_open_time_newest_wins():
    a = bars([0, M, 2 * M])
    b = bars([M, 3 * M])
    b[:, 4] = 11.0
    m = merge(a, b)
    assert list(m[:, 0]) == [0, M, 2 * M, 3 * M]
    assert list(m[:, 4]) == [10.0, 11.0, 10.0, 11.0]

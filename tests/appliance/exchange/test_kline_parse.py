"""One kline page in one numpy call (the backfill's parse cost), with the careful path's
answers wherever a page is not exactly Bybit's 7 string fields a row."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.exchange.bybit_wire import ValidationError, parse_klines

MIN = 60_000
T0 = 1_735_689_600_000


def page(n: int, extra: tuple[str, ...] = ()) -> list[list[str]]:
    return [[str(T0 + i * MIN), "10.5", "12", "9", "11.25", "1.5", "16.5", *extra]
            for i in reversed(range(n))]


def test_a_page_of_seven_string_fields_parses_oldest_first_and_exactly():
    rows = page(1000)
    arr = parse_klines({"list": rows}, "X", MIN, T0, T0 + 999 * MIN)
    assert arr.shape == (1000, 7) and arr.flags.c_contiguous
    assert np.array_equal(arr[:, 0], T0 + MIN * np.arange(1000))
    assert np.array_equal(arr[0, 1:], [10.5, 12, 9, 11.25, 1.5, 16.5])


def test_longer_rows_keep_their_first_seven_fields():
    arr = parse_klines({"list": page(3, extra=("future-field",))}, "X", MIN, T0, T0 + 2 * MIN)
    assert arr.shape == (3, 7) and arr[2, 0] == T0 + 2 * MIN


@pytest.mark.parametrize("rows, message", [
    ([[str(T0 + MIN), "1", "2"], [str(T0), "1", "2", "1", "1", "1", "1"]],
     "row 0 is not a 7-field list"),
    ([*page(2)[:1], "1234567"], "row 1 is not a 7-field list"),
    ([[str(T0), "1", "2", "1", "abc", "1", "1"]], "non-numeric or out-of-range"),
    ([[str(T0), "1", "2", "1", None, "1", "1"]], "row 0 has a missing or non-finite field"),
])
def test_a_page_that_is_not_seven_numbers_a_row_names_what_is_wrong(rows, message):
    with pytest.raises(ValidationError, match=message):
        parse_klines({"list": rows}, "X", MIN, T0, T0 + 2 * MIN)

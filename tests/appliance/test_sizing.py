import math
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.domain import Side
from appliance.sizing import order_for, round_price, round_qty, target_fraction, target_qty

D = Decimal


@pytest.mark.parametrize("probs, vol, expected", [
    ((0.1, 0.2, 0.7), 0.02, 0.25),  # long; 0.6 -> conf 5/9 -> 0.2778 capped at 0.25
    ((0.7, 0.2, 0.1), 0.02, -0.25),  # the mirror image is short
    ((0.1, 0.2, 0.7), 0.05, 5 / 9 * 0.01 / 0.05),  # wild market: smaller, under the cap
    ((0.1, 0.2, 0.7), 0.10, 5 / 9 * 0.01 / 0.10),  # twice the vol, half the size
    ((0.0, 0.0, 1.0), 0.04, 0.25),  # full confidence: vol_target / vol = 0.25
    ((0.3, 0.4, 0.3), 0.02, 0.0),  # no edge
    ((0.0, 0.9, 0.1), 0.02, 0.0),  # score 0.1 = threshold: flat
    ((0.40, 0.09, 0.51), 0.0001, 0.25),  # just past it, calm market: capped
    ((0.40, 0.09, 0.51), 0.01, 0.01 / 0.9),  # just past it: a small size
    ((0.1, 0.2, 0.7), 0.0, 0.0),  # no volatility estimate: flat, no division by zero
    ((0.1, 0.2, 0.7), -0.01, 0.0),
    ((0.1, 0.2, 0.7), math.nan, 0.0),
    ((math.nan, 0.2, 0.7), 0.02, 0.0),  # no usable probabilities
])
def test_target_fraction(probs, vol, expected):
    assert target_fraction(probs, vol) == pytest.approx(expected)


def test_target_fraction_options_and_guards():
    assert target_fraction((0.0, 0.0, 1.0), 0.01, threshold=0.0, vol_target=0.01,
                           max_fraction=0.5) == pytest.approx(0.5)
    assert target_fraction((0.0, 0.0, 1.0), 0.04, max_fraction=0.1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        target_fraction((0.5, 0.5), 0.01)
    with pytest.raises(ValueError):
        target_fraction((0.0, 0.0, 1.0), 0.01, threshold=1.0)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(1e-6, 1))
def test_target_fraction_is_bounded_and_follows_the_score(p_short, p_long, vol):
    f = target_fraction((p_short, 0.0, p_long), vol)
    assert abs(f) <= 0.25
    assert f == 0.0 or (f > 0) == (p_long > p_short)


@pytest.mark.parametrize("fraction, equity, price, expected", [
    (0.25, D("100000"), D("50000"), D("0.5")),
    (-0.1, D("10000"), D("2000"), D("-0.5")),
    (0.0, D("10000"), D("2000"), D("0")),
])
def test_target_qty(fraction, equity, price, expected):
    assert target_qty(fraction, equity, price) == expected


def test_target_qty_guards():
    with pytest.raises(ValueError):
        target_qty(0.1, D(1000), D(0))
    with pytest.raises(ValueError):
        target_qty(math.nan, D(1000), D(10))


@pytest.mark.parametrize("qty, step, expected", [
    (D("0.0127"), D("0.001"), D("0.012")),
    (D("-0.0127"), D("0.001"), D("-0.012")),
    (D("0.012"), D("0.001"), D("0.012")),  # already a multiple
    (D("0.0009"), D("0.001"), D("0.000")),
    (D("-0.0009"), D("0.001"), D("0.000")),  # not "-0.000"
    (D("17.99"), D("1"), D("17")),
    (D("2.37"), D("0.5"), D("2.0")),
    (D("-2.37"), D("0.5"), D("-2.0")),
])
def test_round_qty_toward_zero(qty, step, expected):
    result = round_qty(qty, step)
    assert result == expected
    assert str(result) == str(expected)  # exact Decimal, no float noise and no "-0"


@pytest.mark.parametrize("price, tick, expected", [
    (D("50000.04"), D("0.1"), D("50000.0")),
    (D("50000.05"), D("0.1"), D("50000.1")),  # half up
    (D("0.123456"), D("0.0001"), D("0.1235")),
    (D("101.3"), D("0.5"), D("101.5")),
    (D("101.2"), D("0.5"), D("101.0")),
])
def test_round_price_to_the_nearest_tick(price, tick, expected):
    assert round_price(price, tick) == expected


def test_rounding_rejects_a_non_positive_step():
    with pytest.raises(ValueError):
        round_qty(D(1), D(0))
    with pytest.raises(ValueError):
        round_price(D(1), D(0))


_steps = st.sampled_from([D("1"), D("0.5"), D("0.1"), D("0.001"), D("0.00001")])
_qtys = st.decimals(min_value=-1000, max_value=1000, places=6, allow_nan=False,
                    allow_infinity=False)


@given(_qtys, _steps)
def test_round_qty_never_adds_and_lands_on_the_step(qty, step):
    result = round_qty(qty, step)
    assert abs(result) <= abs(qty)
    assert abs(qty - result) < step
    assert result % step == 0
    assert result == 0 or (result > 0) == (qty > 0)


@pytest.mark.parametrize("current, target, step, min_qty, expected", [
    (D(0), D("0.0127"), D("0.001"), D("0.001"), (Side.BUY, D("0.012"), False)),  # open long
    (D(0), D("-0.0127"), D("0.001"), D("0.001"), (Side.SELL, D("0.012"), False)),  # open short
    (D("0.010"), D("0.015"), D("0.001"), D("0.001"), (Side.BUY, D("0.005"), False)),  # add
    (D("0.010"), D("0.004"), D("0.001"), D("0.001"), (Side.SELL, D("0.006"), True)),  # reduce
    (D("0.010"), D(0), D("0.001"), D("0.001"), (Side.SELL, D("0.010"), True)),  # close
    (D("-0.010"), D(0), D("0.001"), D("0.001"), (Side.BUY, D("0.010"), True)),  # close short
    (D("0.010"), D("-0.005"), D("0.001"), D("0.001"), (Side.SELL, D("0.015"), False)),  # flip
    (D("-0.010"), D("0.020"), D("0.001"), D("0.001"), (Side.BUY, D("0.030"), False)),  # flip
    (D("0.010"), D("0.0105"), D("0.001"), D("0.001"), None),  # rounds to nothing
    (D("0.010"), D("0.013"), D("0.001"), D("0.005"), None),  # below the minimum order
    (D("0.010"), D("0.010"), D("0.001"), D("0.001"), None),  # already there
    (D("0.010"), D("0.00449"), None, D("0.001"), (Side.SELL, D("0.00551"), True)),  # shadow
    (D(0), D("0.0000123"), None, D("0.001"), (Side.BUY, D("0.0000123"), False)),  # shadow tiny
    (D("0.5"), D("0.5"), None, D(0), None),
])
def test_order_for(current, target, step, min_qty, expected):
    assert order_for(current, target, step=step, min_qty=min_qty) == expected


@given(_qtys, _qtys, _steps)
def test_order_for_lands_within_a_step_and_reduce_only_never_adds(current, target, step):
    current = round_qty(current, step)  # exchange positions are whole lots
    order = order_for(current, target, step=step, min_qty=step)
    if order is None:
        assert abs(target - current) < step
        return
    side, qty, reduce_only = order
    assert qty > 0 and qty % step == 0
    after = current + (qty if side is Side.BUY else -qty)
    assert abs(target - after) < step
    if reduce_only:
        assert abs(after) < abs(current) and (after == 0 or (after > 0) == (current > 0))

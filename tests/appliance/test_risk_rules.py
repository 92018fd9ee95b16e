import random
from decimal import Decimal

import pytest

from appliance.domain import Side, TradingState
from appliance.risk import (AccountView, RiskLimits, check_order, drawdown, freeze_decision,
                            historical_var, trading_state)

D = Decimal
BUY, SELL = Side.BUY, Side.SELL

# Small limits so that every refusal has a small, readable account that triggers it.
LIMITS = RiskLimits(max_symbol_notional=D(1000), max_gross_exposure=D(2000), max_leverage=D(2),
                    max_orders_per_minute=5, max_daily_loss=D(100))


def account(positions=None, prices=None, *, equity=D(10_000), orders=0, pnl=D(0),
            maintenance=False, disk_full=False):
    return AccountView(equity=equity, positions=positions or {}, prices=prices or {},
                       orders_last_minute=orders, daily_pnl=pnl, maintenance_mode=maintenance,
                       disk_full=disk_full)


@pytest.mark.parametrize("side, qty, reduce_only, acct, expected", [
    # each refusal, with the minimal account that triggers it
    (BUY, D(1), False, account(maintenance=True), "maintenance_mode"),
    (BUY, D(11), False, account(), "symbol_notional_cap"),  # 1100 > 1000
    (BUY, D(5), False, account({"ETH": D(8), "SOL": D(8)}, {"ETH": D(100), "SOL": D(100)}),
     "gross_exposure_cap"),  # 500 + 800 + 800 = 2100 > 2000
    (BUY, D(10), False, account(equity=D(400)), "leverage_cap"),  # 1000 > 2 x 400
    (BUY, D(1), False, account(equity=D(0)), "leverage_cap"),  # no equity, no leverage
    (BUY, D(1), False, account(orders=5), "order_rate_cap"),
    (BUY, D(1), False, account(pnl=D(-100)), "daily_loss_limit"),  # at the limit
    # just inside every limit
    (BUY, D(10), False, account(equity=D(500)), None),  # 1000 = cap, leverage 2 = cap
    (BUY, D(1), False, account(orders=4), None),
    (BUY, D(1), False, account(pnl=D("-99.99")), None),
    (BUY, D(5), False, account({"ETH": D(7), "SOL": D(8)}, {"ETH": D(100), "SOL": D(100)}),
     None),  # gross 2000 = cap
    # reduce-only orders pass the kill switch and the loss limit, so the book can be flattened
    (SELL, D(2), True, account({"BTC": D(2)}, maintenance=True), None),
    (BUY, D(1), True, account({"BTC": D(-2)}, maintenance=True), None),
    (SELL, D(1), True, account({"BTC": D(2)}, pnl=D(-500)), None),
    # ... but the flag alone is not trusted: the order must really shrink the position
    (SELL, D(1), True, account(maintenance=True), "maintenance_mode"),  # opens a short
    (SELL, D(3), True, account({"BTC": D(2)}, maintenance=True), "maintenance_mode"),  # flips
    (BUY, D(1), True, account({"BTC": D(2)}, pnl=D(-500)), "daily_loss_limit"),  # adds
    (SELL, D(1), False, account({"BTC": D(2)}, maintenance=True), "maintenance_mode"),
    # a full disk: nothing new could be recorded, so only reducing orders go
    (BUY, D(1), False, account(disk_full=True), "disk_full"),
    (BUY, D(1), False, account({"BTC": D(2)}, disk_full=True), "disk_full"),  # adds
    (SELL, D(1), True, account({"BTC": D(2)}, disk_full=True), None),
    (SELL, D(2), True, account({"BTC": D(2)}, disk_full=True), None),  # closes
    (SELL, D(3), True, account({"BTC": D(2)}, disk_full=True), "disk_full"),  # flips
    (BUY, D(1), False, account(disk_full=True, maintenance=True), "maintenance_mode"),
    (BUY, D(1), False, account(disk_full=True, pnl=D(-500)), "disk_full"),
    # the order rate counts every order, reducing ones too
    (SELL, D(1), True, account({"BTC": D(2)}, orders=5), "order_rate_cap"),
    # a reducing order passes a book that is over every exposure cap (after a price move)
    (SELL, D(5), False, account({"BTC": D(30), "ETH": D(50)}, {"ETH": D(100)}, equity=D(100)),
     None),
    (BUY, D(1), False, account({"BTC": D(30), "ETH": D(50)}, {"ETH": D(100)}, equity=D(100)),
     "symbol_notional_cap"),  # adding to it is refused
    # a flip is checked on the position after it
    (SELL, D(16), False, account({"BTC": D(5)}), "symbol_notional_cap"),  # -11 x 100 = 1100
    (SELL, D(9), False, account({"BTC": D(5)}), None),  # -4: less exposure than before
])
def test_check_order(side, qty, reduce_only, acct, expected):
    assert check_order("BTC", side, qty, reduce_only, D(100), acct, LIMITS) == expected


@pytest.mark.parametrize("acct, expected", [
    (account(), (TradingState.ACTIVE, None)),
    (account(maintenance=True), (TradingState.REDUCING, "maintenance_mode")),
    (account(disk_full=True), (TradingState.REDUCING, "disk_full")),
    (account(pnl=D(-100)), (TradingState.REDUCING, "daily_loss_limit")),
    (account(disk_full=True, maintenance=True, pnl=D(-100)),
     (TradingState.REDUCING, "maintenance_mode")),
])
def test_trading_state_is_reducing_for_each_cause(acct, expected):
    assert trading_state(acct, LIMITS) == expected


def test_check_order_prices_the_symbol_at_the_order_price():
    acct = account({"BTC": D(5)}, {"BTC": D(1)})  # a stale price in the view does not count
    assert check_order("BTC", BUY, D(6), False, D(100), acct, LIMITS) == "symbol_notional_cap"


def test_check_order_needs_a_price_for_every_open_position():
    with pytest.raises(ValueError, match="ETH"):
        check_order("BTC", BUY, D(1), False, D(100), account({"ETH": D(1)}), LIMITS)


@pytest.mark.parametrize("qty, price", [(D(0), D(100)), (D(-1), D(100)), (D(1), D(0))])
def test_check_order_rejects_nonsense(qty, price):
    with pytest.raises(ValueError):
        check_order("BTC", BUY, qty, False, price, account(), LIMITS)


def test_a_flatten_needs_no_market_data():
    acct = account({"BTC": D(2), "ETH": D(3)}, maintenance=True)  # no prices at all
    assert check_order("BTC", SELL, D(2), True, D(0), acct, LIMITS) is None


def test_default_limits():
    limits = RiskLimits()
    assert (limits.max_symbol_notional, limits.max_gross_exposure, limits.max_leverage,
            limits.max_orders_per_minute, limits.max_daily_loss) == (
        D(25_000), D(100_000), D(3), 60, D(5_000))


@pytest.mark.parametrize("equity, expected", [
    ([], 0.0),
    ([100.0], 0.0),
    ([100, 101, 102], 0.0),
    ([100, 90, 95, 80, 120, 108], 0.2),  # 100 -> 80 beats 120 -> 108
    ([100, 50, 200, 150], 0.5),
])
def test_drawdown(equity, expected):
    assert drawdown(equity) == pytest.approx(expected)


def test_drawdown_needs_positive_equity():
    with pytest.raises(ValueError):
        drawdown([0.0, 1.0])


@pytest.mark.parametrize("window, frozen, expected", [
    ([], False, False),  # no evidence keeps the state
    ([], True, True),
    ([100], False, False),
    ([100, 95], False, False),  # 5% < 8%
    ([100, 92], False, True),  # 8% freezes
    ([100, 110, 101], False, True),  # 8.2% from the window's peak, not from its start
    ([100, 85, 97], False, False),  # the current drawdown counts, not the deepest one
    ([100, 95], True, True),  # frozen: 5% has not recovered below 4%
    ([100, 96], True, True),  # exactly 4% is not below it
    ([100, 96.5], True, False),  # 3.5%: thaws
    ([100, 90, 104], True, False),  # a new peak
    ([100, 94], False, False),  # the same 6% freezes nothing and thaws nothing: hysteresis
    ([100, 94], True, True),
])
def test_freeze_hysteresis(window, frozen, expected):
    assert freeze_decision(window, frozen) is expected


def test_freeze_thresholds_are_parameters():
    assert freeze_decision([100, 97], False, freeze_at=0.03, unfreeze_below=0.01)
    with pytest.raises(ValueError):
        freeze_decision([100, 97], False, freeze_at=0.03, unfreeze_below=0.05)


def _shuffled(values):
    values = list(values)
    random.Random(7).shuffle(values)
    return values


HUNDRED = _shuffled([-i / 1000 for i in range(1, 101)])  # -0.001 ... -0.100


@pytest.mark.parametrize("returns, level, expected", [
    (HUNDRED, 0.95, 0.096),  # 5th worst of 100
    (HUNDRED, 0.99, 0.100),  # the worst
    (HUNDRED, 0.90, 0.091),  # 10th worst
    (_shuffled([-0.05, -0.04] + [0.01] * 18), 0.95, 0.05),  # n=20: ceil(1) -> the worst day
    (_shuffled([-0.05, -0.04] + [0.01] * 18), 0.90, 0.04),  # ceil(2) -> the 2nd worst
    (_shuffled([-0.05, -0.04, -0.03] + [0.01] * 37), 0.95, 0.04),  # n=40: 2nd worst
    ([0.01] * 25, 0.95, 0.0),  # a tail of gains is no loss
])
def test_historical_var(returns, level, expected):
    assert historical_var(returns, level) == pytest.approx(expected)


def test_historical_var_guards():
    with pytest.raises(ValueError, match="at least 20"):
        historical_var([-0.01] * 19)
    with pytest.raises(ValueError):
        historical_var([-0.01] * 30, level=1.0)
    with pytest.raises(ValueError):
        historical_var([-0.01] * 29 + [float("nan")])

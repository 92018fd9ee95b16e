from decimal import Decimal

import pytest

from appliance.domain import OrderIntent, Side
from appliance.exchange.base import ExchangeError
from appliance.exchange.paper import PaperBroker

D = Decimal


def broker(prices, **kw):
    return PaperBroker(lambda s: prices[s], taker_fee=0.00055, slippage_bps=2.0,
                       starting_balance=10_000, tick_of=lambda s: D("0.01"),
                       step_of=lambda s: D("0.001"), **kw)


def test_round_trip_pays_fees_and_slippage_exactly():
    prices = {"BTCUSDT": 50_000.0}
    b = broker(prices)
    buy = b.fill(OrderIntent("BTCUSDT", Side.BUY, D("0.100")), 1)
    assert buy.price == D("50010.00")  # 2 bps worse
    assert buy.fee == D("0.100") * D("50010.00") * D("0.00055")
    prices["BTCUSDT"] = 51_000.0
    sell = b.fill(OrderIntent("BTCUSDT", Side.SELL, D("0.100")), 2)
    assert sell.price == D("50989.80")
    pnl = D("0.100") * (D("50989.80") - D("50010.00"))
    assert b.positions["BTCUSDT"].qty == 0
    assert b.positions["BTCUSDT"].realized_pnl == pnl
    assert b.wallet == D(10_000) + pnl - buy.fee - sell.fee
    assert b.equity() == b.wallet


def test_partial_close_flip_and_average_price():
    prices = {"ETHUSDT": 2_000.0}
    b = PaperBroker(lambda s: prices[s], taker_fee=0, slippage_bps=0, starting_balance=0)
    b.fill(OrderIntent("ETHUSDT", Side.BUY, D("1")), 1)
    prices["ETHUSDT"] = 2_100.0
    b.fill(OrderIntent("ETHUSDT", Side.BUY, D("1")), 2)
    assert b.positions["ETHUSDT"].avg_price == D("2050")
    b.fill(OrderIntent("ETHUSDT", Side.SELL, D("3")), 3)  # close 2, open 1 short
    pos = b.positions["ETHUSDT"]
    assert pos.qty == D("-1") and pos.avg_price == D("2100") and pos.realized_pnl == D("100")
    prices["ETHUSDT"] = 2_000.0
    assert b.equity() == D("100") + D("100")  # realised + short gain


def test_bad_orders_are_refused():
    b = broker({"BTCUSDT": 100.0, "X": None})
    with pytest.raises(ExchangeError, match="multiple of the lot size"):
        b.fill(OrderIntent("BTCUSDT", Side.BUY, D("0.0005")), 1)
    with pytest.raises(ExchangeError, match="positive"):
        b.fill(OrderIntent("BTCUSDT", Side.BUY, D("0")), 1)
    with pytest.raises(ExchangeError, match="reduce-only"):
        b.fill(OrderIntent("BTCUSDT", Side.SELL, D("1"), reduce_only=True), 1)
    with pytest.raises(ExchangeError, match="no price"):
        b.fill(OrderIntent("X", Side.BUY, D("1")), 1)

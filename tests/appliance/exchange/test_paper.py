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


def test_the_saved_account_is_the_json_of_to_dict_as_orders_come_and_go(monkeypatch):
    """``to_json`` (what the sim saves after every fill) encodes each remembered order once;
    its text stays exactly ``json.dumps(to_dict())``, also once old orders are forgotten, a
    link is reused, and after a restore."""
    import json

    import appliance.exchange.paper as paper

    monkeypatch.setattr(paper, "MAX_REMEMBERED", 5)
    prices = {"BTCUSDT": 50_000.0, "ETHUSDT": 2_000.0}
    b = broker(prices)

    def same_text(br):
        text = br.to_json()  # both take the next order id, as a save always did
        data = br.to_dict()
        assert data["next_id"] == json.loads(text)["next_id"] + 1
        assert text == json.dumps({**data, "next_id": data["next_id"] - 1})
        return text

    same_text(b)  # no orders yet
    for i, link in enumerate([0, 1, 2, 1, 3, 4, 5, 6, 7, 6, 8, 9]):  # 1 and 6 sent again
        symbol = "BTCUSDT" if i % 3 else "ETHUSDT"
        b.fill(OrderIntent(symbol, Side.BUY if i % 2 else Side.SELL, D("0.010"),
                           order_link_id=f"link-{link}"), i)
        prices[symbol] *= 1.001
        text = same_text(b)
    assert list(json.loads(text)["orders"]) == list(b.by_link) and len(b.by_link) == 5
    assert json.loads(text)["orders"]["link-6"][0] == b.by_link["link-6"].order_id
    b.by_link.pop("link-7")  # forgotten other than by a fill: not saved either
    assert "link-7" not in json.loads(same_text(b))["orders"]
    again = broker(prices)
    again.restore(json.loads(text))
    assert json.loads(same_text(again))["orders"] == json.loads(text)["orders"]

"""Private side of the fake Bybit: HMAC auth check, orders, positions and the wallet.

One :class:`PaperBroker` per API key fills Market orders at SimMarket's last closed price at
the server's clock. Orders are acknowledged and already filled when the acknowledgement is
sent (Bybit fills a Market order asynchronously; a client that polls ``/v5/order/realtime``
sees the same thing, just sooner).
"""

from __future__ import annotations

import hmac
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping

from appliance.domain import OrderIntent, Side
from appliance.exchange.base import ExchangeError
from appliance.exchange.bybit_wire import sign
from appliance.exchange.fake_bybit_market import ApiFault, dec, require_linear, require_symbol
from appliance.exchange.paper import PaperBroker
from appliance.exchange.simmarket import SimMarket

MAX_ORDERS_KEPT = 10_000


def check_auth(headers: Mapping[str, str], payload: str, api_keys: Mapping[str, str],
               now_ms: int) -> str:
    """Return the API key of a correctly signed request, or raise :class:`ApiFault`.

    Accepted iff ``server_time - recv_window <= timestamp < server_time + 1000`` and the
    signature matches ``timestamp + key + recv_window + payload`` (payload = the raw query
    string or body, exactly as sent).
    """
    key = headers.get("x-bapi-api-key", "")
    secret = api_keys.get(key)
    if not key or secret is None:
        raise ApiFault(10003, "API key is invalid.")
    ts_raw = headers.get("x-bapi-timestamp", "")
    recv_raw = headers.get("x-bapi-recv-window", "5000")
    try:
        ts, recv = int(ts_raw), int(recv_raw)
    except ValueError:
        raise ApiFault(10002, "invalid request, please check your timestamp or recv_window "
                              "param") from None
    if not now_ms - recv <= ts < now_ms + 1000:
        raise ApiFault(10002, "invalid request, please check your server timestamp or "
                              f"recv_window param. req_timestamp[{ts}],"
                              f"server_timestamp[{now_ms}],recv_window[{recv}]")
    expected = sign(secret, ts_raw, key, recv_raw, payload)
    if not hmac.compare_digest(expected, headers.get("x-bapi-sign", "").lower()):
        raise ApiFault(10004, f"error sign! origin_string[{ts_raw}{key}{recv_raw}{payload}]")
    return key


@dataclass
class _Order:
    order_id: str
    link_id: str
    symbol: str
    side: str
    qty: Decimal
    status: str
    avg_price: Decimal
    fee: Decimal
    created_ms: int
    reduce_only: bool

    def as_wire(self) -> dict[str, Any]:
        filled = self.qty if self.status == "Filled" else Decimal(0)
        return {
            "orderId": self.order_id, "orderLinkId": self.link_id, "symbol": self.symbol,
            "price": "0", "qty": dec(self.qty), "side": self.side, "isLeverage": "",
            "positionIdx": 0, "orderStatus": self.status, "cancelType": "UNKNOWN",
            "rejectReason": "EC_NoError", "avgPrice": dec(self.avg_price),
            "leavesQty": "0", "leavesValue": "0", "cumExecQty": dec(filled),
            "cumExecValue": dec(filled * self.avg_price), "cumExecFee": dec(self.fee),
            "timeInForce": "IOC", "orderType": "Market", "stopOrderType": "",
            "triggerPrice": "", "takeProfit": "", "stopLoss": "", "tpTriggerBy": "",
            "slTriggerBy": "", "triggerDirection": 0, "triggerBy": "",
            "reduceOnly": self.reduce_only, "closeOnTrigger": False, "tpslMode": "",
            "createdTime": str(self.created_ms), "updatedTime": str(self.created_ms),
            "cumFeeDetail": {"USDT": dec(self.fee)},
        }


class Account:
    """One API key's paper account on the sim market."""

    def __init__(self, market: SimMarket, now_ms: Callable[[], int], *, starting_balance: float,
                 taker_fee: float, slippage_bps: float) -> None:
        self.market = market
        self._now_ms = now_ms
        self.broker = PaperBroker(
            lambda s: market.last_price(s, now_ms()), taker_fee=taker_fee,
            slippage_bps=slippage_bps, starting_balance=starting_balance,
            tick_of=market.tick, step_of=market.qty_step)
        self.orders: OrderedDict[str, _Order] = OrderedDict()
        self.by_link: dict[str, str] = {}
        self._ids = itertools.count(1)

    def create_order(self, body: Mapping[str, Any]) -> dict[str, Any]:
        require_linear(body)
        symbol = require_symbol(self.market, body)
        now = self._now_ms()
        if not self.market.listed(symbol, now):
            raise ApiFault(10001, f"params error: {symbol} is not trading")
        side = body.get("side")
        if side not in ("Buy", "Sell"):
            raise ApiFault(10001, "params error: side invalid")
        if body.get("orderType") != "Market":
            raise ApiFault(10001, "params error: the fake fills orderType=Market only")
        try:
            qty = Decimal(str(body.get("qty", "")))
        except InvalidOperation:
            raise ApiFault(10001, "params error: qty invalid") from None
        if not qty.is_finite() or qty <= 0:
            raise ApiFault(110017, "params error: qty must be positive")
        link = str(body.get("orderLinkId") or "")
        if len(link) > 36:
            raise ApiFault(10001, "params error: orderLinkId longer than 36 characters")
        if link and link in self.by_link:
            raise ApiFault(110072, "OrderLinkedID is duplicate")
        reduce_only = bool(body.get("reduceOnly", False))
        intent = OrderIntent(symbol, Side(side), qty, reduce_only=reduce_only)
        try:
            fill = self.broker.fill(intent, now)
        except ExchangeError as exc:
            raise ApiFault(110017 if reduce_only else 10001, str(exc)) from None
        order_id = str(1_800_000_000_000_000_000 + next(self._ids))
        self.orders[order_id] = _Order(order_id, link, symbol, side, qty, "Filled", fill.price,
                                       fill.fee, now, reduce_only)
        if link:
            self.by_link[link] = order_id
        while len(self.orders) > MAX_ORDERS_KEPT:
            old = self.orders.popitem(last=False)[1]
            self.by_link.pop(old.link_id, None)
        return {"orderId": order_id, "orderLinkId": link}

    def cancel_order(self, body: Mapping[str, Any]) -> dict[str, Any]:
        require_linear(body)
        require_symbol(self.market, body)
        order_id = str(body.get("orderId") or self.by_link.get(str(body.get("orderLinkId")), ""))
        if not order_id:
            raise ApiFault(10001, "params error: orderId or orderLinkId is required")
        # Market orders fill on arrival: whatever exists is already final.
        raise ApiFault(110001, "order not exists or too late to cancel")

    def open_orders(self, params: Mapping[str, str]) -> dict[str, Any]:
        require_linear(params)
        order_id = params.get("orderId") or self.by_link.get(params.get("orderLinkId", ""), "")
        if order_id or params.get("orderLinkId"):
            found = self.orders.get(order_id)
            rows = [found.as_wire()] if found else []
        elif params.get("symbol") or params.get("settleCoin") or params.get("baseCoin"):
            rows = []  # nothing rests: every order here is a Market order, filled at once
        else:
            raise ApiFault(10001, "params error: symbol, baseCoin or settleCoin is required")
        return {"category": "linear", "nextPageCursor": "", "list": rows}

    def positions(self, params: Mapping[str, str]) -> dict[str, Any]:
        require_linear(params)
        symbol = params.get("symbol")
        if symbol:
            symbols = [require_symbol(self.market, params)]
        elif params.get("settleCoin") == "USDT":
            symbols = sorted(s for s, p in self.broker.positions.items() if p.qty)
        else:
            raise ApiFault(10001, "params error: symbol or settleCoin is required")
        now = self._now_ms()
        rows = []
        for s in symbols:
            pos = self.broker.positions.get(s)
            qty = pos.qty if pos else Decimal(0)
            avg = pos.avg_price if pos else Decimal(0)
            mark = Decimal(str(self.market.last_price(s, now) or 0))
            rows.append({
                "positionIdx": 0, "riskId": 1, "riskLimitValue": "2000000", "symbol": s,
                "side": "" if qty == 0 else ("Buy" if qty > 0 else "Sell"),
                "size": dec(abs(qty)), "avgPrice": dec(avg),
                "positionValue": dec(abs(qty) * avg), "tradeMode": 0,
                "positionStatus": "Normal", "autoAddMargin": 0, "adlRankIndicator": 0,
                "leverage": "10", "markPrice": dec(mark), "liqPrice": "", "bustPrice": "",
                "positionIM": "0", "positionMM": "0", "tpslMode": "Full", "takeProfit": "0",
                "stopLoss": "0", "trailingStop": "0",
                "unrealisedPnl": dec(qty * (mark - avg)) if qty else "0",
                "curRealisedPnl": dec(pos.realized_pnl) if pos else "0",
                "cumRealisedPnl": dec(pos.realized_pnl) if pos else "0",
                "seq": 1, "isReduceOnly": False, "createdTime": str(now),
                "updatedTime": str(now)})
        return {"category": "linear", "nextPageCursor": "", "list": rows}

    def fee_rates(self, params: Mapping[str, str]) -> dict[str, Any]:
        """``/v5/account/fee-rate``: this account's taker/maker rates per linear symbol (the
        paper broker's taker fee; the maker rate is Bybit's usual 0.02%)."""
        if params.get("category") != "linear":
            raise ApiFault(10001, "params error: category only support linear here")
        wanted = params.get("symbol")
        symbols = [wanted] if wanted else self.market.symbols()
        taker = dec(self.broker.taker_fee)
        return {"list": [{"symbol": s, "takerFeeRate": taker, "makerFeeRate": "0.0002"}
                         for s in symbols]}

    def wallet(self, params: Mapping[str, str]) -> dict[str, Any]:
        if params.get("accountType") != "UNIFIED":
            raise ApiFault(10001, "params error: accountType only support UNIFIED")
        coins = [c for c in (params.get("coin") or "USDT").split(",") if c]
        wallet, equity = self.broker.wallet, self.broker.equity()
        upl = equity - wallet
        realized = sum((p.realized_pnl for p in self.broker.positions.values()), Decimal(0))
        items = [{
            "coin": "USDT", "equity": dec(equity), "usdValue": dec(equity),
            "walletBalance": dec(wallet), "locked": "0", "unrealisedPnl": dec(upl),
            "cumRealisedPnl": dec(realized), "totalOrderIM": "0", "totalPositionIM": "0",
            "totalPositionMM": "0", "borrowAmount": "", "accruedInterest": "0", "bonus": "0",
            "collateralSwitch": True, "marginCollateral": True, "spotBorrow": "0",
            "availableToWithdraw": dec(wallet)}] if "USDT" in coins else []
        return {"list": [{
            "accountType": "UNIFIED", "totalEquity": dec(equity),
            "totalWalletBalance": dec(wallet), "totalMarginBalance": dec(equity),
            "totalAvailableBalance": dec(wallet), "totalPerpUPL": dec(upl),
            "totalInitialMargin": "0", "totalMaintenanceMargin": "0", "accountIMRate": "0",
            "accountMMRate": "0", "accountLTV": "0", "coin": items}]}

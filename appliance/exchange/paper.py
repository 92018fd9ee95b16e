"""The paper matching engine: market orders filled locally at the last price.

Fills pay Bybit's taker fee (0.055% by default) and a slippage of ``slippage_bps`` against the
order's side. Positions and the wallet are ``Decimal`` so that every fill adds up exactly;
quantities must be whole multiples of the instrument's ``qty_step`` (the trading engine rounds
before it sends), and prices are rounded to the tick.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

from appliance.domain import Balance, Fill, OrderIntent, Position, Side
from appliance.exchange.base import ExchangeError

MAX_REMEMBERED = 10_000  # orders whose fills the paper venue can still report


class PaperBroker:
    def __init__(self, price_of: Callable[[str], float | None], *, taker_fee: float,
                 slippage_bps: float, starting_balance: float,
                 tick_of: Callable[[str], Decimal] | None = None,
                 step_of: Callable[[str], Decimal] | None = None,
                 price_at: Callable[[str, int], float | None] | None = None) -> None:
        """``price_at(symbol, ms)`` (virtual-clock markets) fills an order at the price of the
        moment it was decided for (``OrderIntent.decided_ms``) when that is earlier than now:
        in sim the machine's own lag behind the market clock must not move fill prices."""
        self._price_of = price_of
        self._price_at = price_at
        self._tick_of = tick_of
        self._step_of = step_of
        self.taker_fee = Decimal(str(taker_fee))
        self.slippage = Decimal(str(slippage_bps)) / Decimal(10_000)
        self.wallet = Decimal(str(starting_balance))
        self.positions: dict[str, Position] = {}
        self._ids = itertools.count(1)
        self.by_link: OrderedDict[str, Fill] = OrderedDict()  # orderLinkId -> its fill

    def fill(self, intent: OrderIntent, ts_ms: int) -> Fill:
        if intent.qty <= 0:
            raise ExchangeError(f"order qty must be positive, got {intent.qty}")
        if self._step_of is not None:
            step = self._step_of(intent.symbol)
            if intent.qty % step:
                raise ExchangeError(f"{intent.symbol}: qty {intent.qty} is not a multiple of "
                                    f"the lot size {step}")
        if self._price_at is not None and intent.decided_ms is not None:
            last = self._price_at(intent.symbol, min(intent.decided_ms, ts_ms))
        else:
            last = self._price_of(intent.symbol)
        if last is None:
            raise ExchangeError(f"{intent.symbol}: no price to fill against")
        pos = self.positions.get(intent.symbol, Position(intent.symbol, Decimal(0), Decimal(0)))
        signed = intent.qty if intent.side is Side.BUY else -intent.qty
        if intent.reduce_only and (pos.qty == 0 or (pos.qty > 0) == (signed > 0)
                                   or abs(signed) > abs(pos.qty)):
            raise ExchangeError(f"{intent.symbol}: reduce-only order would not reduce the "
                                f"position ({pos.qty})")
        direction = Decimal(1) if intent.side is Side.BUY else Decimal(-1)
        price = Decimal(str(last)) * (Decimal(1) + direction * self.slippage)
        if self._tick_of is not None:
            tick = self._tick_of(intent.symbol)
            price = (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick
        fee = intent.qty * price * self.taker_fee
        self.positions[intent.symbol] = self._apply(pos, signed, price)
        self.wallet -= fee
        fill = Fill(order_id=f"paper-{next(self._ids)}", symbol=intent.symbol, side=intent.side,
                    qty=intent.qty, price=price, fee=fee, ts=ts_ms)
        if intent.order_link_id:
            self.by_link[intent.order_link_id] = fill
            while len(self.by_link) > MAX_REMEMBERED:
                self.by_link.popitem(last=False)
        return fill

    def fill_of(self, order_link_id: str) -> Fill | None:
        """The fill of the order sent with ``order_link_id`` (the venue's order history)."""
        return self.by_link.get(order_link_id)

    def _apply(self, pos: Position, signed: Decimal, price: Decimal) -> Position:
        qty, avg, realized = pos.qty, pos.avg_price, pos.realized_pnl
        if qty == 0 or (qty > 0) == (signed > 0):  # open or add
            new_qty = qty + signed
            avg = (abs(qty) * avg + abs(signed) * price) / abs(new_qty)
            return Position(pos.symbol, new_qty, avg, realized)
        closed = min(abs(signed), abs(qty))
        pnl = closed * (price - avg) * (1 if qty > 0 else -1)
        realized += pnl
        self.wallet += pnl
        new_qty = qty + signed
        if new_qty == 0:
            return Position(pos.symbol, Decimal(0), Decimal(0), realized)
        if (new_qty > 0) != (qty > 0):  # flipped: the remainder opens at this price
            return Position(pos.symbol, new_qty, price, realized)
        return Position(pos.symbol, new_qty, avg, realized)

    def equity(self) -> Decimal:
        eq = self.wallet
        for pos in self.positions.values():
            if pos.qty:
                last = self._price_of(pos.symbol)
                if last is not None:
                    eq += pos.qty * (Decimal(str(last)) - pos.avg_price)
        return eq

    def to_dict(self) -> dict:
        """The account as plain data (Decimals as strings), for a venue that must persist."""
        return {"wallet": str(self.wallet), "next_id": next(self._ids),
                "positions": {s: [str(p.qty), str(p.avg_price), str(p.realized_pnl)]
                              for s, p in self.positions.items()},
                "orders": {link: [f.order_id, f.symbol, f.side.value, str(f.qty), str(f.price),
                                  str(f.fee), f.ts] for link, f in self.by_link.items()}}

    def restore(self, data: dict) -> None:
        self.wallet = Decimal(data["wallet"])
        self._ids = itertools.count(int(data["next_id"]))
        self.positions = {s: Position(s, Decimal(q), Decimal(a), Decimal(r))
                          for s, (q, a, r) in data["positions"].items()}
        self.by_link = OrderedDict(
            (link, Fill(oid, sym, Side(side), Decimal(q), Decimal(p), Decimal(f), int(ts)))
            for link, (oid, sym, side, q, p, f, ts) in data.get("orders", {}).items())

    def balance(self) -> Balance:
        return Balance("USDT", self.wallet, self.equity(),
                       tuple(p for p in self.positions.values() if p.qty))

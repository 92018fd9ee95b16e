"""The paper matching engine: market orders filled locally at the last price.

Fills cross the spread: a buy fills at ``last × (1 + slippage + half spread)``, a sell at
``last × (1 − slippage − half spread)``, rounded to the tick, and pays Bybit's taker fee
(0.055% by default) on its notional. The half spread comes from the market (``half_spread_of``:
the sim's spread model, replay's Roll estimate, Bybit's last quoted bid/ask; 0 when none is
given). Positions and the wallet are ``Decimal`` so that every fill adds up exactly;
quantities must be whole multiples of the instrument's ``qty_step`` (the trading engine rounds
before it sends).

Funding: at every funding time ``T`` each open position pays
:func:`models.funding.funding_due` ``(qty, price at T, rate at T)`` from the wallet — the
formula the books use, so the two agree exactly. It is settled lazily: before a fill (up to the
moment the fill is priced at) and whenever the venue is asked for its balance or positions (up
to now), every funding time not settled yet is charged on the positions held then. The time
settled up to (``funded_to``) is part of the account's saved state, so a restart neither skips
nor repeats a funding time. A fill priced at a moment before ``funded_to`` (sim: the order's
bar, when the machine lagged) corrects the funding charged since on the position it changed.
The charges are also kept per funding time (the last ``FUNDING_LOG_KEEP``, saved too), so the
account can be valued as of a bar before funding times it has settled already.
"""

from __future__ import annotations

import itertools
import json
from collections import OrderedDict
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

from appliance.domain import Balance, Fill, OrderIntent, Position, Side
from appliance.exchange.base import ExchangeError
from models.funding import FUNDING_GRID_MS, funding_due, funding_times

MAX_REMEMBERED = 10_000  # orders whose fills the paper venue can still report
FUNDING_LOG_KEEP = 256  # funding times whose charges the account still breaks down

#: (symbol, after ms, up to ms) -> [(funding time, rate)] with after < time <= up to
FundingOf = Callable[[str, int, int], list[tuple[int, float]]]
PriceAt = Callable[[str, int], float | None]


class PaperBroker:
    def __init__(self, price_of: Callable[[str], float | None], *, taker_fee: float,
                 slippage_bps: float, starting_balance: float,
                 tick_of: Callable[[str], Decimal] | None = None,
                 step_of: Callable[[str], Decimal] | None = None,
                 price_at: PriceAt | None = None,
                 half_spread_of: Callable[[str], float] | None = None,
                 funding_of: FundingOf | None = None,
                 funding_price_at: PriceAt | None = None) -> None:
        """``price_at(symbol, ms)`` (virtual-clock markets) fills an order at the price of the
        moment it was decided for (``OrderIntent.decided_ms``) when that is earlier than now:
        in sim the machine's own lag behind the market clock must not move fill prices.

        ``funding_of`` and ``funding_price_at`` (default ``price_at``) let the broker settle
        funding by itself (sim, replay); without them a caller passes both to
        :meth:`settle_funding` (Bybit paper, whose rates and prices are fetched first).
        """
        self._price_of = price_of
        self._price_at = price_at
        self._tick_of = tick_of
        self._step_of = step_of
        self._half_spread_of = half_spread_of
        self._funding_of = funding_of
        self._funding_price_at = funding_price_at or price_at
        self.taker_fee = Decimal(str(taker_fee))
        self.slippage = Decimal(str(slippage_bps)) / Decimal(10_000)
        self.wallet = Decimal(str(starting_balance))
        self.positions: dict[str, Position] = {}
        self._ids = itertools.count(1)
        self.by_link: OrderedDict[str, Fill] = OrderedDict()  # orderLinkId -> its fill
        # orderLinkId -> its '"link": [...]' JSON text, in by_link's order: a save encodes
        # each remembered order once, not every one of them again on every fill
        self._order_json: OrderedDict[str, str] = OrderedDict()
        self.funded_to: int | None = None  # funding is settled for every time <= this
        self.funding_paid: dict[str, Decimal] = {}  # per symbol, since the account opened
        # charged per funding time (the last FUNDING_LOG_KEEP), complete after log_from
        self.funding_log: dict[int, Decimal] = {}
        self.funding_log_from: int | None = None
        self._spreads: dict[float, Decimal] = {}

    def half_spread(self, symbol: str) -> Decimal:
        """The half spread a fill of ``symbol`` pays now, as a fraction of the price."""
        if self._half_spread_of is None:
            return Decimal(0)
        h = self._half_spread_of(symbol) or 0
        out = self._spreads.get(h)
        if out is None:  # Decimal(str(float)) once per quoted value, not once per fill
            if len(self._spreads) > 4096:
                self._spreads.clear()
            out = self._spreads[h] = Decimal(str(h))
        return out

    # -- funding ---------------------------------------------------------------------------

    def settle_funding(self, upto_ms: int, funding_of: FundingOf | None = None,
                       price_at: PriceAt | None = None) -> int:
        """Charge every funding time in ``(funded_to, upto_ms]`` on the positions held then
        (they are the current ones: every fill settles first); returns how many payments were
        made. The first call only starts the clock of the account."""
        funding_of = funding_of or self._funding_of
        price_at = price_at or self._funding_price_at
        if funding_of is None or price_at is None:
            return 0
        if self.funded_to is None:
            self.funded_to = self.funding_log_from = upto_ms
            return 0
        if upto_ms <= self.funded_to:
            return 0
        paid = 0
        for symbol, pos in sorted(self.positions.items()):
            if pos.qty:
                paid += self._charge(symbol, pos.qty, self.funded_to, upto_ms, funding_of,
                                     price_at)
        self.funded_to = upto_ms
        return paid

    def _charge(self, symbol: str, qty: Decimal, after_ms: int, upto_ms: int,
                funding_of: FundingOf, price_at: PriceAt) -> int:
        """Charge ``qty`` of ``symbol`` at its funding times in ``(after_ms, upto_ms]``."""
        paid = 0
        for t, rate in funding_of(symbol, after_ms, upto_ms):
            price = price_at(symbol, t)
            if price is None or not rate:
                continue  # no market at that moment: nothing to value the position at
            due = funding_due(qty, Decimal(str(price)), Decimal(str(rate)))
            self.wallet -= due
            self.funding_paid[symbol] = self.funding_paid.get(symbol, Decimal(0)) + due
            self._log_funding(t, due)
            paid += 1
        return paid

    def _log_funding(self, t_ms: int, due: Decimal) -> None:
        self.funding_log[t_ms] = self.funding_log.get(t_ms, Decimal(0)) + due
        while len(self.funding_log) > FUNDING_LOG_KEEP:
            oldest = min(self.funding_log)
            del self.funding_log[oldest]
            self.funding_log_from = max(self.funding_log_from or oldest, oldest)

    def fill(self, intent: OrderIntent, ts_ms: int) -> Fill:
        if intent.qty <= 0:
            raise ExchangeError(f"order qty must be positive, got {intent.qty}")
        if self._step_of is not None:
            step = self._step_of(intent.symbol)
            if intent.qty % step:
                raise ExchangeError(f"{intent.symbol}: qty {intent.qty} is not a multiple of "
                                    f"the lot size {step}")
        at = ts_ms
        if self._price_at is not None and intent.decided_ms is not None:
            at = min(intent.decided_ms, ts_ms)
            last = self._price_at(intent.symbol, at)
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
        impact = self.slippage + self.half_spread(intent.symbol)
        price = Decimal(str(last)) * (Decimal(1) + direction * impact)
        if self._tick_of is not None:
            tick = self._tick_of(intent.symbol)
            price = (price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick
        fee = intent.qty * price * self.taker_fee
        self.settle_funding(at)
        self.positions[intent.symbol] = self._apply(pos, signed, price)
        self.wallet -= fee
        if (self._funding_of is not None and self._funding_price_at is not None
                and self.funded_to is not None and at < self.funded_to
                and funding_times(at, self.funded_to, FUNDING_GRID_MS)):
            # funding since ``at`` was charged on the position before this fill
            self._charge(intent.symbol, signed, at, self.funded_to, self._funding_of,
                         self._funding_price_at)
        fill = Fill(order_id=f"paper-{next(self._ids)}", symbol=intent.symbol, side=intent.side,
                    qty=intent.qty, price=price, fee=fee, ts=ts_ms)
        if intent.order_link_id:
            self.by_link[intent.order_link_id] = fill
            self._order_json[intent.order_link_id] = self._order_text(intent.order_link_id, fill)
            while len(self.by_link) > MAX_REMEMBERED:
                forgotten, _ = self.by_link.popitem(last=False)
                self._order_json.pop(forgotten, None)
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

    def _head(self) -> dict:
        """The account but its remembered orders, as plain data (Decimals as strings)."""
        return {"wallet": str(self.wallet), "next_id": next(self._ids),
                "funded_to": self.funded_to,
                "funding_paid": {s: str(v) for s, v in self.funding_paid.items()},
                "funding_log": {str(t): str(v) for t, v in self.funding_log.items()},
                "funding_log_from": self.funding_log_from,
                "positions": {s: [str(p.qty), str(p.avg_price), str(p.realized_pnl)]
                              for s, p in self.positions.items()}}

    @staticmethod
    def _order_row(f: Fill) -> list:
        return [f.order_id, f.symbol, f.side.value, str(f.qty), str(f.price), str(f.fee), f.ts]

    @classmethod
    def _order_text(cls, link: str, f: Fill) -> str:
        return f"{json.dumps(link)}: {json.dumps(cls._order_row(f))}"

    def to_dict(self) -> dict:
        """The account as plain data (Decimals as strings), for a venue that must persist."""
        return {**self._head(),
                "orders": {link: self._order_row(f) for link, f in self.by_link.items()}}

    def to_json(self) -> str:
        """``json.dumps(self.to_dict())``, with each remembered order encoded once (when it
        is filled) instead of on every save: the sim saves its account after every fill, and
        re-encoding up to ``MAX_REMEMBERED`` orders each time made a busy run's fills cost
        more the more it had traded."""
        if self._order_json.keys() != self.by_link.keys():  # by_link changed other than by fill
            self._order_json = OrderedDict((link, self._order_text(link, f))
                                           for link, f in self.by_link.items())
        orders = ", ".join(self._order_json.values())
        return f'{json.dumps(self._head())[:-1]}, "orders": {{{orders}}}}}'

    def restore(self, data: dict) -> None:
        self.wallet = Decimal(data["wallet"])
        self._ids = itertools.count(int(data["next_id"]))
        funded = data.get("funded_to")  # absent in files from before funding: start now
        self.funded_to = int(funded) if funded is not None else None
        self.funding_paid = {s: Decimal(v) for s, v in data.get("funding_paid", {}).items()}
        self.funding_log = {int(t): Decimal(v) for t, v in data.get("funding_log", {}).items()}
        # a file from before the log: nothing is known about the charges before funded_to
        self.funding_log_from = data.get("funding_log_from", self.funded_to)
        self.positions = {s: Position(s, Decimal(q), Decimal(a), Decimal(r))
                          for s, (q, a, r) in data["positions"].items()}
        self.by_link = OrderedDict(
            (link, Fill(oid, sym, Side(side), Decimal(q), Decimal(p), Decimal(f), int(ts)))
            for link, (oid, sym, side, q, p, f, ts) in data.get("orders", {}).items())
        self._order_json = OrderedDict((link, self._order_text(link, f))
                                       for link, f in self.by_link.items())

    def balance(self) -> Balance:
        return Balance("USDT", self.wallet, self.equity(),
                       tuple(p for p in self.positions.values() if p.qty),
                       funding_log=tuple(sorted(self.funding_log.items())),
                       funding_known_after=self.funding_log_from)

"""Books (pure): one per model and mode period, plus the house that holds the free cash.

A model's shadow record and its prod record are two books, never one series: the shadow book
trades 1% on paper, the prod book trades its share of the account. The account is the sum of the
open prod books plus the house::

    account equity = house cash + Σ prod books' equity          (at the same marks)

Accounting is by cash flow, which is what keeps that identity exact: a book starts with its
capital as cash; a fill of signed quantity ``q`` at price ``p`` with fee ``f`` moves cash by
``-(q·p + f)``; equity at marks ``m`` is ``cash + Σ qty·m``. Prod books hold ``Decimal`` (every
product and sum of Decimals with few digits is exact), shadow books hold floats (paper
measurements; float64 is plenty for a 1% book and far cheaper). The average price and the
realised P&L of a fill are for display and for the trade feed; equity never depends on them.

A *trade* is an entry (flat → a position) or a flip (long ↔ short); every other fill adds to or
trims a position. Books count both, apart.

Funding is a cash flow too: at every funding time ``T`` after ``funded_to`` the positions a book
holds pay :func:`models.funding.funding_due` ``(qty, price at T, rate at T)`` — the venue's own
formula, so a prod book and the venue agree to the last digit. ``funded_to`` is saved with the
book's cash, so a restart neither skips nor repeats a funding time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Mapping, Union

from models.funding import funding_due

Num = Union[Decimal, float]
ZERO = Decimal(0)
HOUSE = "house"


def book_id_of(mode: str, model_id: str, since_s: float) -> str:
    """The book of ``model_id`` for the mode period that began at market time ``since_s``."""
    return f"{mode}:{model_id}:{int(round(since_s * 1000))}"


@dataclass
class Holding:
    qty: Num
    cost: Num  # Σ signed qty × price of the open position (avg price = cost / qty)
    realized: Num  # closed P&L before fees, for display

    @property
    def avg_price(self) -> Num:
        return self.cost / self.qty if self.qty else self.qty * 0


@dataclass(frozen=True)
class BookFill:
    """One fill as a book saw it."""

    book_id: str
    fill_id: str  # unique across every book and restart: "<book_id>#<n>"
    symbol: str
    qty: Num  # signed: buy > 0
    price: Num
    fee: Num
    ts: int
    pnl: float  # realised on the closing part, net of this fill's fee
    trade: bool  # an entry or a flip


@dataclass
class Book:
    book_id: str
    model_id: str  # "house" for the house
    mode: str  # "prod", "shadow" or "house"
    group: str
    opened_ms: int
    capital: Num
    cash: Num
    exact: bool = True  # Decimal (prod, house) or float (shadow)
    fees: Num = 0
    positions: dict[str, Holding] = field(default_factory=dict)
    trades: int = 0
    fills: int = 0
    next_fill: int = 1
    state: str = "open"  # open → closing (its positions are being closed) → closed
    closed_ms: int | None = None
    funding: Num = 0  # paid since the book opened (negative: received)
    funded_to: int | None = None  # funding is settled for every time <= this (ms)
    touched: set[str] = field(default_factory=set)  # positions changed since the last save

    def __post_init__(self) -> None:
        self.capital, self.cash, self.fees, self.funding = (
            self.num(v) for v in (self.capital, self.cash, self.fees, self.funding))
        if self.funded_to is None:
            self.funded_to = self.opened_ms

    def num(self, value: object) -> Num:
        """``value`` in this book's number type (Decimal from its decimal string)."""
        if self.exact:
            return value if isinstance(value, Decimal) else Decimal(str(value))
        return float(value)

    def qty(self, symbol: str) -> Num:
        h = self.positions.get(symbol)
        return h.qty if h is not None else (ZERO if self.exact else 0.0)

    def open_symbols(self) -> list[str]:
        return sorted(s for s, h in self.positions.items() if h.qty)

    def equity(self, marks: Mapping[str, Num]) -> Num:
        """Cash plus every open position at ``marks`` (a position without a mark is valued at
        its cost, which no mark has moved)."""
        eq = self.cash
        exact = self.exact
        for symbol, h in self.positions.items():
            if h.qty:
                mark = marks.get(symbol)
                if mark is None:
                    eq += h.cost
                elif exact is isinstance(mark, Decimal):  # already this book's number type
                    eq += h.qty * mark
                else:
                    eq += h.qty * self.num(mark)
        return eq

    def apply(self, symbol: str, qty: Num, price: Num, fee: Num, ts: int) -> BookFill:
        """Book a fill of signed ``qty`` at ``price`` paying ``fee``."""
        if self.exact:
            q, p, f, zero = self.num(qty), self.num(price), self.num(fee), ZERO
        else:  # a paper book: plain floats, no conversions per value
            q, p, f, zero = float(qty), float(price), float(fee), 0.0
        if not q:
            raise ValueError(f"{self.book_id}: a fill of zero {symbol}")
        h = self.positions.get(symbol)
        if h is None:
            h = self.positions[symbol] = Holding(zero, zero, zero)
        self.touched.add(symbol)
        before = h.qty
        realized = zero
        if before and (before > 0) != (q > 0):  # reduces (and maybe flips) the position
            closed = min(abs(q), abs(before))
            avg = h.cost / before
            realized = closed * (p - avg) * (1 if before > 0 else -1)
            h.cost -= avg * (closed if before > 0 else -closed)
            h.realized += realized
            rest = q + closed if q < 0 else q - closed  # what opens past flat
            if rest:
                h.cost += rest * p
        else:
            h.cost += q * p
        h.qty = before + q
        if not h.qty:
            h.cost = zero
        self.cash -= q * p + f
        self.fees += f
        trade = (not before and bool(h.qty)) or (bool(before) and bool(h.qty)
                                                  and (before > 0) != (h.qty > 0))
        self.trades += int(trade)
        self.fills += 1
        fill_id = f"{self.book_id}#{self.next_fill}"
        self.next_fill += 1
        return BookFill(self.book_id, fill_id, symbol, q, p, f, ts, float(realized - f), trade)


    def pay_funding(self, symbol: str, price: Num, rate: float, qty: Num | None = None) -> Num:
        """Charge the funding of the ``symbol`` position (held now, or ``qty``: what was held
        at the funding time) at one funding time where the price was ``price`` and the rate
        ``rate``; returns what was paid."""
        qty = self.qty(symbol) if qty is None else self.num(qty)
        if not qty or not rate:
            return self.num(0)
        if self.exact:
            due = funding_due(qty, Decimal(str(price)), Decimal(str(rate)))
        else:
            due = float(qty) * float(price) * float(rate)
        self.cash -= due
        self.funding += due
        return due


def account_equity(house: Book, prod_books: Iterable[Book], marks: Mapping[str, Num]) -> Num:
    """The account as the books see it: the house's cash plus every prod book's equity."""
    total = house.equity(marks)
    for b in prod_books:
        total += b.equity(marks)
    return total


def net_positions(books: Iterable[Book]) -> dict[str, Num]:
    """Σ of the books' positions per symbol: what the venue should hold."""
    out: dict[str, Num] = {}
    for b in books:
        for symbol, h in b.positions.items():
            if h.qty:
                out[symbol] = out.get(symbol, 0) + h.qty
    return {s: q for s, q in out.items() if q}

"""The ledger: every book the trading engine keeps, and the account they add up to.

* The **house** holds the account's free cash: capital that no prod book holds (groups without
  a prod model, books waiting for their funding) and, after an upgrade from a version without
  books, any position the venue held that no model stands behind (closed at the next bar).
* A **prod book** opens when a model's prod period starts (the lifecycle's ``mode_since``). It is
  funded from the house with its group's share of the account (:mod:`appliance.allocation`),
  once the group's previous prod book has closed (its positions are closed by reduce-only orders
  first: a book waits ``pending`` until then). When the model leaves prod the book is
  ``closing`` until flat, then ``closed`` and its cash goes back to the house.
* A **shadow book** is paper: ``shadow.size_fraction`` of what a prod book of its group would get,
  opened when the shadow period starts, closed (as it stands) when it ends.

Books persist (``appliance.ledger_store``) and are restored at start, so a restart changes no
model's record; the account identity ``venue = house + Σ prod books`` holds at every bar.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable, Mapping

from appliance.books import HOUSE, Book, Holding, Num, account_equity, net_positions
from appliance.domain import Balance
from appliance.model_pool import PooledModel

PENDING, OPEN, CLOSING, CLOSED = "pending", "open", "closing", "closed"


class Ledger:
    def __init__(self, shadow_fraction: float) -> None:
        self.shadow_fraction = shadow_fraction
        self.house: Book | None = None
        self.books: dict[str, Book] = {}  # pending, open or closing
        self.dirty: set[str] = set()  # books changed since they were last saved
        self.closed: list[Book] = []  # closed since the last save

    # -- start -----------------------------------------------------------------------------

    def restore(self, books: Iterable[Book], venue: Balance, now_ms: int) -> list[str]:
        """Books as saved; a house made from the venue's account on first start. Returns
        what it did, for the log."""
        notes = []
        for b in books:
            if b.mode == HOUSE:
                self.house = b
            else:
                self.books[b.book_id] = b
        if self.house is None:
            cash = venue.wallet - sum((p.qty * p.avg_price for p in venue.positions), Decimal(0))
            self.house = Book(HOUSE, HOUSE, HOUSE, "", now_ms, venue.equity, cash)
            for p in venue.positions:
                self.house.positions[p.symbol] = Holding(p.qty, p.qty * p.avg_price, Decimal(0))
                self.house.touched.add(p.symbol)
            self.dirty.add(HOUSE)
            notes.append(f"house opened with the venue's account: equity {venue.equity}, "
                         f"{len(venue.positions)} unattributed position(s) to close")
        return notes

    # -- views -----------------------------------------------------------------------------

    def prod_books(self) -> list[Book]:
        return [b for b in self.books.values() if b.mode == "prod"]

    def shadow_books(self) -> list[Book]:
        return [b for b in self.books.values() if b.mode == "shadow"]

    def account_books(self) -> list[Book]:
        """The books whose positions are the venue's: the prod books and the house."""
        assert self.house is not None
        return [self.house, *self.prod_books()]

    def equity(self, marks: Mapping[str, Num]) -> Decimal:
        assert self.house is not None
        return account_equity(self.house, self.prod_books(), marks)

    def account_equities(self, marks: Mapping[str, Num]) -> dict[str, Num]:
        """Each account book's equity at ``marks``, the house first: they add up to
        :meth:`equity` (for a caller that needs both)."""
        return {b.book_id: b.equity(marks) for b in self.account_books()}

    def positions(self) -> dict[str, Num]:
        """What the venue should hold, per symbol."""
        return net_positions(self.account_books())

    # -- opening, funding, closing ---------------------------------------------------------

    def sync(self, models: Iterable[PooledModel], now_ms: int) -> tuple[list[Book], list[Book]]:
        """Open a book for every model's current mode period, and start closing the books of
        models that left theirs. Returns (opened, closing)."""
        wanted = {m.book_id: m for m in models}
        opened, closing = [], []
        for book_id, m in wanted.items():
            if book_id in self.books:
                continue
            exact = m.mode == "prod"
            b = Book(book_id, m.model_id, m.mode, m.row["group"], now_ms, 0, 0, exact=exact,
                     state=PENDING)
            self.books[book_id] = b
            self.dirty.add(book_id)
            opened.append(b)
        for b in list(self.books.values()):
            if b.book_id not in wanted and b.state != CLOSING:
                b.state = CLOSING
                self.dirty.add(b.book_id)
                closing.append(b)
        return opened, closing

    def fund(self, weights: Mapping[str, float], marks: Mapping[str, Num]) -> list[Book]:
        """Give pending books their capital; returns the books funded."""
        assert self.house is not None
        pending = [b for b in self.books.values() if b.state == PENDING]
        if not pending:
            return []  # most bars: the account's equity is not needed
        funded = []
        account = self.equity(marks)
        for b in sorted(pending, key=lambda b: (b.opened_ms, b.book_id)):
            share = Decimal(repr(float(weights.get(b.group, 0.0))))
            if b.mode == "shadow":
                capital = b.num(float(account) * float(share) * self.shadow_fraction)
            else:
                if any(o.state == CLOSING and o.mode == "prod" and o.group == b.group
                       for o in self.books.values()):
                    continue  # the group's previous prod book is still closing
                capital = min((account * share).quantize(Decimal("0.01")), self.house.cash)
                if capital <= 0:
                    continue
                self.house.cash -= capital
                self.dirty.add(HOUSE)
            b.capital, b.cash, b.state = capital, capital, OPEN
            self.dirty.add(b.book_id)
            funded.append(b)
        return funded

    def close(self, b: Book, now_ms: int) -> None:
        """A book is done: a flat prod book's cash returns to the house; a shadow book stops
        as it stands (paper)."""
        assert self.house is not None
        if b.mode == "prod":
            if b.open_symbols():
                raise ValueError(f"{b.book_id} still holds {b.open_symbols()}")
            self.house.cash += b.cash
            self.dirty.add(HOUSE)
        b.state, b.closed_ms = CLOSED, now_ms
        self.dirty.add(b.book_id)
        del self.books[b.book_id]
        self.closed.append(b)

    def keep_dirty(self, books: list[Book]) -> None:
        """Books :meth:`take_dirty` gave that could not be saved (a full disk): they are saved
        with a later bar, as they will stand then."""
        closed = {b.book_id for b in self.closed}
        for b in books:
            self.dirty.add(b.book_id)
            if b.state == CLOSED and b.book_id not in closed:
                self.closed.append(b)

    def take_dirty(self) -> list[Book]:
        """The books to save with this bar (and forget that they changed)."""
        assert self.house is not None
        pool = {HOUSE: self.house, **self.books, **{b.book_id: b for b in self.closed}}
        out = [pool[i] for i in sorted(self.dirty) if i in pool]
        self.dirty.clear()
        self.closed = []
        return out

    def summary(self, marks: Mapping[str, Num], weights: Mapping[str, float]
                ) -> dict[str, Any]:
        """The allocation as ``status --json`` shows it."""
        assert self.house is not None
        return {"rule_weights": {g: round(w, 6) for g, w in sorted(weights.items())},
                "free_cash": float(self.house.cash),
                "account_equity": float(self.equity(marks)),
                "books": [{"book_id": b.book_id, "model_id": b.model_id, "group": b.group,
                           "state": b.state, "capital": float(b.capital),
                           "equity": float(b.equity(marks))} for b in self.prod_books()]}

"""Funding on the books: what every book's positions pay at each funding time.

The venue charges funding to the account (every 8 hours on Bybit's USDT perpetuals); the books
must charge the same amounts to the books that held the positions, or the account identity
``venue = house + Σ prod books`` breaks by the funding, and a shadow book's record would leave
out a cost its prod book would pay. So on each decided bar every open book pays each funding
time in ``(book.funded_to, bar close]`` on the positions it held then (noted by :meth:`hold`
before any of the bar's fills; the payment itself comes after the bar's orders have left, so
that no order waits for the venue's rates), at the price of that moment (the close of the bar
that closed then; when that bar has not arrived yet, the payment is owed on the quantity held
at the funding time and made when it does) and the venue's rate
(:meth:`Exchange.funding_rates`: the sim's series, Bybit's funding history, a replay's file).

Each symbol pays on its own schedule: every 8 hours for most, every 4, 2 or 1 hours for some on
Bybit (the instrument's ``fundingInterval``); a book walks the hours in ``(funded_to, bar
close]`` and at each one charges the symbols whose interval it ends.

Rates are fetched once per symbol and funding time (from a remote venue all of a bar's
together) and kept for the other books. When the venue
cannot say (an outage), the books are not charged yet and ``funded_to`` stays: the next bar tries
again, so a funding time is late, never lost and never paid twice. A venue that answers but has
no rate for a time yet (an exchange publishes its funding history a little after the moment)
is asked again on later bars, for ``FUNDING_GRACE_MS`` of market time; only then is the time
taken as one without funding for that symbol (it was not listed then), rather than paid as 0
at once while the venue charges the account.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Awaitable, Callable, Iterable

import trio

from appliance.books import Book
from models.funding import (FUNDING_GRACE_MS, FUNDING_GRID_MS, FUNDING_PERIOD_MS,
                            funding_times)

RatesOf = Callable[[str, int, int], Awaitable[list[tuple[int, float]]]]
PriceAt = Callable[[str, int], "Decimal | float | None"]
IntervalOf = Callable[[str], int]
FETCHES_AT_ONCE = 8  # rate requests in flight at once on a funding bar


def every_8h(symbol: str) -> int:
    return FUNDING_PERIOD_MS


class FundingClerk:
    def __init__(self, rates_of: RatesOf, keep: int = 4096, together: bool = True,
                 interval_of: IntervalOf = every_8h) -> None:
        self.rates_of = rates_of
        self.interval_of = interval_of  # a symbol's funding interval (ms)
        # a remote venue's rates are asked for together (round trips); a local one's (the sim,
        # a replay) in turn: there 50 tasks would cost ~1-2 ms a funding bar for nothing
        self.together = together
        self.keep = keep
        self.rates: dict[tuple[str, int], float] = {}  # (symbol, funding time) -> rate
        # payments whose price was not known yet: (book, symbol, qty then, time, rate)
        self.owed: list[tuple[Book, str, object, int, float]] = []
        # the last settle stopped a book at a time whose rate is not published yet: the venue
        # may have charged it already, so the books lag the venue's account meanwhile
        self.waiting = False
        # book id -> funding time -> {symbol: qty held then}, noted by :meth:`hold` before a
        # bar's fills and kept until that time is paid
        self.holdings: dict[str, dict[int, dict[str, object]]] = {}

    def hold(self, books: Iterable[Book], upto_ms: int) -> None:
        """Note what each book holds at every funding time up to ``upto_ms`` it has not paid
        yet, before any of the bar's fills: :meth:`settle` then charges those quantities,
        whenever it runs (after the bar's orders have left, so that no order waits for the
        venue's rates; or bars later, when a rate is published late). A book that is gone is
        forgotten."""
        books = list(books)
        for book in books:
            for t, symbols in self.due(book, upto_ms):
                at = self.holdings.setdefault(book.book_id, {})
                if t not in at:
                    at[t] = {s: book.qty(s) for s in symbols}
        ids = {b.book_id for b in books}
        for gone in [i for i in self.holdings if i not in ids]:
            del self.holdings[gone]

    def restore(self, books: Iterable[Book], upto_ms: int,
                fills: Iterable[tuple[str, str, str, int]]) -> None:
        """What :meth:`hold` would have noted, after a restart: what each book held at every
        funding time up to ``upto_ms`` it has not paid yet, taken as what it holds now less its
        fills at or after that time (``fills``: book id, symbol, signed quantity as a decimal
        string, time in ms; at least every fill since the earliest such time). A crash between
        a funding bar's fills and their record, or while a rate was still unpublished, lost
        the notes; the fills are in DuckDB (those the crash left unrecorded are adopted from
        the venue first), so the books pay what the venue charged."""
        since: dict[str, list[tuple[str, str, int]]] = {}
        for book_id, symbol, qty, ts in fills:
            since.setdefault(book_id, []).append((symbol, qty, ts))
        for book in books:
            if book.funded_to is None:
                continue
            times = funding_times(book.funded_to, upto_ms, FUNDING_GRID_MS)
            if not times:
                continue
            num = Decimal if book.exact else float
            mine = [(symbol, num(qty), ts) for symbol, qty, ts in since.get(book.book_id, [])]
            symbols = sorted(set(book.open_symbols()) | {symbol for symbol, _, _ in mine})
            at = self.holdings.setdefault(book.book_id, {})
            for t in times:
                if t not in at:
                    at[t] = {s: book.qty(s) - sum((q for sym, q, ts in mine
                                                   if sym == s and ts >= t), num(0))
                             for s in symbols if t % self.interval_of(s) == 0}

    def due(self, book: Book, upto_ms: int) -> list[tuple[int, list[str]]]:
        """The funding times in ``(book.funded_to, upto_ms]`` (every hour: any symbol's
        schedule lies on them) with the symbols the book holds that pay at each."""
        if book.funded_to is None:
            return []
        times = funding_times(book.funded_to, upto_ms, FUNDING_GRID_MS)
        if not times:  # most bars: no hour began since the book was last funded
            return []
        held = [(s, self.interval_of(s)) for s in book.open_symbols()]
        return [(t, [s for s, every in held if t % every == 0]) for t in times]

    def owing(self, book: Book, upto_ms: int
              ) -> list[tuple[int, list[str], dict[str, object] | None]]:
        """:meth:`due`, each time with the symbols that pay then and what the book held
        then where :meth:`hold` noted it (None: what it holds now counts)."""
        held = self.holdings.get(book.book_id, {})
        out = []
        for t, symbols in self.due(book, upto_ms):
            then = held.get(t)
            out.append((t, symbols if then is None else [s for s, q in then.items() if q],
                        then))
        return out

    async def rate(self, symbol: str, t_ms: int, upto_ms: int | None = None) -> float | None:
        """The rate settled at ``t_ms``; None while the venue has none for it yet and the
        bar closing at ``upto_ms`` is within ``FUNDING_GRACE_MS`` of it (ask again later), 0
        after that (the symbol paid no funding then)."""
        key = (symbol, t_ms)
        if key not in self.rates:
            got = dict(await self.rates_of(symbol, t_ms - 1, t_ms))
            late = upto_ms is not None and upto_ms - t_ms < FUNDING_GRACE_MS
            if t_ms not in got and late:
                return None
            if len(self.rates) >= self.keep:
                self.rates.clear()
            self.rates[key] = float(got.get(t_ms, 0.0))
        return self.rates[key]

    async def settle(self, books: Iterable[Book], upto_ms: int, price_at: PriceAt) -> int:
        """Charge every funding time up to ``upto_ms`` that a book has not paid yet, on the
        positions it held then (:meth:`hold`; where nothing was noted, as after a restart,
        those it holds now); returns the number of payments. A failed rate fetch propagates
        (the caller retries on the next bar): a book's ``funded_to`` moves past a funding time
        only once all of that time's rates are known, so none is ever paid twice.

        A position whose price at the funding time is not known yet (that symbol's bar has not
        arrived) is owed with the quantity held *then* and paid when the price comes: paying it
        later on whatever the book holds by then would not be what the venue charged."""
        paid = self._pay_owed(price_at)
        books = list(books)
        await self.fetch_rates(books, upto_ms)
        self.waiting = False
        for book in books:
            assert book.funded_to is not None
            held = self.holdings.get(book.book_id, {})
            for t, symbols, then in self.owing(book, upto_ms):
                rates = [await self.rate(symbol, t, upto_ms) for symbol in symbols]
                if None in rates:
                    self.waiting = True
                    break  # one is not published yet: this time and later ones wait a bar
                dues = [(symbol, then[symbol] if then is not None else book.qty(symbol), rate)
                        for symbol, rate in zip(symbols, rates) if rate]
                for symbol, qty, rate in dues:
                    price = price_at(symbol, t)
                    if price is None:
                        self.owed.append((book, symbol, qty, t, rate))
                    else:
                        book.pay_funding(symbol, price, rate, qty=qty)
                        paid += 1
                book.funded_to = t
                held.pop(t, None)
        return paid

    async def fetch_rates(self, books: list[Book], upto_ms: int) -> None:
        """Every rate the books' funding times up to ``upto_ms`` need and the clerk lacks,
        asked for together (at most ``FETCHES_AT_ONCE`` at a time): on a funding bar every held
        symbol needs one, and one round trip after another to a remote venue would hold the
        bar's orders for all of them. A failure is raised once the others are done or
        cancelled."""
        if not self.together:
            return
        wanted = sorted({(s, t) for b in books for t, symbols, _ in self.owing(b, upto_ms)
                         for s in symbols} - self.rates.keys())
        if len(wanted) < 2:
            return
        failed: list[Exception] = []
        limiter = trio.CapacityLimiter(FETCHES_AT_ONCE)

        async def one(symbol: str, t_ms: int) -> None:
            try:
                async with limiter:
                    await self.rate(symbol, t_ms, upto_ms)
            except Exception as exc:  # raised below, after the nursery, as itself
                failed.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for symbol, t_ms in wanted:
                nursery.start_soon(one, symbol, t_ms)
        if failed:
            raise failed[0]

    def _pay_owed(self, price_at: PriceAt) -> int:
        """Payments owed since their price was unknown, made now that it is."""
        paid, still = 0, []
        for book, symbol, qty, t, rate in self.owed:
            price = price_at(symbol, t)
            if price is None:
                still.append((book, symbol, qty, t, rate))
            else:
                book.pay_funding(symbol, price, rate, qty=qty)
                paid += 1
        self.owed = still
        return paid

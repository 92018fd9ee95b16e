"""The funding clerk: each book pays the venue's rate on what it held at each funding time, and
a funding bar's rates are asked for together, not one round trip after another."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio

from appliance.book_funding import FETCHES_AT_ONCE, FundingClerk
from appliance.books import Book
from appliance.exchange.base import ExchangeError
from appliance.exchange.simmarket import EPOCH_MS, SimMarket
from models.funding import FUNDING_PERIOD_MS

pytestmark = pytest.mark.trio

T = EPOCH_MS + 400 * 86_400_000  # a funding time (a multiple of 8 h from the epoch)
LATENCY_S = 0.05


class SlowVenue:
    """The sim market's funding history behind a round trip of ``LATENCY_S``."""

    def __init__(self, fail: str | None = None) -> None:
        self.market = SimMarket(7)
        self.fail = fail
        self.asked: list[tuple[str, int, int]] = []
        self.in_flight = self.most_in_flight = 0

    async def funding_rates(self, symbol: str, start_ms: int, end_ms: int
                            ) -> list[tuple[int, float]]:
        self.asked.append((symbol, start_ms, end_ms))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await trio.sleep(LATENCY_S)
            if symbol == self.fail:
                raise ExchangeError(f"funding history {symbol}: HTTP 503")
            return self.market.funding_rates(symbol, start_ms, end_ms)
        finally:
            self.in_flight -= 1


def holding_books(symbols: list[str]) -> list[Book]:
    """A prod book long 1 of every symbol and a shadow book short 2, funded up to the
    funding time before ``T``."""
    books = []
    for mode, exact, qty in (("prod", True, 1), ("shadow", False, -2)):
        b = Book(f"{mode}-1", "m-1", mode, "g", T - FUNDING_PERIOD_MS, 10_000, 10_000,
                 exact=exact)
        for s in symbols:
            b.apply(s, b.num(qty), b.num(100), b.num(0), T - FUNDING_PERIOD_MS)
        books.append(b)
    return books


async def test_a_funding_bars_rates_are_fetched_together_once_each_and_paid(autojump_clock):
    venue = SlowVenue()
    symbols = venue.market.symbols()[:20]
    books = holding_books(symbols)
    clerk = FundingClerk(venue.funding_rates)
    cash = [b.cash for b in books]
    started = trio.current_time()

    paid = await clerk.settle(books, T, lambda s, t: 100.0)

    took = trio.current_time() - started
    # one ask per symbol (both books share it), several in flight, never more than the cap
    assert sorted(a[0] for a in venue.asked) == sorted(symbols)
    assert 1 < venue.most_in_flight <= FETCHES_AT_ONCE
    # one after another would take 20 round trips
    assert took <= -(-len(symbols) // FETCHES_AT_ONCE) * LATENCY_S + 1e-9
    assert paid == 2 * len(symbols)
    rates = [venue.market.funding_rate(s, T) for s in symbols]
    prod, shadow = books
    assert prod.cash == cash[0] - sum(Decimal(100) * Decimal(str(r)) for r in rates)
    assert shadow.cash == pytest.approx(cash[1] + sum(2 * 100 * r for r in rates), rel=1e-12)
    assert all(b.funded_to == T for b in books)


async def test_a_rate_the_venue_cannot_give_charges_no_book_and_the_bar_retries(
        autojump_clock):
    venue = SlowVenue()
    symbols = venue.market.symbols()[:12]
    venue.fail = symbols[5]
    books = holding_books(symbols)
    clerk = FundingClerk(venue.funding_rates)
    cash = [b.cash for b in books]

    with pytest.raises(ExchangeError, match="HTTP 503"):
        await clerk.settle(books, T, lambda s, t: 100.0)
    assert [b.cash for b in books] == cash  # nothing paid, not even the symbols that came
    assert all(b.funded_to == T - FUNDING_PERIOD_MS for b in books)

    venue.fail = None  # the venue is back: the next bar pays the funding time once
    venue.asked.clear()
    assert await clerk.settle(books, T, lambda s, t: 100.0) == 2 * len(symbols)
    assert all(b.funded_to == T for b in books)
    # each missing rate asked once (those that came before the failure are kept)
    asked = [a[0] for a in venue.asked]
    assert symbols[5] in asked and len(asked) == len(set(asked)) <= len(symbols)


async def test_a_local_venues_rates_are_asked_in_turn(autojump_clock):
    """The sim and a replay answer from memory: asking them together would only add tasks."""
    venue = SlowVenue()
    symbols = venue.market.symbols()[:6]
    books = holding_books(symbols)
    clerk = FundingClerk(venue.funding_rates, together=False)
    assert await clerk.settle(books, T, lambda s, t: 100.0) == 2 * len(symbols)
    assert venue.most_in_flight == 1 and len(venue.asked) == len(symbols)

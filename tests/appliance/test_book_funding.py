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
from models.funding import FUNDING_GRACE_MS, FUNDING_PERIOD_MS

pytestmark = pytest.mark.trio

T = EPOCH_MS + 400 * 86_400_000  # a funding time (a multiple of 8 h from the epoch)
LATENCY_S = 0.05


class SlowVenue:
    """The sim market's funding history behind a round trip of ``LATENCY_S``."""

    def __init__(self, fail: str | None = None, market: SimMarket | None = None) -> None:
        self.market = market or SimMarket(7)
        self.fail = fail
        self.published_to: int | None = None  # rates after this are not out yet
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
            if self.published_to is not None:
                end_ms = min(end_ms, self.published_to)
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


async def test_a_rate_not_published_yet_is_waited_for_not_paid_as_zero(autojump_clock):
    """Found reading the live path: a funding time whose rate was not in the venue's history
    yet (Bybit publishes it a little after the moment) was kept as a rate of 0, so the books
    never paid what the venue charged. It is asked again on later bars; only after
    FUNDING_GRACE_MS is a missing rate taken as no funding (the symbol was not listed)."""
    venue = SlowVenue()
    symbols = venue.market.symbols()[:3]
    books = holding_books(symbols)
    clerk = FundingClerk(venue.funding_rates)
    cash = [b.cash for b in books]
    venue.published_to = T - 1  # the 5-minute bar after T: nothing out for T yet

    assert await clerk.settle(books, T + 300_000, lambda s, t: 100.0) == 0
    assert [b.cash for b in books] == cash
    assert all(b.funded_to == T - 60 * 60_000 for b in books)  # the hour before T: T waits

    venue.published_to = None  # out now: the next bar pays it, once
    assert await clerk.settle(books, T + 600_000, lambda s, t: 100.0) == 2 * len(symbols)
    assert await clerk.settle(books, T + 900_000, lambda s, t: 100.0) == 0
    rates = [venue.market.funding_rate(s, T) for s in symbols]
    assert books[0].cash == cash[0] - sum(Decimal(100) * Decimal(str(r)) for r in rates)

    # a time the venue never publishes a rate for: waited for, then none after the grace
    later, clerk = holding_books(symbols), FundingClerk(venue.funding_rates)
    venue.published_to = T - 1
    assert await clerk.settle(later, T + FUNDING_GRACE_MS - 300_000, lambda s, t: 1.0) == 0
    assert all(b.funded_to < T for b in later)
    assert await clerk.settle(later, T + FUNDING_GRACE_MS, lambda s, t: 1.0) == 0
    assert all(b.funded_to == T for b in later)


async def test_after_a_restart_the_books_pay_on_what_their_fills_say_they_held_then(
        autojump_clock):
    """What ``hold`` notes lives in memory. With T's rate not out yet the books keep trading
    (the bar after T closes the first symbol, doubles the second, opens a third); the process
    dies. The next one rebuilds what each book held at T from what it holds now less its
    fills since T, and pays the venue's charge on that, not on the positions after the fills."""
    venue = SlowVenue()
    a, b, c = venue.market.symbols()[:3]
    books = holding_books([a, b])
    clerk = FundingClerk(venue.funding_rates)
    venue.published_to = T - 1
    clerk.hold(books, T + 300_000)  # the bar at T: noted before its fills
    assert await clerk.settle(books, T + 300_000, lambda s, t: 100.0) == 0
    fills = []
    for book in books:
        one = book.qty(a)
        for symbol, qty in ((a, -one), (b, one), (c, one)):  # after T, before T's rate
            book.apply(symbol, qty, book.num(101), book.num(0), T + 300_000)
            fills.append((book.book_id, symbol, str(qty), T + 300_000))
    fills.append((books[0].book_id, a, "5", T - 60_000))  # before T: not taken off
    cash = [book.cash for book in books]

    restarted = FundingClerk(venue.funding_rates)  # the notes died with the process
    restarted.restore(books, T + 600_000, fills)
    venue.published_to = None
    assert await restarted.settle(books, T + 600_000, lambda s, t: 100.0) == 4
    rate_a, rate_b = (venue.market.funding_rate(s, T) for s in (a, b))
    prod, shadow = books
    assert prod.cash == cash[0] - Decimal(100) * (Decimal(str(rate_a)) + Decimal(str(rate_b)))
    assert shadow.cash == pytest.approx(cash[1] + 200.0 * (rate_a + rate_b), rel=1e-12)
    assert all(book.funded_to == T for book in books)

    # without the restore the same books pay on the positions after the fills: a 0, b 2, c 1
    unrestored = holding_books([a, b])
    for book in unrestored:
        one = book.qty(a)
        for symbol, qty in ((a, -one), (b, one), (c, one)):
            book.apply(symbol, qty, book.num(101), book.num(0), T + 300_000)
    before = unrestored[0].cash
    await FundingClerk(venue.funding_rates).settle(unrestored, T + 600_000, lambda s, t: 100.0)
    rate_c = Decimal(str(venue.market.funding_rate(c, T)))
    assert before - unrestored[0].cash == Decimal(100) * (2 * Decimal(str(rate_b)) + rate_c)
    assert before - unrestored[0].cash != cash[0] - prod.cash


async def test_each_symbol_pays_on_its_own_funding_interval(autojump_clock):
    """4 hours after T, only the symbol funded every 4 hours pays."""
    every = {"ETHUSDT": 4 * 3_600_000}
    venue = SlowVenue(market=SimMarket(7, funding_intervals=every))
    symbols = ["BTCUSDT", "ETHUSDT"]
    books = holding_books(symbols)
    clerk = FundingClerk(venue.funding_rates,
                         interval_of=lambda s: every.get(s, FUNDING_PERIOD_MS))
    # from T - 8 h: ETH at T - 4 h and T, BTC at T; each of the two books
    assert await clerk.settle(books, T, lambda s, t: 100.0) == 6
    before = books[0].cash
    assert await clerk.settle(books, T + 4 * 3_600_000, lambda s, t: 100.0) == 2  # ETH
    eth = venue.market.funding_rate("ETHUSDT", T + 4 * 3_600_000)
    assert eth != 0 and books[0].cash == before - Decimal(100) * Decimal(str(eth))
    assert all(b.funded_to == T + 4 * 3_600_000 for b in books)

"""The bar → orders path's cheaper arithmetic against the rules it stands for: the risk check
with a batch's running gross exposure against the sum over the book, float64 sizing against
the Decimal rule, a float (paper) book against a Decimal one, and the bar book's windows
gathered at once against one symbol at a time."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.bar_book import BarBook
from appliance.books import Book
from appliance.domain import Side
from appliance.risk import AccountView, RiskLimits, check_order, gross_exposure, moved_gross
from appliance.sizing import lots_change, order_for, round_qty, target_lots, target_qty
from models.features import FS2

SYMBOLS = [f"S{i}USDT" for i in range(8)]
lots = st.integers(min_value=-2_000, max_value=2_000)
prices = st.integers(min_value=1, max_value=9_000_000).map(lambda c: Decimal(c) / 100)
step = Decimal("0.001")
orders = st.lists(st.tuples(st.sampled_from(SYMBOLS), st.sampled_from([Side.BUY, Side.SELL]),
                            st.integers(min_value=1, max_value=3_000), st.booleans()),
                  min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(book=st.dictionaries(st.sampled_from(SYMBOLS), lots, max_size=len(SYMBOLS)),
       marks=st.fixed_dictionaries({s: prices for s in SYMBOLS}), orders=orders,
       equity=st.integers(min_value=-1_000, max_value=200_000).map(Decimal),
       caps=st.tuples(st.integers(1, 60_000), st.integers(1, 300_000), st.integers(1, 5)))
def test_running_gross_gives_the_verdicts_of_the_sum_over_the_book(book, marks, orders, equity,
                                                                   caps):
    """A batch checked with the running gross exposure (summed once, moved by each order let
    through) refuses and lets through exactly the orders the O(n) sum per order would."""
    limits = RiskLimits(max_symbol_notional=Decimal(caps[0]), max_gross_exposure=Decimal(caps[1]),
                        max_leverage=Decimal(caps[2]), max_orders_per_minute=1_000)
    positions = {s: q * step for s, q in book.items()}
    running = dict(positions)
    gross = gross_exposure(running, marks)
    assert gross == sum((abs(q) * marks[s] for s, q in positions.items()), Decimal(0))
    for symbol, side, qty_lots, reduce_only in orders:
        qty = qty_lots * step
        summed = check_order(symbol, side, qty, reduce_only, marks[symbol],
                             AccountView(equity, dict(running), marks, 0, Decimal(0), False),
                             limits)
        fast = check_order(symbol, side, qty, reduce_only, marks[symbol],
                           AccountView(equity, running, marks, 0, Decimal(0), False,
                                       gross=gross), limits)
        assert fast == summed
        if fast is None:
            before = running.get(symbol, Decimal(0))
            after = before + (qty if side is Side.BUY else -qty)
            running[symbol] = after
            gross = moved_gross(gross, before, after, marks[symbol])
    assert gross == gross_exposure(running, marks)  # the running total never drifted


def test_a_position_without_a_price_leaves_the_sum_to_the_check():
    positions = {"BTC": Decimal(1), "ETH": Decimal(2)}
    assert gross_exposure(positions, {"BTC": Decimal(100)}) is None
    assert moved_gross(None, Decimal(0), Decimal(1), Decimal(5)) is None


@settings(max_examples=500, deadline=None)
@given(fraction=st.floats(min_value=-0.25, max_value=0.25, allow_nan=False),
       equity=st.integers(min_value=1_000, max_value=10_000_000).map(lambda c: Decimal(c) / 100),
       price=prices, step_exp=st.integers(min_value=-4, max_value=1),
       held=st.integers(min_value=-5_000, max_value=5_000))
def test_float_sizing_orders_what_the_decimal_rule_orders(fraction, equity, price, step_exp,
                                                          held):
    """Whole lots sized in float64 are the Decimal rule's, except where the exact quotient lies
    within float64's rounding of a whole lot (there: one lot apart at most); the order sent is
    then built in Decimal, an exact multiple of the lot."""
    lot = Decimal(10) ** step_exp
    current = held * lot
    exact = round_qty(target_qty(fraction, equity, price), lot)
    fast = target_lots(np.array([fraction]), float(equity), np.array([float(price)]),
                       np.array([float(lot)]))
    quotient = Decimal(repr(fraction)) * equity / price / lot
    near_boundary = abs(quotient - quotient.to_integral_value()) < Decimal("1e-9") * max(
        1, abs(quotient))
    if not near_boundary:
        assert Decimal(int(fast[0])) * lot == exact
    else:
        assert abs(Decimal(int(fast[0])) * lot - exact) <= lot
    changes = bool(lots_change(fast, np.array([float(current)]), np.array([float(lot)]))[0])
    order = order_for(current, Decimal(int(fast[0])) * lot, step=lot, min_qty=lot)
    assert changes == (order is not None)
    if order is not None:
        assert order[1] % lot == 0


def test_no_price_or_no_lot_sizes_nothing():
    out = target_lots(np.array([0.1, 0.1, 0.1]), 1000.0, np.array([np.nan, 0.0, 10.0]),
                      np.array([0.001, 0.001, np.nan]))
    assert np.isnan(out).all()
    assert not lots_change(out, np.zeros(3), np.full(3, 0.001)).any()


# A shadow book is paper in float64; the same fills in a Decimal book are the reference. After
# hundreds of fills of a realistic paper book its float cash, positions and equity stay within
# this much (relative to its capital) of the Decimal book's.
FLOAT_BOOK_TOLERANCE = 1e-9


@settings(max_examples=100, deadline=None)
@given(fills=st.lists(st.tuples(st.sampled_from(SYMBOLS[:4]),
                                st.integers(min_value=-40_000, max_value=40_000).filter(bool),
                                st.integers(min_value=10, max_value=9_000_000)),
                      min_size=1, max_size=300),
       capital=st.integers(min_value=100, max_value=100_000))
def test_a_float_paper_book_stays_within_its_tolerance_of_the_decimal_book(fills, capital):
    exact = Book("prod:m:0", "m", "prod", "g", 0, Decimal(capital), Decimal(capital))
    paper = Book("shadow:m:0", "m", "shadow", "g", 0, float(capital), float(capital),
                 exact=False)
    marks: dict[str, Decimal] = {}
    for i, (symbol, q, cents) in enumerate(fills):
        qty, price = Decimal(q) * step, Decimal(cents) / 100
        fee = (abs(qty) * price * Decimal("0.00055")).quantize(Decimal("1e-8"))
        exact.apply(symbol, qty, price, fee, i)
        paper.apply(symbol, float(qty), float(price), float(fee), i)
        marks[symbol] = price
    bound = FLOAT_BOOK_TOLERANCE * capital
    assert abs(paper.cash - float(exact.cash)) <= bound
    assert abs(paper.equity({s: float(p) for s, p in marks.items()})
               - float(exact.equity(marks))) <= bound
    for symbol in marks:
        assert abs(paper.qty(symbol) - float(exact.qty(symbol))) <= 1e-9
    assert (paper.trades, paper.fills) == (exact.trades, exact.fills)


def _bars(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    t = np.arange(n) * 300_000.0
    return np.column_stack([t, close, close * 1.001, close * 0.999, close,
                            rng.uniform(1, 5, n), rng.uniform(100, 500, n)])


def test_the_windows_of_all_symbols_are_each_symbols_window():
    """Gathered at once from the ring (float32), the windows are :meth:`BarBook.window`'s,
    including symbols with fewer rows than the lookback (the oldest row repeated) and a
    symbol whose gap is filled bar by bar."""
    book = BarBook("5m", rows_kept=16)
    warm = FS2.warmup
    lengths = {"A": warm + 60, "B": warm + 3, "C": warm + 1, "D": warm + 40}
    series = {s: _bars(n + 30, i) for i, (s, n) in enumerate(lengths.items())}
    for s, n in lengths.items():
        book.extend(s, series[s][:n])
    book.extend("D", series["D"][lengths["D"]:lengths["D"] + 2])  # a gap: bar by bar
    lengths["D"] += 2
    columns = np.array([0, 2, 5])
    for t in range(12):
        book.push_many({s: series[s][lengths[s] + t] for s in lengths})
        symbols = [s for s in lengths if book.warm(s)]
        assert symbols == list(lengths)
        for lookback in (1, 5, 16, 20):
            for cols in (None, columns):
                fast = book.windows(symbols, lookback, cols)
                one = np.stack([book.window(s, lookback, cols) for s in symbols])
                assert fast.dtype == one.dtype == np.float32
                assert np.array_equal(fast, one, equal_nan=True)
        assert np.array_equal(book.vols(symbols), [book.vol(s) for s in symbols],
                              equal_nan=True)

"""The paper desk: shadow books filled on paper, next to the shadow service that judges them.

A shadow model's target (the same sizing as prod: :mod:`appliance.sizing`) is traded on its own
float book at the bar's close, against the order's side by the slippage and the symbol's half
spread, paying the taker fee (:class:`models.costs.CostModel`), and not rounded to the lot: the
book is ``shadow.size_fraction`` (1%) of a prod book, where a lot would be most of a position.
A rebalance smaller than that fraction of a lot is skipped, because the prod book could not
have traded it either. This is the arithmetic :func:`models.paper_replay.replay` runs over a
whole validation block; a test holds the two equal.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Callable

import numpy as np

from appliance.books import Book, BookFill
from models.costs import CostModel


class PaperDesk:
    def __init__(self, costs: CostModel, size_fraction: float,
                 lot_of: Callable[[str], Decimal | None]) -> None:
        self.costs = costs
        self.size_fraction = size_fraction
        self.lot_of = lot_of

    def rebalance(self, book: Book, symbol: str, fraction: float, price: float,
                  book_equity: float, ts: int) -> BookFill | None:
        """Move ``book``'s position in ``symbol`` to ``fraction`` of ``book_equity``."""
        if not (price > 0 and math.isfinite(fraction)):
            return None
        diff = fraction * book_equity / price - float(book.qty(symbol))
        lot = self.lot_of(symbol)
        if diff == 0 or (lot is not None and abs(diff) < float(lot) * self.size_fraction):
            return None
        fill_price = self.costs.fill_price(symbol, price, diff)
        return book.apply(symbol, diff, fill_price,
                          abs(diff) * fill_price * self.costs.fee(symbol), ts)

    def rebalance_many(self, book: Book, symbols: list[str], fractions: np.ndarray,
                       prices: np.ndarray, book_equity: float, lots: np.ndarray, ts: int
                       ) -> list[BookFill]:
        """:meth:`rebalance` of every symbol of a bar at once (``lots``: each symbol's lot as
        a float, NaN where it has none): the same float64 arithmetic, vectorised, and a fill
        only where the position moves."""
        held = np.array([book.qty(s) for s in symbols], dtype=np.float64)
        f = np.asarray(fractions, dtype=np.float64)
        p = np.asarray(prices, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            diff = f * book_equity / p - held
            small = np.abs(diff) < lots * self.size_fraction
        move = (p > 0) & np.isfinite(f) & (diff != 0) & ~small
        fills = []
        for i in np.flatnonzero(move).tolist():
            symbol, d, price = symbols[i], float(diff[i]), float(p[i])
            fill_price = self.costs.fill_price(symbol, price, d)
            fills.append(book.apply(symbol, d, fill_price,
                                    abs(d) * fill_price * self.costs.fee(symbol), ts))
        return fills

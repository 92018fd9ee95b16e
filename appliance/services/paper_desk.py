"""The paper desk: shadow books filled on paper, next to the shadow service that judges them.

A shadow model's target (the same sizing as prod: :mod:`appliance.sizing`) is traded on its own
float book at the bar's close, with the taker fee and slippage against the order's side, and
not rounded to the lot: the book is ``shadow.size_fraction`` (1%) of a prod book, where a lot
would be most of a position. A rebalance smaller than that fraction of a lot is skipped, because
the prod book could not have traded it either.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Callable

from appliance.books import Book, BookFill


class PaperDesk:
    def __init__(self, taker_fee: float, slippage_bps: float, size_fraction: float,
                 lot_of: Callable[[str], Decimal | None]) -> None:
        self.taker_fee = taker_fee
        self.slippage = slippage_bps / 10_000
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
        fill_price = price * (1 + math.copysign(self.slippage, diff))
        return book.apply(symbol, diff, fill_price, abs(diff) * fill_price * self.taker_fee, ts)

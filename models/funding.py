"""Funding of perpetual contracts (pure): when it is due and how much.

A perpetual's holders pay each other funding at fixed times, every 8 hours at 00:00, 08:00 and
16:00 UTC on most of Bybit's USDT perpetuals (a symbol's instrument can set 4, 2 or 1 hours):
at a positive rate longs pay shorts, at a negative rate shorts pay longs. The payment is ``position × price × rate`` with the signed position and the
price at the funding time; it is not a trade and moves neither the position nor its average
price, only the wallet.

:func:`funding_due` is the one formula: the paper venue (:class:`appliance.exchange.paper
.PaperBroker`) charges it and the books charge it, in ``Decimal``, so the venue's wallet and the
books agree to the last digit. :func:`funding_per_bar` lines a rate series up with bar closes for
the vectorised replay (:mod:`models.paper_replay`), which charges ``qty × close × rate`` at the
bar whose close is the funding time, on the positions held into that bar.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Iterable, Sequence

import numpy as np

FUNDING_PERIOD_MS = 8 * 3_600_000  # Bybit's USDT perpetuals: 00:00, 08:00, 16:00 UTC
#: the funding intervals Bybit sets per symbol (its instrument's ``fundingInterval``, in
#: minutes): most pay every 8 hours, some every 4, 2 or 1, always on the hour from 00:00 UTC
FUNDING_INTERVALS_MS = tuple(h * 3_600_000 for h in (1, 2, 4, 8))
FUNDING_GRID_MS = FUNDING_INTERVALS_MS[0]  # every symbol's funding times lie on the hour
#: an exchange publishes a funding time's rate a little after the moment: until this much later
#: a missing rate is "not yet" (asked again), after it "none" (the symbol paid nothing then)
FUNDING_GRACE_MS = 30 * 60_000


def funding_times(start_ms: int, end_ms: int, period_ms: int = FUNDING_PERIOD_MS) -> list[int]:
    """Funding times ``T`` with ``start_ms < T <= end_ms`` (ms, UTC), oldest first."""
    first = start_ms - start_ms % period_ms + period_ms
    return list(range(first, end_ms + 1, period_ms)) if end_ms >= first else []


def funding_due(qty: Decimal, price: Decimal, rate: Decimal) -> Decimal:
    """What a position of ``qty`` (signed: long > 0) pays at a funding time where the price is
    ``price`` and the rate ``rate``; negative means it receives. Longs pay a positive rate,
    shorts receive it."""
    return qty * price * rate


def funding_per_bar(close_ms: np.ndarray,
                    events: np.ndarray | Sequence[tuple[int, float]] | Iterable[tuple[int, float]]
                    ) -> np.ndarray:
    """The funding rate due at each bar, from ``events`` of (time ms, rate).

    Bar ``t`` covers the times in ``(close[t-1], close[t]]``; an event is due at the first bar
    whose close is at or after it (exactly the bar whose close is the funding time when there is
    one; the next bar when that one is missing, since nothing traded in between). Events in the
    same bar add up; events before the first close (other than one exactly at it) and after the
    last close are dropped: no position is held across them in the series.
    """
    close = np.asarray(close_ms, dtype=np.int64)
    out = np.zeros(len(close), dtype=np.float64)
    ev = np.asarray(list(events) if not isinstance(events, np.ndarray) else events,
                    dtype=np.float64).reshape(-1, 2)
    if not len(close) or not len(ev):
        return out
    times = ev[:, 0].astype(np.int64)
    idx = np.searchsorted(close, times, side="left")
    keep = (idx < len(close)) & ((idx > 0) | (times == close[0]))
    np.add.at(out, idx[keep], ev[keep, 1])
    return out

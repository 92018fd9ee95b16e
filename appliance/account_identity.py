"""The account identity: the books' total is the venue's own account, to the last digit.

``venue = house + Σ prod books`` is what makes every model's record trustworthy (a book that
missed a fee or a funding payment would flatter its model). The trading engine checks it at
every bar it can (:meth:`TradingEngine.check_identity`) and stores both sides (the ``equity``
table's ``exact`` and ``venue_exact``) so anyone can check it again from DuckDB.
"""

from __future__ import annotations

from decimal import Decimal

from appliance.domain import Balance
from models.funding import FUNDING_GRID_MS, funding_times

#: books and venue agree to far below a cent; Decimal arithmetic on both sides is exact, so
#: anything above this is a real difference, not rounding
IDENTITY_TOLERANCE = Decimal("0.000001")


def venue_at(balance: Balance, marks: dict[str, Decimal]) -> Decimal:
    """The venue's own account (its wallet and positions, by its own accounting) valued at
    the books' marks: the independent side of the account identity."""
    equity = balance.wallet
    for p in balance.positions:
        equity += p.qty * (marks.get(p.symbol, p.avg_price) - p.avg_price)
    return equity


def venue_as_of(balance: Balance, marks: dict[str, Decimal], bar_ms: int,
                now_ms: int) -> Decimal | None:
    """The venue's account as the books must see it at the bar closing at ``bar_ms``.

    The venue settles funding up to now; the books pay a funding time on its own bar. When
    the engine lags (a busy machine on the virtual clock) the venue may have charged funding
    times after the bar already: those charges are added back from its per-time log. None
    where that cannot be known: the venue keeps no such log (live Bybit) or not back to the
    bar, and a funding time fell in ``(bar_ms, now_ms]``."""
    equity = venue_at(balance, marks)
    log, known_after = balance.funding_log, balance.funding_known_after
    if log is not None and known_after is not None and bar_ms >= known_after:
        return equity + sum((due for t, due in log if t > bar_ms), Decimal(0))
    return None if funding_times(bar_ms, now_ms, FUNDING_GRID_MS) else equity

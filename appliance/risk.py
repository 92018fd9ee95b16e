"""Pure risk rules: no clock, no I/O; services pass in what they measured.

Here: the rate-limit rule (discovery throttling), the pre-trade checks every order passes before
it reaches a broker, the drawdown freeze of auto-deploys, and historical VaR.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping, Sequence

from appliance.domain import Side, TradingState


def sustained_above(samples: Sequence[tuple[float, float]], now: float, threshold: float,
                    window_s: float) -> bool:
    """True when every sample of the last ``window_s`` seconds is above ``threshold`` and the
    samples cover the whole window (one high reading is not "sustained").

    ``samples`` are (time, value) pairs, oldest first.
    """
    start = now - window_s
    at_or_before = [v for t, v in samples if t <= start]
    if not at_or_before:
        return False  # the readings do not reach back a whole window yet
    inside = [v for t, v in samples if start < t <= now]
    return at_or_before[-1] > threshold and all(v > threshold for v in inside)


@dataclass(frozen=True)
class RiskLimits:
    """Absolute pre-trade limits, in USDT (quote) where they are money.

    The defaults suit a 100k USDT paper account; relating a limit to the starting equity (say,
    25% per symbol) is the caller's business, so that this module compares numbers and nothing
    else.
    """

    max_symbol_notional: Decimal = Decimal(25_000)  # |position| x price of one symbol
    max_gross_exposure: Decimal = Decimal(100_000)  # sum of |position| x price over all symbols
    max_leverage: Decimal = Decimal(3)  # gross exposure / equity
    max_orders_per_minute: int = 60  # a runaway loop stops here, before the exchange bans us
    max_daily_loss: Decimal = Decimal(5_000)  # at or past -this P&L today, only reducing orders


@dataclass(slots=True)
class AccountView:
    """What the pre-trade check needs to know of the account, as the caller measured it. A
    batch of orders owns its view and moves it with each order it lets through (positions,
    the order count, the running gross), so that the next order is checked after them."""

    equity: Decimal
    positions: Mapping[str, Decimal]  # signed base quantity: long > 0, short < 0
    prices: Mapping[str, Decimal]  # latest price of every symbol with an open position
    orders_last_minute: int  # orders already sent in the last 60 s, every kind counted
    daily_pnl: Decimal
    maintenance_mode: bool
    disk_full: bool = False  # writes are refused for want of space: nothing new can be kept
    # the running total Σ |position| × price over every open position (:func:`gross_exposure`),
    # kept by a caller that checks many orders against one account; None: summed per order
    gross: Decimal | None = None


def gross_exposure(positions: Mapping[str, Decimal], prices: Mapping[str, Decimal]
                   ) -> Decimal | None:
    """Σ |position| × price over every open position, or None when one has no price (then
    :func:`check_order` sums per order, and says which price is missing when it needs it).

    A batch of orders computes it once and hands :func:`check_order` the running total, moved
    by each order it lets through (:func:`moved_gross`): the exposure check is then O(1) per
    order instead of a sum over the book, and its verdicts are the same (Decimal sums of these
    products are exact)."""
    total = Decimal(0)
    for symbol, q in positions.items():
        if q:
            price = prices.get(symbol)
            if price is None:
                return None
            total += abs(q) * price
    return total


def moved_gross(gross: Decimal | None, before: Decimal, after: Decimal,
                price: Decimal | None) -> Decimal | None:
    """The running gross exposure after a position moved from ``before`` to ``after`` at
    ``price`` (None stays None, and so does a move without a price)."""
    if gross is None or price is None:
        return None
    return gross + (abs(after) - abs(before)) * price


def trading_state(account: AccountView, limits: RiskLimits) -> tuple[TradingState, str | None]:
    """ACTIVE, or REDUCING with the reason: only orders that shrink a position toward flat may
    go. The kill switch (``maintenance_mode``), a full disk (``disk_full``: a new position could
    not be recorded) and the daily loss limit (``daily_loss_limit``) each make it REDUCING, in
    that order of precedence."""
    if account.maintenance_mode:
        return TradingState.REDUCING, "maintenance_mode"
    if account.disk_full:
        return TradingState.REDUCING, "disk_full"
    if account.daily_pnl <= -limits.max_daily_loss:
        return TradingState.REDUCING, "daily_loss_limit"
    return TradingState.ACTIVE, None


def _shrinks(before: Decimal, after: Decimal) -> bool:
    """True when ``after`` lies between flat and ``before``: a pure reduction, no flip."""
    return before != 0 and (after == 0 or (after > 0) == (before > 0)) and abs(after) < abs(before)


def check_order(symbol: str, side: Side, qty: Decimal, reduce_only: bool, price: Decimal,
                account: AccountView, limits: RiskLimits) -> str | None:
    """None when the order may go to the broker, else the reason it is refused.

    Reasons: "maintenance_mode", "disk_full", "daily_loss_limit", "order_rate_cap",
    "symbol_notional_cap", "gross_exposure_cap", "leverage_cap" (checked in that order; the
    first that fails is given).

    * In the REDUCING state (:func:`trading_state`: maintenance mode, a full disk, the daily
      loss limit) everything except reduce-only orders is refused, so that the kill switch can
      still flatten the book. The flag alone is not trusted: the order must really shrink the
      position toward flat.
    * The order rate counts every order, reducing ones included: it guards against a runaway
      loop, and the exchange's own rate limit would refuse the excess anyway.
    * The exposure caps are checked on the book as it would be AFTER the order. An order that
      shrinks the symbol's position lowers every exposure figure, so it is always allowed, even
      when the book is already over a cap (after a price move): reducing risk is never refused.
      Such an order needs no prices either, so a flatten works without market data; an order
      that adds exposure without the prices to measure it raises ValueError (a caller's bug).
    * With ``account.gross`` (the running total of a batch) the other positions' exposure is
      that total less this symbol's part: O(1) per order, the same verdict as the sum.
    """
    if qty <= 0:
        raise ValueError(f"order qty must be positive, got {qty}")
    before = account.positions.get(symbol, Decimal(0))
    after = before + (qty if side is Side.BUY else -qty)
    return check_move(symbol, before, after, reduce_only, price, account, limits)


def check_move(symbol: str, before: Decimal, after: Decimal, reduce_only: bool, price: Decimal,
               account: AccountView, limits: RiskLimits) -> str | None:
    """:func:`check_order` of an order that moves the symbol's position in ``account`` from
    ``before`` to ``after`` (a caller that holds both already: the order gateway)."""
    reducing = reduce_only and _shrinks(before, after)
    state, why = trading_state(account, limits)
    if state is TradingState.REDUCING and not reducing:
        return why
    if account.orders_last_minute >= limits.max_orders_per_minute:
        return "order_rate_cap"
    if abs(after) < abs(before):
        return None
    if price <= 0:
        raise ValueError(f"{symbol}: price must be positive, got {price}")
    notional = abs(after) * price
    if notional > limits.max_symbol_notional:
        return "symbol_notional_cap"
    if account.gross is not None and (not before or symbol in account.prices):
        # the running total less this symbol's part of it: every other position, at its price
        gross = notional + account.gross - (abs(before) * account.prices[symbol] if before
                                            else 0)
    else:
        gross = notional
        for other, q in account.positions.items():
            if other == symbol or q == 0:
                continue
            if other not in account.prices:
                raise ValueError(f"no price for {other}: the gross exposure cannot be measured")
            gross += abs(q) * account.prices[other]
    if gross > limits.max_gross_exposure:
        return "gross_exposure_cap"
    if account.equity <= 0 or gross > limits.max_leverage * account.equity:
        return "leverage_cap"
    return None


def _peaks_and_values(equity: Sequence[float]) -> list[tuple[float, float]]:
    pairs, peak = [], -math.inf
    for value in equity:
        peak = max(peak, float(value))
        if not peak > 0.0:
            raise ValueError(f"equity must be positive to measure a drawdown, got {peak}")
        pairs.append((peak, float(value)))
    return pairs


def drawdown(equity: Sequence[float]) -> float:
    """Largest peak-to-trough fall within ``equity``, as a fraction of the peak (0.08 = 8%)."""
    return max(((p - v) / p for p, v in _peaks_and_values(equity)), default=0.0)


def freeze_decision(equity_window: Sequence[float], currently_frozen: bool, *,
                    freeze_at: float = 0.08, unfreeze_below: float = 0.04) -> bool:
    """Whether auto-deploys are frozen, from the portfolio equity of the window (say, 7 days).

    The current drawdown is the fall from the window's peak to its LAST value. It freezes at
    ``freeze_at`` and, once frozen, stays frozen until it has recovered below ``unfreeze_below``:
    the gap (hysteresis) keeps a book hovering around 8% from freezing and thawing on every
    check. An operator may also clear the freeze by hand; that override is the caller's
    business, not this rule's. An empty window carries no evidence and keeps the state.
    """
    if not 0.0 <= unfreeze_below <= freeze_at:
        raise ValueError("need 0 <= unfreeze_below <= freeze_at")
    pairs = _peaks_and_values(equity_window)
    if not pairs:
        return currently_frozen
    peak, last = pairs[-1]
    current = (peak - last) / peak  # not 1 - last/peak: 1 - 0.92 is 0.0799...
    return current >= unfreeze_below if currently_frozen else current >= freeze_at


_MIN_VAR_RETURNS = 20


def historical_var(returns: Sequence[float], level: float = 0.95) -> float:
    """Historical value at risk of 1-day ``returns``: the loss (a positive fraction) that the
    days exceeded with probability ``1 - level`` at most.

    It is the empirical (1 - level) quantile, taken as the k-th worst day with
    k = ceil(n (1 - level)) (the inverse of the empirical distribution, no interpolation: a
    figure that really happened), sign flipped. A quantile that is a gain gives 0: no loss.
    Fewer than 20 days say too little about the tail, and raise ValueError.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    values = sorted(float(r) for r in returns)
    if len(values) < _MIN_VAR_RETURNS:
        raise ValueError(f"historical VaR needs at least {_MIN_VAR_RETURNS} daily returns, "
                         f"got {len(values)}")
    if any(math.isnan(v) for v in values):
        raise ValueError("returns contain NaN")
    tail = len(values) * (1 - Decimal(str(level)))  # exact: 100 x 0.05 is 5, not 5.000...1
    k = max(1, math.ceil(tail))
    return max(0.0, -values[k - 1])

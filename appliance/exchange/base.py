"""The one interface every service uses to reach a market.

Implementations: :mod:`appliance.exchange.sim` (the default, no network), ``replay`` and
``bybit`` (market-access issue). Services never know which one they hold.
"""

from __future__ import annotations

import contextlib
import contextvars
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np

from appliance.domain import Balance, Candle, Fill, Instrument, OrderIntent, Position, Ticker


class ExchangeError(RuntimeError):
    """The exchange refused or failed a request; the message says which and why."""


class RateLimited(ExchangeError):
    """The venue refused a request for its rate limit (Bybit: retCode 10006, HTTP 403/429)."""


_YIELDING: contextvars.ContextVar[bool] = contextvars.ContextVar("yielding", default=False)


@contextlib.contextmanager
def yielding_to_rate_limits() -> Iterator[None]:
    """Calls made in this block (by this task) give up at the venue's first rate-limit refusal
    instead of retrying it: the caller is the least important user of the budget (discovery),
    backs off by itself and leaves the retries to the data and order paths."""
    token = _YIELDING.set(True)
    try:
        yield
    finally:
        _YIELDING.reset(token)


def yields_to_rate_limits() -> bool:
    """Whether the running task is inside :func:`yielding_to_rate_limits`."""
    return _YIELDING.get()


PAPER = "paper"  # orders fill on the local paper engine, not at a venue
REAL_TIME = "real_time"  # market time is wall time (no virtual clock to hold)
VOLUME_BAR = "volume_bar"  # turnovers are USD-comparable: the $10M bar applies
# a local engine fills a whole batch in one step (:meth:`Exchange.place_orders`), with nothing
# between its orders that a kill switch could be thrown in: the paper venues (sim, replay)
BATCH_FILLS = "batch_fills"


@runtime_checkable
class Exchange(Protocol):
    """Every method a service calls on a market; implementations: sim, replay, bybit.

    ``capabilities`` says what a service may rely on (see the flags above) instead of probing
    the object; ``aclose`` releases what it holds (sockets) and is always safe to call.
    """

    name: str
    capabilities: frozenset[str]

    async def server_time_ms(self) -> int: ...

    async def instruments(self) -> list[Instrument]: ...

    async def tickers(self) -> list[Ticker]: ...

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed candles with open_time in [start_ms, end_ms), oldest first (paged inside)."""
        ...

    async def klines_array(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        """Closed 1m candles in [start_ms, end_ms) as an (n, 7) array: open_time, open, high,
        low, close, volume, turnover (the feed's and the backfill's format)."""
        ...

    async def funding_rates(self, symbol: str, start_ms: int, end_ms: int
                            ) -> list[tuple[int, float]]:
        """The funding rates of ``symbol`` settled at times ``T`` with ``start_ms < T <=
        end_ms`` (and not after now), as (T ms, rate), oldest first; empty for a symbol
        without funding (spot, or a replay file set without a funding file)."""
        ...

    async def fee_rates(self) -> dict[str, float]:
        """The account's taker fee rate per symbol where the venue tells it (Bybit with keys:
        ``/v5/account/fee-rate``); empty where it does not, and the configured fee applies."""
        ...

    def serves(self, symbol: str, interval: str) -> bool:
        """Whether candles of ``interval`` exist for ``symbol`` (replay folders mix them)."""
        ...

    async def place_order(self, intent: OrderIntent) -> Fill: ...

    async def place_orders(self, intents: Sequence[OrderIntent]) -> list[Fill | ExchangeError]:
        """Each order's fill, or the :class:`ExchangeError` that refused it, in order. With
        ``BATCH_FILLS`` one step (and, in sim, one save of the account) for the lot; without
        it one order after another, as :meth:`place_order` sends them."""
        ...

    async def order_fill(self, symbol: str, order_link_id: str) -> Fill | None:
        """The fill of an order we sent with ``order_link_id``, or None when the venue never
        executed it: how reconciliation settles an order whose answer was lost in a crash."""
        ...

    async def cancel_order(self, symbol: str, order_id: str) -> None: ...

    async def positions(self) -> list[Position]: ...

    async def balance(self) -> Balance: ...

    def rate_limit_usage(self) -> float:
        """Highest used fraction of any endpoint's rate-limit budget, 0..1."""
        ...

    async def aclose(self) -> None: ...


def fill_each(fill: Callable[[OrderIntent], Fill], intents: Sequence[OrderIntent]
              ) -> list[Fill | ExchangeError]:
    """:meth:`Exchange.place_orders` for a local engine: each order's fill, or the error that
    refused it, in order (one refusal does not stop the others)."""
    out: list[Fill | ExchangeError] = []
    for intent in intents:
        try:
            out.append(fill(intent))
        except ExchangeError as exc:
            out.append(exc)
    return out


def decimal_or_zero(value: object) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)


def quote_around(last: float, half_spread: float, tick: Decimal | None = None
                 ) -> tuple[float, float]:
    """A top of book around ``last``: the bid ``half_spread`` (a fraction) below it and the ask
    as far above, widened outward to the tick when one is given (so a quoted spread is never
    narrower than the model's)."""
    price, half = Decimal(str(last)), Decimal(str(half_spread))
    bid, ask = price * (1 - half), price * (1 + half)
    if tick:
        bid = (bid / tick).to_integral_value(ROUND_FLOOR) * tick
        ask = (ask / tick).to_integral_value(ROUND_CEILING) * tick
    return float(bid), float(ask)

"""The one interface every service uses to reach a market.

Implementations: :mod:`appliance.exchange.sim` (the default, no network), ``replay`` and
``bybit`` (market-access issue). Services never know which one they hold.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol, runtime_checkable

from appliance.domain import Balance, Candle, Fill, Instrument, OrderIntent, Position, Ticker


class ExchangeError(RuntimeError):
    """The exchange refused or failed a request; the message says which and why."""


@runtime_checkable
class Exchange(Protocol):
    name: str

    async def server_time_ms(self) -> int: ...

    async def instruments(self) -> list[Instrument]: ...

    async def tickers(self) -> list[Ticker]: ...

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int) -> list[Candle]:
        """Closed candles with open_time in [start_ms, end_ms), oldest first (paged inside)."""
        ...

    async def place_order(self, intent: OrderIntent) -> Fill: ...

    async def cancel_order(self, symbol: str, order_id: str) -> None: ...

    async def positions(self) -> list[Position]: ...

    async def balance(self) -> Balance: ...

    def rate_limit_usage(self) -> float:
        """Highest used fraction of any endpoint's rate-limit budget, 0..1."""
        ...


def decimal_or_zero(value: object) -> Decimal:
    return Decimal(str(value)) if value not in (None, "") else Decimal(0)

"""Frozen records that flow between layers: exchange → candles → orders → fills → equity.

Money and quantities that must add up exactly (positions, balances) are ``Decimal``; prices and
volumes of market data are floats, as every exchange sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum

from models.funding import FUNDING_PERIOD_MS


@dataclass(frozen=True, slots=True)
class Candle:
    symbol: str
    interval: str
    open_time: int  # ms since the epoch, UTC; the candle covers [open_time, open_time + interval)
    open: float
    high: float
    low: float
    close: float
    volume: float  # base units
    turnover: float  # quote units (USDT)


@dataclass(frozen=True, slots=True)
class Instrument:
    symbol: str
    status: str  # Trading, PreLaunch, Closed, ...
    base_coin: str
    quote_coin: str
    tick_size: Decimal
    qty_step: Decimal
    min_order_qty: Decimal
    launch_time: int  # ms
    delivery_time: int = 0  # ms; > 0 when the venue is delisting it (settles at that time)
    funding_interval_ms: int = FUNDING_PERIOD_MS  # funding every this long from 00:00 UTC


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    last_price: float
    turnover_24h: float
    volume_24h: float
    bid: float | None = None  # top of book, where the venue gives it
    ask: float | None = None


class Side(str, Enum):
    BUY = "Buy"
    SELL = "Sell"


@dataclass(frozen=True, slots=True)
class OrderIntent:
    symbol: str
    side: Side
    qty: Decimal
    reduce_only: bool = False
    model_id: str | None = None
    order_link_id: str | None = None
    decided_ms: int | None = None  # market time of the bar it answers (sim/replay fill there)


@dataclass(frozen=True, slots=True)
class Fill:
    order_id: str
    symbol: str
    side: Side
    qty: Decimal
    price: Decimal
    fee: Decimal
    ts: int  # ms


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    qty: Decimal  # signed: long > 0, short < 0
    avg_price: Decimal
    realized_pnl: Decimal = Decimal(0)


class TradingState(str, Enum):
    """NautilusTrader's states: ACTIVE trades, REDUCING only closes, HALTED sends nothing."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True, slots=True)
class Balance:
    coin: str
    wallet: Decimal
    equity: Decimal
    positions: tuple[Position, ...] = field(default_factory=tuple)
    #: funding the wallet was charged, per funding time (ms, total), complete for every time
    #: after ``funding_known_after``; None where the venue gives no such breakdown (live
    #: Bybit). It lets the account be valued as of an earlier bar
    #: (:func:`appliance.account_identity.venue_as_of`).
    funding_log: tuple[tuple[int, Decimal], ...] | None = None
    funding_known_after: int | None = None

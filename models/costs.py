"""What a trade costs, per symbol (pure): the one cost model of validation, paper and parity.

A fill of ``q`` units at a bar whose close is ``c`` happens at ``c × (1 ± (slippage + half
spread))`` (against the order's side) and pays ``taker_fee`` on its notional. Funding is charged
separately, on the positions held across each funding time (:mod:`models.funding`).

The half spread of a symbol is what crossing the book costs beyond the mid. It is estimated:

* from the symbol's own returns with **Roll's estimator**: bid-ask bounce makes consecutive
  price changes negatively correlated, ``cov(Δp_t, Δp_t-1) = -s²/4`` for a spread ``s``; with
  returns, the half spread as a fraction of the price is ``sqrt(-cov(r_t, r_t-1))`` (and 0 when
  the autocovariance is not negative). Mean reversion also makes it negative, so the estimate is
  conservative: it never makes a reverting market look cheaper to trade than it is;
* or live, from the venue's top of book (``(ask - bid) / (2 mid)``) where the exchange gives it.

Without this term a strategy that buys the bid and sells the ask of a thin market reads as edge
(bid-ask bounce); the Bittrex alt/BTC sets are the textbook case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

DEFAULT_TAKER_FEE = 0.00055  # Bybit's linear-perpetual taker fee
DEFAULT_SLIPPAGE = 0.0002  # 2 bps


def roll_half_spread(close: np.ndarray) -> float:
    """Roll's half spread of a close series, as a fraction of the price (0 when the lag-1
    autocovariance of its log returns is not negative, or with fewer than 3 returns)."""
    c = np.asarray(close, dtype=np.float64)
    c = c[np.isfinite(c) & (c > 0)]
    if len(c) < 4:
        return 0.0
    r = np.diff(np.log(c))
    a, b = r[1:] - r[1:].mean(), r[:-1] - r[:-1].mean()
    cov = float(np.mean(a * b))
    return math.sqrt(-cov) if cov < 0 else 0.0


def quoted_half_spread(bid: float, ask: float) -> float | None:
    """The half spread of a quote as a fraction of its mid; None for a quote that is not one."""
    if not (bid > 0 and ask >= bid and math.isfinite(bid) and math.isfinite(ask)):
        return None
    mid = (bid + ask) / 2
    return (ask - bid) / (2 * mid)


@dataclass(frozen=True)
class CostModel:
    """Per-side costs: fee on notional, and slippage plus half spread on the price."""

    taker_fee: float = DEFAULT_TAKER_FEE
    slippage: float = DEFAULT_SLIPPAGE
    half_spread: Mapping[str, float] = field(default_factory=dict)
    fees: Mapping[str, float] = field(default_factory=dict)  # the venue's rate, where it says

    def fee(self, symbol: str) -> float:
        """The taker fee of ``symbol``: the venue's own rate where it gave one, else the
        configured one."""
        return float(self.fees.get(symbol, self.taker_fee))

    def price_impact(self, symbol: str) -> float:
        """How far from the close a fill happens, as a fraction of it (slippage + half
        spread)."""
        return self.slippage + float(self.half_spread.get(symbol, 0.0))

    def per_side(self, symbol: str) -> float:
        """The fraction of notional one side of a trade costs (fee + impact)."""
        return self.fee(symbol) + self.price_impact(symbol)

    def fill_price(self, symbol: str, close: float, qty: float) -> float:
        """Where a buy (``qty`` > 0) or a sell fills against the close."""
        return close * (1.0 + math.copysign(self.price_impact(symbol), qty))

    def with_spreads(self, spreads: Mapping[str, float]) -> "CostModel":
        return CostModel(self.taker_fee, self.slippage, dict(spreads), self.fees)

    def with_fees(self, fees: Mapping[str, float]) -> "CostModel":
        return CostModel(self.taker_fee, self.slippage, self.half_spread, dict(fees))

    def as_dict(self) -> dict[str, object]:
        return {"taker_fee": self.taker_fee, "slippage": self.slippage,
                **({"fees": dict(sorted(self.fees.items()))} if self.fees else {}),
                "half_spread": {s: round(v, 8) for s, v in sorted(self.half_spread.items())}}

"""A planted regime break in the sim market (``sim.shock_at``, ``sim.shock_symbols``).

From the shock's minute on, every chosen symbol's log returns are ``factor`` times what the
sim makes (``sim.shock_vol``, default 3): prices, highs and lows become
``anchor * (p / anchor) ** factor`` with ``anchor`` the unshocked open of the shock's minute,
rounded to the tick. The path stays continuous at the shock (the first shocked minute opens
where the market was), highs and lows keep their order (the map is increasing), and the whole
thing remains a pure function of ``(seed, symbol, minute)``, so backfills, the live feed and
tests agree. Volumes are left as they are: the break shows in returns, volatility, ATR and band
width, as a volatility regime change does — what the drift service (layer 6) must catch.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PRICES = slice(1, 5)  # open, high, low, close of a candle row


@dataclass(frozen=True)
class Shock:
    at_ms: int
    symbols: frozenset[str]  # empty: every symbol
    factor: float = 3.0

    def hits(self, symbol: str) -> bool:
        return not self.symbols or symbol in self.symbols

    def apply(self, symbol: str, rows: np.ndarray, tick: float,
              open_at: Callable[[str, int], float]) -> np.ndarray:
        """``rows`` (1m candles, oldest first) with the shock applied from ``at_ms`` on;
        ``open_at(symbol, t_ms)`` is the unshocked open of a minute (the anchor)."""
        if not self.hits(symbol) or not len(rows) or rows[-1, 0] < self.at_ms:
            return rows
        out = np.array(rows, dtype=np.float64)
        after = out[:, 0] >= self.at_ms
        anchor = open_at(symbol, self.at_ms)
        moved = anchor * (out[after, PRICES] / anchor) ** self.factor
        out[after, PRICES] = np.maximum(np.round(moved / tick) * tick, tick)
        return out


def parse_shock(at: str, symbols: str, factor: float) -> Shock | None:
    """The config's shock (``at`` "YYYY-MM-DD[ HH:MM]" UTC; empty: none)."""
    if not at.strip():
        return None
    fmt = "%Y-%m-%d %H:%M" if " " in at.strip() else "%Y-%m-%d"
    at_ms = int(calendar.timegm(time.strptime(at.strip(), fmt))) * 1000
    names = frozenset(s.strip() for s in symbols.split(",") if s.strip())
    return Shock(at_ms, names, float(factor))

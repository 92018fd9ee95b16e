"""Candle intervals and their lengths: the one table every layer uses.

Bybit's names (``1m``, ``5m``, ``1h``, ...) map to milliseconds here and nowhere else. The
appliance fetches ``1m`` candles and derives ``5m`` and ``1h`` by aggregation; models trade on
``TRADING_INTERVALS``; annualising a per-bar Sharpe goes through :func:`periods_per_year`, so a
1h series is never scaled as if it were 5m.
"""

from __future__ import annotations

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS

INTERVAL_MS: dict[str, int] = {
    "1m": MINUTE_MS, "3m": 3 * MINUTE_MS, "5m": 5 * MINUTE_MS, "15m": 15 * MINUTE_MS,
    "30m": 30 * MINUTE_MS, "1h": HOUR_MS, "2h": 2 * HOUR_MS, "4h": 4 * HOUR_MS,
    "6h": 6 * HOUR_MS, "8h": 8 * HOUR_MS, "12h": 12 * HOUR_MS, "1d": DAY_MS,
    "3d": 3 * DAY_MS, "1w": 7 * DAY_MS,
}
BY_MS: dict[int, str] = {ms: name for name, ms in INTERVAL_MS.items()}
LAKE_INTERVALS = ("1m", "5m", "1h")  # what the lake keeps: 1m fetched, the others resampled
TRADING_INTERVALS = ("5m", "1h")  # what models may train and trade on


def interval_ms(name: str) -> int:
    """Milliseconds of the interval called ``name``; ValueError naming the known ones."""
    try:
        return INTERVAL_MS[name]
    except KeyError:
        raise ValueError(f"unknown interval {name!r}; known: {', '.join(INTERVAL_MS)}") from None


def periods_per_year(name: str) -> float:
    """Bars of ``name`` in a 365-day year (5m → 105120): the annualisation factor."""
    return YEAR_MS / interval_ms(name)


def bar_start(ts_ms: int, name: str) -> int:
    """Open time of the bar of ``name`` that contains ``ts_ms``."""
    step = interval_ms(name)
    return ts_ms - ts_ms % step

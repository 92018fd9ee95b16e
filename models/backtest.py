"""The vectorised backtester: target positions + closes -> net returns and equity, in numpy.

Timing, the one rule that keeps a backtest honest: ``position[t]`` is decided at bar t's close,
from features of bars <= t, and the trade fills at that close. It is then held over the next bar,
so it earns bar t+1's return ``close[t+1] / close[t] - 1``, never bar t's own (which was already
known when it was decided). In the arrays returned, row t is what happened during bar t:

    gross[t] = position[t-1] * (close[t] / close[t-1] - 1)      (gross[0] = 0)
    costs[t] = |position[t] - position[t-1]| * (taker_fee + slippage)   (position[-1] = 0)
    net[t]   = gross[t] - costs[t]
    equity[t] = (1 + net[0]) * ... * (1 + net[t])                (starting equity 1)

Positions are target fractions of equity in [-1, 1] (negative = short). Costs are charged on
every change of the target, including the first entry; the position is held as a constant
fraction of equity, so the small rebalancing its drift would need is not charged. A backtest
that should end flat ends with a 0 position.

Arrays may be 1-D (bars) or 2-D (bars x symbols); each column is its own account. Time runs
along axis 0. Either memory layout works; the equity curve's running product along axis 0 tends
to be faster when each symbol's series is contiguous (Fortran order, ``np.stack(series).T``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_TAKER_FEE = 0.00055  # Bybit's linear-perpetual taker fee
DEFAULT_SLIPPAGE = 0.0002  # 2 bps, the appliance's default slippage


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """Per-bar series, each shaped like the positions (row t = during bar t, see module doc)."""

    gross: np.ndarray
    costs: np.ndarray
    net: np.ndarray
    equity: np.ndarray


def _inputs(close: np.ndarray, position: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(close, dtype=np.float64)
    p = np.asarray(position, dtype=np.float64)
    if c.shape != p.shape or c.ndim not in (1, 2) or len(c) == 0:
        raise ValueError(f"close {c.shape} and position {p.shape} must share a 1-D or 2-D "
                         "non-empty shape")
    return c, p


def backtest(close: np.ndarray, position: np.ndarray, *, taker_fee: float = DEFAULT_TAKER_FEE,
             slippage: float = DEFAULT_SLIPPAGE) -> BacktestResult:
    """Net-of-cost returns and equity of ``position`` traded at ``close`` (module doc: timing)."""
    c, p = _inputs(close, position)
    gross = np.empty_like(p)
    gross[0] = 0.0
    np.divide(c[1:], c[:-1], out=gross[1:])
    gross[1:] -= 1.0
    gross[1:] *= p[:-1]
    costs = np.empty_like(p)
    costs[0] = p[0]
    np.subtract(p[1:], p[:-1], out=costs[1:])
    np.abs(costs, out=costs)
    costs *= taker_fee + slippage
    net = np.subtract(gross, costs)
    equity = np.add(net, 1.0)
    np.cumprod(equity, axis=0, out=equity)
    return BacktestResult(gross=gross, costs=costs, net=net, equity=equity)


def slow_reference_backtest(close: np.ndarray, position: np.ndarray, *,
                            taker_fee: float = DEFAULT_TAKER_FEE,
                            slippage: float = DEFAULT_SLIPPAGE) -> BacktestResult:
    """The same accounting as ``backtest``, one bar at a time in plain Python, for tests."""
    c, p = _inputs(close, position)
    if c.ndim == 2:
        cols = [slow_reference_backtest(c[:, j], p[:, j], taker_fee=taker_fee,
                                        slippage=slippage) for j in range(c.shape[1])]
        return BacktestResult(*(np.stack([getattr(r, f) for r in cols], axis=1)
                                for f in ("gross", "costs", "net", "equity")))
    rate = taker_fee + slippage
    gross, costs, net, equity = [], [], [], []
    held, wealth = 0.0, 1.0
    for t in range(len(c)):
        bar_return = float(c[t]) / float(c[t - 1]) - 1.0 if t > 0 else 0.0
        g = held * bar_return if t > 0 else 0.0
        k = abs(float(p[t]) - held) * rate
        wealth *= 1.0 + (g - k)
        gross.append(g)
        costs.append(k)
        net.append(g - k)
        equity.append(wealth)
        held = float(p[t])
    return BacktestResult(*(np.array(a) for a in (gross, costs, net, equity)))


def bench_backtest(n: int = 6_480_000, symbols: int = 50, repeats: int = 5, seed: int = 0,
                   layout: str = "F") -> dict[str, Any]:
    """Candles per second of ``backtest`` on about n candles (bars x symbols), single thread.

    Measurement only (it reads the clock); nothing in the trading path calls it. ``layout`` "F"
    keeps each symbol's series contiguous (``np.stack(series).T``), "C" interleaves symbols bar
    by bar. Positions hold for 32 bars, then redraw from {-1, 0, 1}. The best of ``repeats``
    timed runs is reported with the median.
    """
    if layout not in ("F", "C"):
        raise ValueError("layout is 'F' or 'C'")
    bars = max(n // symbols, 2)
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, (symbols, bars)), axis=1))
    hold = 32
    draws = rng.integers(-1, 2, (symbols, bars // hold + 1)).astype(np.float64)
    position = np.repeat(draws, hold, axis=1)[:, :bars]
    order = "F" if layout == "F" else "C"
    close, position = np.asarray(close.T, order=order), np.asarray(position.T, order=order)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        backtest(close, position)
        timings.append(time.perf_counter() - start)
    best, median = min(timings), float(np.median(timings))
    candles = bars * symbols
    return {"candles": candles, "symbols": symbols, "layout": layout, "best_s": best,
            "median_s": median, "candles_per_s": candles / best,
            "candles_per_s_median": candles / median}

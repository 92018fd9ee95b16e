"""The strategy as it trades, replayed (pure): per-bar targets → a paper book, bar by bar.

This is the arithmetic of the paper desk (:mod:`appliance.services.paper_desk`), over all of a
group's symbols at once, so that validation scores exactly the strategy the shadows and the
prod books run — the same sizing (targets are fractions of the book's equity at the bar), the
same costs (:class:`models.costs.CostModel`: fills at the close plus slippage and half spread
against the order's side, the taker fee on the notional) and funding on the positions held
across each funding time. A test holds the two equal to 1e-9.

At bar ``t`` (closes ``c``): funding due at this bar is charged on the positions held into it;
the book's equity is marked at ``c``; each symbol's position moves to ``fraction × equity / c``
(skipped when the change is smaller than ``min_trade``); equity is marked again. Returns are
``equity[t] / equity[t-1] - 1`` with ``equity[-1] = capital``. A *trade* is an entry from flat or
a flip; every change is a fill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from data.intervals import periods_per_year
from models.metrics import (max_drawdown, probabilistic_sharpe_ratio, sharpe_ratio,
                            sortino_ratio)


@dataclass(frozen=True)
class Replay:
    equity: np.ndarray  # (T,) after each bar's trades, marked at its close
    returns: np.ndarray  # (T,) from the capital
    trades: np.ndarray  # (S,) entries and flips per symbol
    fills: np.ndarray  # (S,) position changes per symbol
    traded: np.ndarray  # (S,) notional traded per symbol
    costs: np.ndarray  # (S,) fees and price impact paid per symbol
    funding: np.ndarray  # (S,) funding paid per symbol
    gross: np.ndarray  # (S,) P&L per symbol before costs and funding


def replay(close: np.ndarray, fraction: np.ndarray, impact: np.ndarray,
           taker_fee: float | np.ndarray, *,
           funding: np.ndarray | None = None, capital: float = 1.0,
           min_trade: np.ndarray | None = None) -> Replay:
    """Replay ``fraction`` (T, S) targets over ``close`` (T, S) (module docstring).

    ``impact`` (S,) is each symbol's slippage plus half spread, ``taker_fee`` one rate or (S,)
    per symbol, ``funding`` (T, S) the rate due
    at each bar (0 where none), ``min_trade`` (S,) the smallest position change traded.
    """
    c = np.asarray(close, dtype=np.float64)
    f = np.asarray(fraction, dtype=np.float64)
    if c.shape != f.shape or c.ndim != 2:
        raise ValueError(f"close {c.shape} and fraction {f.shape} must be the same (T, S)")
    n_bars, n_sym = c.shape
    impact = np.broadcast_to(np.asarray(impact, dtype=np.float64), (n_sym,))
    floor = (np.zeros(n_sym) if min_trade is None
             else np.broadcast_to(np.asarray(min_trade, dtype=np.float64), (n_sym,)))
    qty = np.zeros(n_sym)
    cash = float(capital)
    equity = np.empty(n_bars)
    trades = np.zeros(n_sym, dtype=np.int64)
    fills = np.zeros(n_sym, dtype=np.int64)
    traded, costs, paid, gross = (np.zeros(n_sym) for _ in range(4))
    prev_close = c[0]
    for t in range(n_bars):
        ct = c[t]
        gross += qty * (ct - prev_close)
        prev_close = ct
        if funding is not None:
            due = qty * ct * funding[t]
            paid += due
            cash -= float(due.sum())
        start = cash + float(qty @ ct)
        target = f[t] * start / ct
        diff = target - qty
        move = (diff != 0.0) & (np.abs(diff) >= floor)
        if move.any():
            price = ct * (1.0 + np.copysign(impact, diff))
            notional = np.abs(diff) * price
            fee = notional * taker_fee
            cash -= float(np.sum(np.where(move, diff * price + fee, 0.0)))
            flips = (qty == 0.0) & (target != 0.0) | (qty * target < 0.0)
            trades += move & flips
            fills += move
            traded += np.where(move, np.abs(diff) * ct, 0.0)
            costs += np.where(move, np.abs(diff) * ct * impact + fee, 0.0)
            qty = np.where(move, target, qty)
        equity[t] = cash + float(qty @ ct)
    prev = np.concatenate([[float(capital)], equity[:-1]])
    return Replay(equity, equity / prev - 1.0, trades, fills, traded, costs, paid, gross)


def metrics(r: Replay, interval: str, capital: float = 1.0) -> dict[str, Any]:
    """The record of a replay, as metrics.json and the promotion rule read it."""
    ppy = periods_per_year(interval)
    years = len(r.returns) / ppy if len(r.returns) else 0.0
    curve = np.concatenate([[capital], r.equity])
    mean_equity = float(np.mean(curve)) if len(curve) else capital
    return {
        "bars": int(len(r.returns)),
        "total_return": float(curve[-1] / capital - 1.0),
        "sharpe": sharpe_ratio(r.returns, ppy),
        "sortino": sortino_ratio(r.returns, ppy),
        "max_drawdown": max_drawdown(curve),
        "psr": probabilistic_sharpe_ratio(r.returns, 0.0, ppy),
        "trades": int(r.trades.sum()),
        "fills": int(r.fills.sum()),
        "turnover_per_year": float(r.traded.sum() / mean_equity / years) if years else 0.0,
        "costs": float(r.costs.sum()),
        "funding": float(r.funding.sum()),
    }

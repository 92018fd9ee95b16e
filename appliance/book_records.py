"""A model's record, read from its own book's rows (runs in the store's thread).

One rule for every figure: a book's returns are the changes of its recorded equity, starting
from its capital (``r0 = e0 / capital - 1``, then ``rt = et / et-1 - 1``), one per bar of the
model's own timeframe, and the Sharpe ratio is annualised by that timeframe. The Models screen,
``models --json`` (``live``), the promotion rule and the parity audit all read it from here, so
anyone can recompute a figure from the ``books`` and ``book_equity`` tables.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from appliance.books import book_id_of
from appliance.ledger_store import book_bars, book_equity, book_row
from appliance.promotion import ShadowRecord
from appliance.store import Store
from data.intervals import interval_ms, periods_per_year
from models.costs import CostModel
from models.funding import funding_per_bar
from models.metrics import deflated_sharpe_ratio, probabilistic_sharpe_ratio, sharpe_ratio
from models.paper_replay import replay


def current_book_id(model: dict[str, Any]) -> str | None:
    """The book of a prod or shadow model's current mode period."""
    if model["mode"] not in ("prod", "shadow") or model.get("mode_since") is None:
        return None
    return book_id_of(model["mode"], model["model_id"], model["mode_since"])


def book_returns(capital: float, points: list[tuple[int, float]]) -> np.ndarray:
    eq = np.array([capital] + [e for _, e in points], dtype=np.float64)
    if len(eq) < 2 or capital <= 0:
        return np.zeros(0)
    return np.diff(eq) / eq[:-1]


def live_figures(store: Store, model: dict[str, Any]) -> dict[str, Any] | None:
    """``{mode, since, sharpe, pnl, trades, fills, equity, capital, book_id}`` of the model's
    current book, or None when it has none yet (not prod/shadow, or not funded)."""
    book_id = current_book_id(model)
    row = book_row(store, book_id) if book_id else None
    if row is None:
        return None
    capital = float(row["capital"])
    points = book_equity(store, book_id)
    rets = book_returns(capital, points)
    ppy = periods_per_year(model.get("timeframe") or "5m")
    return {"mode": model["mode"], "since": model["mode_since"], "book_id": book_id,
            "state": row["state"], "capital": capital,
            "equity": points[-1][1] if points else capital,
            "pnl": (points[-1][1] - capital) if points else 0.0,
            "sharpe": sharpe_ratio(rets, ppy) if len(rets) >= 2 else None,
            "trades": int(row["trades"]), "fills": int(row["fills"])}


def shadow_record(store: Store, model: dict[str, Any], now: float, trials: int
                  ) -> ShadowRecord:
    """The promotion rule's view of a shadow: its own book since its shadow period began, its
    PSR and its deflated Sharpe ratio over the group's ``trials``."""
    book_id = current_book_id(model)
    row = book_row(store, book_id) if book_id else None
    since = model.get("mode_since") or now
    if row is None:
        return ShadowRecord(model["model_id"], (now - since) / 86_400, float("nan"), 0,
                            float("nan"), trials, float("nan"))
    rets = book_returns(float(row["capital"]), book_equity(store, book_id))
    ppy = periods_per_year(model.get("timeframe") or "5m")
    return ShadowRecord(model["model_id"], (now - since) / 86_400,
                        float(sharpe_ratio(rets, ppy)), int(row["trades"]),
                        float(probabilistic_sharpe_ratio(rets, 0.0, ppy)), trials,
                        float(deflated_sharpe_ratio(rets, trials, ppy)))


def sharpe_over(store: Store, model: dict[str, Any], since_s: float) -> float | None:
    """The Sharpe ratio of a model's current book over the bars since ``since_s`` (the prod
    side of a shadow's comparison: the same bars, returns not amounts, so a 1% book and a
    full-size one compare)."""
    book_id = current_book_id(model)
    if book_id is None:
        return None
    points = book_equity(store, book_id, int(since_s * 1000))
    if len(points) < 3:
        return None
    eq = np.array([e for _, e in points], dtype=np.float64)
    return float(sharpe_ratio(np.diff(eq) / eq[:-1],
                              periods_per_year(model.get("timeframe") or "5m")))


def parity_divergence(store: Store, book_id: str, since_ms: int, interval: str,
                      costs: CostModel,
                      funding: Mapping[str, Sequence[tuple[int, float]]] | None = None
                      ) -> float | None:
    """|replayed − realised| return of one book over its bars since ``since_ms``.

    Replayed: :func:`models.paper_replay.replay` — the arithmetic validation scores with and
    the paper desk trades with — on the book's own per-bar targets (fractions of its equity)
    and closes, all its symbols in one book, at ``costs`` (fee, slippage, half spreads) and
    ``funding`` (per symbol, (time, rate)). Realised: the book's recorded equity over the same
    bars. Both start after the first bar's trades. What is left is what the replay cannot know:
    a prod book's whole lots, a paper rebalance too small to trade, a bar a symbol skipped.
    """
    bars = book_bars(store, book_id, since_ms)
    if not bars:
        return None
    step = interval_ms(interval)
    times = sorted({b["ts"] for b in bars})
    symbols = sorted({b["symbol"] for b in bars})
    row_of = {t: i for i, t in enumerate(times)}
    col_of = {s: j for j, s in enumerate(symbols)}
    close = np.full((len(times), len(symbols)), np.nan)
    target = np.full_like(close, np.nan)
    for b in bars:
        close[row_of[b["ts"]], col_of[b["symbol"]]] = b["close"]
        target[row_of[b["ts"]], col_of[b["symbol"]]] = b["target"]
    close, target = _carried(close), np.nan_to_num(_carried(target, back=False))
    marked = {ts: e for ts, e in book_equity(store, book_id, times[0] + step)}
    first, last = marked.get(times[0] + step), marked.get(times[-1] + step)
    if first is None or last is None or len(times) < 3 or first <= 0:
        return None
    close_ms = np.asarray(times, dtype=np.int64) + step
    rates = None
    if funding:
        rates = np.stack([funding_per_bar(close_ms, funding.get(s, ())) for s in symbols],
                         axis=1)
    r = replay(close, target, np.array([costs.price_impact(s) for s in symbols]),
               np.array([costs.fee(s) for s in symbols]), funding=rates)
    return abs(float(r.equity[-1] / r.equity[0] - 1.0) - (last / first - 1.0))


def _carried(a: np.ndarray, back: bool = True) -> np.ndarray:
    """Each column's last value carried forward over gaps (and, with ``back``, its first one
    backward over leading ones)."""
    out = a.copy()
    for j in range(out.shape[1]):
        col = out[:, j]
        ok = ~np.isnan(col)
        if not ok.any():
            continue
        idx = np.where(ok, np.arange(len(col)), 0)
        np.maximum.accumulate(idx, out=idx)
        filled = col[idx]
        if back:
            filled[:np.argmax(ok)] = col[np.argmax(ok)]
        else:
            filled[:np.argmax(ok)] = np.nan
        out[:, j] = filled
    return out

"""Walk-forward validation of a training run, scoring the strategy as it trades.

The group's bars are cut into ``folds + 1`` blocks of equal length; fold k trains on every bar
before block k+1 (expanding window), minus a purge of ``horizon + lookback`` bars before the
test block, so that no training label or window reaches into it, and is tested on block k+1.
Inside each fold's training part the last ``EARLY_STOP_FRACTION`` of its bars (after another
purge) is held out for early stopping, so a model never stops on the bars it is scored on. The
run's model is then refit on every bar, with the same inner split.

Each test block is scored by replaying the model's targets through :mod:`models.paper_replay`:
the trading engine's sizing (:func:`appliance.sizing.target_fractions`), fills at the close plus
slippage and each symbol's half spread (Roll's estimate on the fold's training bars only, so the
costs are not peeked at either), the taker fee, and funding when rates are given. The record:

* ``folds``: each fold's start, end, Sharpe, trades (entries and flips), fills, return, drawdown;
* ``wf_mean`` and ``wf_std`` of the folds' Sharpe ratios, and ``wf_score = wf_mean - wf_std /
  sqrt(folds)``: the mean less one standard error. A model that earned its mean in one lucky
  fold scores lower than one that earned it in every fold; the lifecycle ranks candidates by it.
* ``sharpe``, ``trades``, ``psr``, ...: the test blocks chained into one out-of-sample record;
* ``costs``: the cost model on all bars, and the symbols whose spread turned an edge that
  beat the fees and slippage into a loss in the test blocks (``excluded``): those are reported
  and not traded (a symbol without any edge is simply a poor one; that is the model's record).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from appliance.sizing import target_fractions
from data.intervals import periods_per_year
from models.costs import CostModel, roll_half_spread
from models.dataset import DataSpec, Panel
from models.metrics import sharpe_ratio
from models.paper_replay import Replay, metrics, replay
from models.walkforward import NotEnoughHistory, walk_forward_folds

EARLY_STOP_FRACTION = 0.15
Fit = Callable[[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None], Any]


@dataclass(frozen=True)
class FoldResult:
    start_ms: int
    end_ms: int
    record: dict[str, Any]
    replay: Replay
    costs: CostModel  # what the block was scored at (spreads from the fold's training bars)


def inner_split(rows: np.ndarray, purge: int) -> tuple[np.ndarray, np.ndarray]:
    """The last EARLY_STOP_FRACTION of ``rows`` for early stopping, after a purge gap."""
    n = len(rows)
    cut = int(n * (1 - EARLY_STOP_FRACTION))
    return rows[:max(0, cut - purge)], rows[cut:]


def costs_on(panel: Panel, rows: np.ndarray, base: CostModel) -> CostModel:
    """``base`` with each symbol's Roll half spread measured on ``rows`` only."""
    return base.with_spreads({s: roll_half_spread(panel.close[rows, i])
                              for i, s in enumerate(panel.symbols)})


def score_block(panel: Panel, rows: np.ndarray, probs: np.ndarray, costs: CostModel,
                threshold: float, funding: np.ndarray | None = None) -> Replay:
    """Replay a model's probabilities ``probs`` (len(rows), S, 3) over the bars ``rows``."""
    n, s = len(rows), len(panel.symbols)
    fractions = target_fractions(probs.reshape(n * s, 3), panel.vol[rows].reshape(n * s),
                                 threshold=threshold).reshape(n, s)
    fractions[~panel.usable[rows]] = 0.0
    impact = np.array([costs.price_impact(sym) for sym in panel.symbols])
    return replay(panel.close[rows], fractions, impact, costs.taker_fee,
                  funding=None if funding is None else funding[rows])


def predict_block(model: Any, panel: Panel, rows: np.ndarray) -> np.ndarray:
    """(len(rows), S, 3) probabilities; flat-neutral where the features are not warm."""
    out = np.tile(np.array([0.0, 1.0, 0.0], dtype=np.float32), (len(rows), len(panel.symbols),
                                                                1))
    for s in range(len(panel.symbols)):
        ok = panel.usable[rows, s]
        if ok.any():
            out[ok, s] = model.predict_proba(
                panel.windows(s)[rows[ok]].astype(np.float32, copy=False))
    return out


def walk_forward(panel: Panel, spec: DataSpec, fit: Fit | None, *, folds: int, base: CostModel,
                 threshold: float, funding: np.ndarray | None = None,
                 on_fold: Callable[[int], None] | None = None,
                 on_record: Callable[[int, dict[str, Any]], None] | None = None,
                 fit_rows: Callable[[np.ndarray, np.ndarray], Any] | None = None
                 ) -> dict[str, Any]:
    """Train and score ``folds`` folds (module docstring); returns the run's metrics.

    ``on_record(k, record)`` is called with each fold's record as it is scored (AutoML's
    pruner: it may raise to stop the run there). ``fit_rows(train_rows, stop_rows)``, when
    given, is called instead of ``fit`` with the fold's bar indices (a learner that needs more
    than labelled windows, such as the ``ddqn`` student, reads its own data off the panel)."""
    if (fit is None) == (fit_rows is None):
        raise ValueError("give walk_forward one of fit and fit_rows")
    purge = spec.horizon + spec.lookback
    test_size = panel.bars // (folds + 1)
    min_train = max(200, purge + 1)
    try:
        layout = walk_forward_folds(panel.bars, folds, test_size, purge, 0, min_train=min_train)
    except NotEnoughHistory as exc:
        need = (min_train + purge) * (folds + 1)  # enough for every layout (a few less may do)
        raise NotEnoughHistory(f"{panel.bars} {spec.interval} bars of history; {folds} "
                               f"walk-forward folds need about {need} ({exc})") from None
    results: list[FoldResult] = []
    for k, fold in enumerate(layout):
        train_rows, stop_rows = inner_split(fold.train_idx, purge)
        if fit_rows is not None:
            model = fit_rows(train_rows, stop_rows)
        else:
            assert fit is not None
            x, y = panel.samples(train_rows, limit=spec.max_train_samples, seed=spec.seed + k)
            xv, yv = panel.samples(stop_rows, limit=spec.max_train_samples // 4,
                                   seed=spec.seed)
            model = fit(x, y, xv if len(xv) else None, yv if len(yv) else None)
        costs = costs_on(panel, fold.train_idx, base)
        rows = fold.test_idx
        r = score_block(panel, rows, predict_block(model, panel, rows), costs, threshold,
                        funding)
        results.append(FoldResult(int(panel.open_time[rows[0]]),
                                  int(panel.open_time[rows[-1]]), metrics(r, spec.interval), r,
                                  costs))
        if on_fold is not None:
            on_fold(k)
        if on_record is not None:
            on_record(k, results[-1].record)
    return summarize_folds(results, panel, spec, costs_on(panel, np.arange(panel.bars), base))


def summarize_folds(results: list[FoldResult], panel: Panel, spec: DataSpec,
                    costs: CostModel) -> dict[str, Any]:
    sharpes = np.array([r.record["sharpe"] for r in results], dtype=np.float64)
    mean = float(np.nanmean(sharpes)) if len(sharpes) else math.nan
    std = float(np.nanstd(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    chained = np.concatenate([r.replay.returns for r in results])
    trades = sum(r.record["trades"] for r in results)
    gross = sum(r.replay.gross for r in results)
    paid = sum(r.replay.costs for r in results)
    spread = sum((r.replay.traded * np.array([r.costs.half_spread.get(s, 0.0)
                                              for s in panel.symbols]) for r in results),
                 np.zeros(len(panel.symbols)))  # the spread each fold was charged
    excluded = {s: f"the spread ({spread[i]:.6f}) turns its edge after fees "
                   f"({gross[i] - paid[i] + spread[i]:.6f}) into a loss in the test blocks"
                for i, s in enumerate(panel.symbols)
                if gross[i] - paid[i] + spread[i] > 0 >= gross[i] - paid[i]}
    ppy = periods_per_year(spec.interval)
    record = metrics(Replay(np.cumprod(1.0 + chained), chained,
                            sum(r.replay.trades for r in results),
                            sum(r.replay.fills for r in results),
                            sum(r.replay.traded for r in results), paid,
                            sum(r.replay.funding for r in results), gross), spec.interval)
    return {
        **record,
        "sharpe": sharpe_ratio(chained, ppy),
        "trades": int(trades),
        "folds": [{"start": r.start_ms, "end": r.end_ms, **r.record} for r in results],
        "wf_mean": mean,
        "wf_std": std,
        "wf_score": mean - std / math.sqrt(len(results)) if results else math.nan,
        "timeframe": spec.interval,
        "costs": {**costs.as_dict(), "excluded": excluded},
    }

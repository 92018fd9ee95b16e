"""Walk-forward validation (models.validation) on real candles: issue 10's findings 1, 4, 5, 6
and 7, each as the record a user reads (``models --json``'s metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data.intervals import periods_per_year
from models.costs import CostModel
from models.dataset import DataSpec, Panel, build_panel
from models.kinds import train
from models.metrics import sharpe_ratio
from models.paper_replay import metrics, replay
from models.validation import (EARLY_STOP_FRACTION, FoldResult, inner_split, summarize_folds,
                               walk_forward)
from tests.models.real import load_freqtrade

REAL = ("ETH_BTC-5m.json", "LTC_BTC-5m.json")  # Bittrex 5m, 20 days, 5760 bars each
SPEC = DataSpec(horizon=12, lookback=3)
PURGE = SPEC.horizon + SPEC.lookback
RF = {"lookback": 3, "n_estimators": 8, "max_depth": 4, "min_samples_leaf": 50,
      "tree_batches": 2, "n_jobs": 1}


@pytest.fixture(scope="module")
def panel() -> Panel:
    return build_panel({n.split("-")[0].replace("_", ""): load_freqtrade(n) for n in REAL}, SPEC)


class Recorder:
    """A ``fit`` for walk_forward that trains a real (small) rf and records, for each call, the
    panel rows its training samples and its early-stopping samples came from."""

    def __init__(self, panel: Panel) -> None:
        self.where = {feats[t].tobytes(): t for s, feats in enumerate(panel.features)
                      for t in np.flatnonzero(panel.usable[:, s])}
        assert len(self.where) == panel.usable.sum()  # each usable feature row is unique
        self.calls: list[tuple[set[int], set[int]]] = []

    def rows(self, x: np.ndarray | None) -> set[int]:
        if x is None:
            return set()
        return {int(self.where[w[-1].tobytes()]) for w in x}  # a window ends at its own row

    def __call__(self, x, y, xv, yv):
        self.calls.append((self.rows(x), self.rows(xv)))
        return train("rf", x, y, params=RF, seed=0, x_val=xv, y_val=yv)


class Always:
    """A model that always says the same thing (deterministic, no training)."""

    def __init__(self, probs: tuple[float, float, float]) -> None:
        self.probs = np.array(probs, dtype=np.float32)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.tile(self.probs, (len(x), 1))


@pytest.fixture(scope="module")
def run(panel):
    fit = Recorder(panel)
    record = walk_forward(panel, SPEC, fit, folds=4, base=CostModel(), threshold=0.1)
    return record, fit


def row_of(panel: Panel, ms: int) -> int:
    return int(np.searchsorted(panel.open_time, ms))


def test_a_run_is_scored_on_k_walk_forward_folds_not_one_split(panel, run):
    """Finding 1: K folds, each a test block after all of its training rows and a purge gap of
    horizon + lookback; the lifecycle's score is the mean less one standard error."""
    record, fit = run
    folds = record["folds"]
    assert len(folds) == 4 == len(fit.calls)
    for f in folds:
        assert {"start", "end", "sharpe", "trades", "fills", "bars", "total_return",
                "max_drawdown"} <= f.keys()
    starts = [row_of(panel, f["start"]) for f in folds]
    ends = [row_of(panel, f["end"]) for f in folds]
    size = panel.bars // 5
    assert ends[-1] == panel.bars - 1  # the test blocks run to the last bar
    for k, (start, end) in enumerate(zip(starts, ends)):
        assert end - start + 1 == size == folds[k]["bars"]
        if k:
            assert start == ends[k - 1] + 1  # ordered, disjoint, back to back
        train_rows, stop_rows = fit.calls[k]
        seen = train_rows | stop_rows
        assert max(seen) + PURGE < start, (k, max(seen), start)  # purge gap >= h + lookback
    sharpes = np.array([f["sharpe"] for f in folds])
    assert record["wf_mean"] == pytest.approx(sharpes.mean(), rel=1e-12)
    assert record["wf_std"] == pytest.approx(sharpes.std(ddof=1), rel=1e-12)
    assert record["wf_score"] == pytest.approx(
        record["wf_mean"] - record["wf_std"] / math.sqrt(4), rel=1e-12)
    assert record["bars"] == 4 * size  # the chained out-of-sample record
    assert record["trades"] == sum(f["trades"] for f in folds)
    assert record["fills"] == sum(f["fills"] for f in folds)


def test_early_stopping_never_sees_the_scored_bars_or_the_purge_gap(panel, run):
    """Finding 5: the inner split is inside each fold's training part, after its own purge;
    what a model stops on is never what it is scored on."""
    record, fit = run
    for k, f in enumerate(record["folds"]):
        start, end = row_of(panel, f["start"]), row_of(panel, f["end"])
        train_rows, stop_rows = fit.calls[k]
        assert stop_rows, f"fold {k} had no early-stopping rows"
        scored = set(range(start, end + 1))
        gap = set(range(start - PURGE, start))
        assert not stop_rows & scored and not stop_rows & gap
        assert not stop_rows & train_rows
        # the early-stopping rows come after the training rows, across their own purge gap
        assert min(stop_rows) - max(train_rows) > PURGE
        assert max(stop_rows) < start - PURGE


def test_inner_split_holds_out_the_last_rows_after_a_purge():
    rows = np.arange(100, 1100)
    fit_rows, stop_rows = inner_split(rows, 15)
    assert len(stop_rows) == round(len(rows) * EARLY_STOP_FRACTION)
    assert stop_rows[-1] == rows[-1] and fit_rows[0] == rows[0]
    assert stop_rows[0] - fit_rows[-1] == 16  # 15 purged rows between them
    assert not set(fit_rows) & set(stop_rows)


def test_trades_are_entries_and_flips_and_fills_every_change():
    """Finding 4, on a hand-built target sequence: enter, resize, exit, enter short, flip long,
    exit. Three trades (two entries and a flip), six fills."""
    frac = np.array([0, .5, .5, .8, 0, -.3, -.3, .4, 0, 0], dtype=np.float64)[:, None]
    flat = np.full_like(frac, 100.0)
    r = replay(flat, frac, np.array([0.0]), 0.0)
    rec = metrics(r, "5m")
    assert (rec["trades"], rec["fills"]) == (3, 6)
    # prices that move make every held bar a (rebalancing) fill; entries and flips stay three
    moving = 100.0 * np.cumprod(1 + np.resize([0.01, -0.007, 0.004], len(frac)))[:, None]
    r = replay(moving, frac, np.array([0.0002]), 0.00055)
    rec = metrics(r, "5m")
    assert (rec["trades"], rec["fills"]) == (3, 8)  # every bar from entry to last exit
    # the run's record keeps the two apart, per fold and chained
    half = FoldResult(0, 1, rec, r, CostModel())
    panel = Panel(("AAA",), np.arange(10), moving, np.ones_like(moving),
                  np.zeros_like(moving, dtype=np.int8), np.ones_like(moving, dtype=bool))
    run = summarize_folds([half, half], panel, DataSpec(), CostModel())
    assert (run["trades"], run["fills"]) == (6, 2 * rec["fills"])
    assert [(f["trades"], f["fills"]) for f in run["folds"]] == [(3, rec["fills"])] * 2


FEE, SLIP, HALF = 0.00055, 0.0002, 0.002


def round_trip(moves: list[float], fold_half: list[float]) -> FoldResult:
    """A fold where each symbol goes 20% long at bar 0 and exits at bar 2, its price having
    moved by ``moves[i]``; the fold's cost model charges ``fold_half[i]`` as half spread."""
    close = np.array([[100.0] * len(moves), [100.0] * len(moves),
                      [100.0 * (1 + m) for m in moves]])
    frac = np.array([[0.2] * len(moves), [0.2] * len(moves), [0.0] * len(moves)])
    costs = CostModel(FEE, SLIP, {f"S{i}": h for i, h in enumerate(fold_half)})
    impact = np.array([costs.price_impact(f"S{i}") for i in range(len(moves))])
    r = replay(close, frac, impact, FEE)
    return FoldResult(0, 2, metrics(r, "5m"), r, costs)


def tiny_panel(n_sym: int) -> Panel:
    c = np.full((3, n_sym), 100.0)
    return Panel(tuple(f"S{i}" for i in range(n_sym)), np.arange(3), c, np.ones_like(c),
                 np.zeros_like(c, dtype=np.int8), np.ones_like(c, dtype=bool))


def test_costs_exclude_only_a_symbol_whose_edge_the_spread_turns_into_a_loss():
    """Finding 3 / costs: S0 beats fees and slippage (0.3% on a 0.15% round trip) but not the
    spread (0.4% more): excluded. S1 has no edge at all (0.1%): a poor symbol, not excluded.
    S2 beats everything (1%): traded."""
    moves = [0.003, 0.001, 0.01]
    fold = round_trip(moves, [HALF] * 3)
    net = fold.replay.gross - fold.replay.costs
    assert net[0] < 0 < fold.replay.gross[0] and net[1] < 0 and net[2] > 0
    run = summarize_folds([fold, fold], tiny_panel(3), DataSpec(),
                          CostModel(FEE, SLIP, {"S0": HALF, "S1": HALF, "S2": HALF}))
    assert set(run["costs"]["excluded"]) == {"S0"}
    assert "spread" in run["costs"]["excluded"]["S0"]


def test_exclusion_adds_back_the_spread_each_fold_was_charged_not_the_full_window_one():
    """Each fold is scored with spreads measured on its own training bars. A symbol charged no
    spread in its folds that loses to the fees alone has no edge the spread took: it is not
    excluded, whatever spread the whole window's estimate later shows."""
    fold = round_trip([0.001, 0.003], [0.0, HALF])
    run = summarize_folds([fold], tiny_panel(2), DataSpec(),
                          CostModel(FEE, SLIP, {"S0": HALF, "S1": HALF}))
    assert set(run["costs"]["excluded"]) == {"S1"}
    assert run["costs"]["half_spread"] == {"S0": HALF, "S1": HALF}  # the model's costs, reported


def test_sharpe_is_annualised_by_the_runs_timeframe(panel):
    """Finding 7: the same bars and targets annualised as 1h are sqrt(12) below 5m."""
    fit = lambda *a: Always((0.1, 0.2, 0.7))  # noqa: E731
    five = walk_forward(panel, SPEC, fit, folds=2, base=CostModel(), threshold=0.1)
    hour = walk_forward(panel, DataSpec(interval="1h", horizon=12, lookback=3), fit, folds=2,
                        base=CostModel(), threshold=0.1)
    assert (five["timeframe"], hour["timeframe"]) == ("5m", "1h")
    factor = math.sqrt(periods_per_year("1h") / periods_per_year("5m"))
    assert factor == pytest.approx(1 / math.sqrt(12))
    assert five["sharpe"] != 0
    assert hour["sharpe"] == pytest.approx(five["sharpe"] * factor, rel=1e-12)
    for a, b in zip(five["folds"], hour["folds"]):
        assert b["sharpe"] == pytest.approx(a["sharpe"] * factor, rel=1e-12)
        assert b["total_return"] == a["total_return"]
    assert hour["wf_score"] == pytest.approx(five["wf_score"] * factor, rel=1e-12)


def test_funding_is_charged_in_every_fold_and_a_long_book_pays_a_positive_rate(panel):
    """Funding in walk-forward scoring: an always-long model pays a large positive rate at each
    8-hourly bar, scoring lower than the same run without funding."""
    fit = lambda *a: Always((0.0, 0.1, 0.9))  # noqa: E731
    rates = np.zeros((panel.bars, len(panel.symbols)))
    close_ms = panel.open_time + 300_000
    rates[close_ms % (8 * 3_600_000) == 0] = 0.001
    without = walk_forward(panel, SPEC, fit, folds=3, base=CostModel(), threshold=0.1)
    funded = walk_forward(panel, SPEC, fit, folds=3, base=CostModel(), threshold=0.1,
                          funding=rates)
    assert without["funding"] == 0 and funded["funding"] > 0
    for a, b in zip(without["folds"], funded["folds"]):
        assert b["funding"] > 0 and b["total_return"] < a["total_return"]
        assert b["trades"] == a["trades"]
    assert funded["wf_score"] < without["wf_score"] and funded["sharpe"] < without["sharpe"]


def test_chained_sharpe_is_the_sharpe_of_the_test_blocks_returns():
    fold = round_trip([0.01, 0.003], [HALF, HALF])
    run = summarize_folds([fold, fold], tiny_panel(2), DataSpec(interval="1h"), CostModel())
    chained = np.concatenate([fold.replay.returns, fold.replay.returns])
    assert run["sharpe"] == pytest.approx(sharpe_ratio(chained, periods_per_year("1h")))
    assert run["timeframe"] == "1h"

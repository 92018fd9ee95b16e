"""Does the default training path promote a model where there is nothing to learn?

The appliance promotes on its own, so the question that matters is not "how good is the
validation score" but "would this model ever reach production". For one market and one seed
:func:`evaluate` answers it the way the appliance would:

1. **Lake.** The market's 5m candles, except a held-out tail (``tail_days``, by default the 7
   days of a shadow period), are written to a fresh lake (:class:`data.lake.Lake`, the
   ``interval=5m/.../data.parquet`` file that the lake's resample writes).
2. **Training.** :func:`models.training.train_run` on that lake: walk-forward validation with
   the trading sizing and costs (fee, slippage, Roll's half spread per fold), the refit, the
   ONNX export — the job the training service runs.
3. **Candidate gate.** :func:`appliance.services.shadow.pick_new_shadows` on the registered
   candidate, with the default room per group. Validation *ranks* candidates there, it does
   not filter them: a lone candidate is always shadowed. So validation alone never promotes.
4. **Shadow period.** The exported ONNX model (what serving runs) trades the held-out tail:
   its probabilities → the trading sizing → :mod:`models.paper_replay` at the costs the run
   recorded (fee, slippage and each symbol's Roll half spread measured on the training bars),
   the symbols validation excluded not traded, as the trading engine does. The book starts
   flat; its Sharpe, trades (entries and flips) and PSR form the :class:`ShadowRecord`.
5. **Verdict.** :func:`appliance.promotion.decide` with the default :class:`PromotionRules`
   against no prod model (the bar is a Sharpe of 0, no margin).

**Promoted** = passed the candidate gate *and* the shadow-period replay passed ``decide``.
Also recorded, as a stricter second look: ``wf_verdict``, the same rule applied to the
walk-forward test blocks chained (the run's own out-of-sample record, ``days`` = the blocks'
length), and ``tail_sharpe_free_spread``, the tail replayed with the half spread left out (what
the record would say if the bid-ask bounce were free, every symbol traded: the Bittrex case of
issue 10).

Markets (all pure given a seed): :func:`random_walk` (Gaussian log returns), :func:`permuted`
(a real set's bars in a random order: same return distribution and wicks, no serial structure)
and :func:`sim_drift` (the sim market, whose slow drift is learnable after costs).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from appliance.paths import StatePaths
from appliance.promotion import PromotionRules, ShadowRecord, decide
from appliance.services.shadow import pick_new_shadows
from data.lake import Lake, to_table, write_table_atomic
from models.costs import CostModel
from models.dataset import DataSpec, build_panel
from models.paper_replay import metrics as replay_metrics
from models.serving import OnnxModel
from models.training import DEFAULT_THRESHOLD, train_run
from models.validation import predict_block, score_block

BAR_MS = 300_000
DAY_MS = 86_400_000
BARS_PER_DAY = DAY_MS // BAR_MS
SHADOWS_PER_GROUP = 2  # ShadowConfig.max_shadows_per_group's default
FAST_RF = {"n_estimators": 24, "max_depth": 6, "min_samples_leaf": 50, "tree_batches": 1,
           "n_jobs": 1}
"""Small rf parameters: the default kind, sized for a test suite (a few seconds a run)."""


@dataclass(frozen=True)
class SeedRecord:
    market: str
    seed: int
    kind: str
    symbols: tuple[str, ...]
    wf_score: float  # the candidate's ranking score (folds' mean Sharpe less one std error)
    sharpe: float  # walk-forward test blocks chained
    trades: int  # entries and flips in those blocks
    psr: float
    wf_verdict: str  # decide() on the chained test blocks
    shortlisted: bool  # pick_new_shadows put it in shadow
    tail_days: float
    tail_sharpe: float
    tail_trades: int
    tail_psr: float
    excluded: int  # symbols validation reported and the shadow did not trade
    tail_sharpe_free_spread: float  # the tail, every symbol traded, no half spread charged
    verdict: str  # decide() on the shadow-period replay: promote / reject
    reason: str
    promoted: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- markets (5m candles, (n, 7) rows: open_time, open, high, low, close, volume, turnover) ----

def _bars(start_ms: int, logp: np.ndarray, rng: np.random.Generator, wick: float,
          volume: np.ndarray) -> np.ndarray:
    """Candles whose closes follow ``logp`` (n + 1 log prices, the first one the open)."""
    p = np.exp(logp)
    o, c = p[:-1], p[1:]
    hi = np.maximum(o, c) * np.exp(np.abs(rng.normal(0.0, wick, len(c))))
    lo = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0.0, wick, len(c))))
    t = start_ms + BAR_MS * np.arange(len(c), dtype=np.float64)
    return np.column_stack([t, o, hi, lo, c, volume, volume * c])


def random_walk(seed: int, *, symbols: int = 3, days: float = 20, vol: float = 0.003,
                start_ms: int = 1_704_067_200_000) -> dict[str, np.ndarray]:
    """Independent Gaussian random walks (``vol`` per 5m bar, no drift): nothing to learn."""
    rng = np.random.default_rng([seed, 1])
    n = int(days * BARS_PER_DAY)
    out = {}
    for i in range(symbols):
        logp = math.log(100.0 * (i + 1)) + np.concatenate(
            [[0.0], np.cumsum(rng.normal(0.0, vol, n))])
        out[f"RW{i}USDT"] = _bars(start_ms, logp, rng, vol / 2,
                                  rng.lognormal(10.0, 0.5, n))
    return out


def permuted(candles: Mapping[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Each symbol's bars in a random order: log return, wicks relative to the body and volume
    move together, timestamps stay. The return distribution (fat tails, zero bars) is the real
    one; autocorrelation, bid-ask bounce and volatility clustering are gone."""
    rng = np.random.default_rng([seed, 2])
    out = {}
    for symbol in sorted(candles):
        rows = np.asarray(candles[symbol], dtype=np.float64)
        o, h, l, c = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
        ret = np.log(c / o)
        up, down = np.log(h / np.maximum(o, c)), np.log(np.minimum(o, c) / l)
        k = rng.permutation(len(rows))
        logp = math.log(o[0]) + np.concatenate([[0.0], np.cumsum(ret[k])])
        p = np.exp(logp)
        po, pc = p[:-1], p[1:]
        vol = rows[k, 5]
        out[symbol] = np.column_stack([rows[:, 0], po, np.maximum(po, pc) * np.exp(up[k]),
                                       np.minimum(po, pc) * np.exp(-down[k]), pc, vol,
                                       vol * pc])
    return out


def sim_drift(seed: int, *, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
              days: int = 20, first_day: int = 10) -> dict[str, np.ndarray]:
    """The sim market's 1m candles (its regimes and slow drift: learnable after costs),
    aggregated to 5m as the lake's resample does."""
    from appliance.exchange.simmarket import EPOCH_MS, SimMarket

    market = SimMarket(seed)
    start = EPOCH_MS + first_day * DAY_MS
    out = {}
    for s in symbols:
        m = market.candles(s, start, start + days * DAY_MS)
        if len(m) % 5:
            raise ValueError(f"{s}: the sim market has gaps in days {first_day}..")
        b = m.reshape(-1, 5, 7)
        out[s] = np.column_stack([b[:, 0, 0], b[:, 0, 1], b[:, :, 2].max(axis=1),
                                  b[:, :, 3].min(axis=1), b[:, -1, 4], b[:, :, 5].sum(axis=1),
                                  b[:, :, 6].sum(axis=1)])
    return out


# -- one seed --------------------------------------------------------------------------------

class _Served:
    """An exported model as validation's ``predict_block`` calls it."""

    def __init__(self, path: Path) -> None:
        self.onnx = OnnxModel(path)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.onnx.predict(x)


def write_lake(lake: Lake, candles: Mapping[str, np.ndarray]) -> None:
    """5m candles into the lake, where its resample puts them."""
    for symbol, rows in candles.items():
        write_table_atomic(to_table(np.asarray(rows)), lake.dir("5m", symbol) / "data.parquet")


def _verdict(days: float, sharpe: float, trades: int, psr: float, model_id: str,
             rules: PromotionRules) -> tuple[str, str]:
    # each seed is its group's only candidate: one trial, where the DSR is the PSR against 0
    d = decide(ShadowRecord(model_id, days, sharpe, trades, psr, 1, psr), None,
               deploys_frozen=False, prod_pinned=False, rules=rules)
    return d.action, d.reason


def evaluate(state_dir: Path, market: str, candles: Mapping[str, np.ndarray], seed: int, *,
             kind: str = "rf", params: Mapping[str, Any] | None = None, folds: int = 4,
             tail_days: float = 7.0, rules: PromotionRules | None = None) -> SeedRecord:
    """Train on ``candles`` less the tail, shadow on the tail, judge (module docstring).
    ``state_dir`` must be fresh per call (training is idempotent by run id)."""
    rules = rules or PromotionRules()
    params = dict(FAST_RF if params is None and kind == "rf" else params or {})
    ends = [int(rows[-1, 0]) for rows in candles.values()]
    cut_ms = min(ends) + BAR_MS - int(tail_days * DAY_MS)
    write_lake(Lake(StatePaths(state_dir).lake),
               {s: rows[rows[:, 0] < cut_ms] for s, rows in candles.items()})
    run_id = f"honesty-{market}-{kind}-{seed}"
    result = train_run(Path(state_dir), run_id, f"honesty-{market}", sorted(candles), kind,
                       params, seed=seed, folds=folds)
    m = result["metrics"]
    model = {"model_id": f"m-{run_id}", "group": result["group"], "mode": "candidate",
             "metrics": m}
    shortlisted = bool(pick_new_shadows([model], SHADOWS_PER_GROUP))
    wf_days = sum(f["bars"] for f in m["folds"]) / BARS_PER_DAY
    wf_verdict, _ = _verdict(wf_days, m["sharpe"], m["trades"], m["psr"], model["model_id"],
                             rules)

    spec = DataSpec(interval="5m", horizon=int(result["params"]["horizon"]),
                    lookback=int(result["params"].get("lookback", 1)), seed=seed)
    panel = build_panel(dict(candles), spec)
    rows = np.flatnonzero(panel.open_time >= cut_ms)
    onnx = StatePaths(state_dir).resolve_stored(result["onnx_path"])
    probs = predict_block(_Served(onnx), panel, rows)
    recorded = m["costs"]
    costs = CostModel(recorded["taker_fee"], recorded["slippage"], recorded["half_spread"])
    free = replay_metrics(score_block(panel, rows, probs, costs.with_spreads({}),
                                      DEFAULT_THRESHOLD), "5m")
    excluded = set(recorded.get("excluded") or {})
    for i, s in enumerate(panel.symbols):
        if s in excluded:  # reported, not traded (the trading engine skips them)
            probs[:, i] = (0.0, 1.0, 0.0)
    tail = replay_metrics(score_block(panel, rows, probs, costs, DEFAULT_THRESHOLD), "5m")
    # market days in shadow, as the shadow desk counts them (a missing bar does not shorten it)
    tail_days_run = (int(panel.open_time[rows[-1]]) + BAR_MS - cut_ms) / DAY_MS
    verdict, reason = _verdict(tail_days_run, tail["sharpe"], tail["trades"], tail["psr"],
                               model["model_id"], rules)
    return SeedRecord(
        market=market, seed=seed, kind=kind, symbols=tuple(panel.symbols),
        wf_score=float(m["wf_score"]), sharpe=float(m["sharpe"]), trades=int(m["trades"]),
        psr=float(m["psr"]), wf_verdict=wf_verdict, shortlisted=shortlisted,
        tail_days=round(tail_days_run, 3), tail_sharpe=float(tail["sharpe"]),
        tail_trades=int(tail["trades"]), tail_psr=float(tail["psr"]),
        excluded=len(excluded), tail_sharpe_free_spread=float(free["sharpe"]),
        verdict=verdict, reason=reason,
        promoted=shortlisted and verdict == "promote")


def summarize(records: list[SeedRecord]) -> dict[str, Any]:
    """Counts per market: runs, promoted, the promotion rate, and how many passed the rule
    on their walk-forward test blocks."""
    out: dict[str, Any] = {}
    for market in dict.fromkeys(r.market for r in records):
        mine = [r for r in records if r.market == market]
        promoted = sum(r.promoted for r in mine)
        out[market] = {"runs": len(mine), "promoted": promoted,
                       "promotion_rate": promoted / len(mine),
                       "wf_would_promote": sum(r.wf_verdict == "promote" for r in mine)}
    return out

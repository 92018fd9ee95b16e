"""Feature drift: how far live feature values have moved from what a model was trained on.

Pure functions only; the ``drift`` service (:mod:`appliance.services.drift`) feeds them.

* **Reference** (at training time, :func:`build_reference`): per feature, a histogram over the
  training rows. The bin edges are the training data's quantiles (``bins`` equal-mass bins; the
  quantiles are training values themselves, and ties are merged, so a feature with few
  distinct values gets fewer bins), the outer bins are open-ended
  (``(-inf, e0]`` and ``(e_last, inf)``: a live value beyond anything seen in training still
  lands somewhere), and every bin gets a Laplace pseudo-count ``alpha`` so that no bin has zero
  probability (the KL divergence would be infinite for the first live value there).
* **KL** (live, :func:`kl_divergence`): the live window's values binned on the reference's
  edges, smoothed the same way, and ``D_KL(live || reference) = sum p log(p / q)``. For the
  same distribution it is about ``(bins - 1) / (2 n)`` (the estimator's bias: 0.01 for 20 bins
  and a 3-day window of 5m bars), a shifted mean or a doubled variance gives tenths to units.
* **Aggregate** (:func:`aggregate`): the mean over the market features. The mean keeps the
  scale of one feature's KL whatever the number of features, and a single noisy feature moves
  it by only 1/F of its own swing, so the 3σ rule over the aggregate reacts to a change that
  shows in several features (a regime break moves the returns, volatilities, ATR and band
  width together) rather than to one feature's noise; the notification names the features
  that moved most, so a single-feature change is still visible there. The calendar features
  (time of day and week) are left out of the drift entirely: their distribution over a window
  is set by the window's dates, not by the market (a 3-day window sees 3 of 7 weekdays).
* **The 3σ rule** (:func:`three_sigma`): a symbol has drifted when its aggregate is more than
  ``k`` (3) standard deviations above the mean of its own rolling history (the points before
  it, over ``drift.history``), for ``persist`` (6) passes in a row; no verdict before
  ``min_history`` points. Three choices, each measured on the sim market
  (``methtrader bench drift --false-alarms``: 30 stationary days after a month of passes, and
  the same market with returns x3 from day 20, per symbol/seed pair; 5m, 3-day window,
  14-day history):

  - *log scale*: a KL is positive and right-skewed and its swings grow with its level (a calm
    week at 0.04 ± 0.005, a volatile one at 0.15 ± 0.04); on the raw scale the rule fired on
    stationary days on every pair tried (7 to 99 hours in 30 days).
  - *a floor under the deviation* (``floor``, 0.4 in log units, ``drift.sigma_floor``): an
    hourly aggregate over a 3-day window is smooth, so a calm fortnight gives a deviation of
    0.1-0.2 and the line lands within an ordinary volatile spell. With the floor the line is
    at least e^1.2 (x3.3) above the history's typical level.
  - *persistence* (``persist`` passes above their lines, ``drift.persist``): one pass over the
    line is usually a single burst of returns entering the window; a break keeps it there.

  Median/MAD instead of mean/std and a longer history (21 or 29 days) were tried and did worse
  (more false hours for the same detections). Figures (hours fired on 30 stationary days;
  hours from the shock to drift), the first 8 pairs chosen on, the last 4 held out:

  ==============  ===========  =========================  =========================
  rule            pairs quiet  shocks caught within 72 h  shocks never caught
  ==============  ===========  =========================  =========================
  log, 3σ         6 of 12      9 of 12 (12-69 h)          DOGE/11, LTC/4, BCH/8
  + floor, x6     11 of 12     8 of 12 (28-71 h)          DOGE/11, LINK/13, LTC/4, BCH/8
  ==============  ===========  =========================  =========================

  Over the grid tried (history 14 or 21 days, mean/std or median/MAD, floor 0.3-0.6, k 2.5-4,
  persist 1-12) nothing else kept 11 pairs quiet with more than 8 caught; keeping all 12 quiet
  catches at most 3; letting LINK/13 and LTC/4 fire (71 and 59 h; k 2.5, persist 3) catches 11.
  The limit is the sim itself: its daily volatility is a GARCH process clipped at 4x the base,
  so a stationary market has spells as large as the planted x3 break. LTC/4 (seed 4) has one
  (the aggregate up e^2.1 in three days) and the rule still fires on it for 41 hours; a
  symbol whose fortnight before the break held such a spell (DOGE/11, LINK/13, LTC/4) has a
  history too wide for the break to cross. Against the training reference such a spell is a
  real move of the features; retraining on it is defensible, but it is not a regime break.
  A model retrained the day the judged days begin, its history seeded from the days it was
  trained on (:func:`past_passes`), stays as quiet: 11 of 12 (LTC/4 39 h).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 20
ALPHA = 1.0  # Laplace pseudo-count per bin
K_SIGMA = 3.0
CALENDAR = frozenset({"tod_sin", "tod_cos", "dow_sin", "dow_cos"})
STD_FLOOR = 1e-9  # a perfectly flat history still needs a finite line
SIGMA_FLOOR = 0.4  # least deviation of log(aggregate) the line is drawn with: drift.sigma_floor
PERSIST = 6  # passes in a row above the line before it is drift (drift.persist)

WARMING, OK, DRIFT = "warming", "ok", "drift"


def drift_features(names: Sequence[str]) -> tuple[str, ...]:
    """The features drift is measured on: every one but the calendar's."""
    return tuple(n for n in names if n not in CALENDAR)


@dataclass(frozen=True)
class Histogram:
    """One feature's reference: interior bin edges (increasing; ``len(edges) + 1`` bins, the
    outer two open-ended) and the smoothed probability of each bin."""

    edges: np.ndarray
    probs: np.ndarray
    count: int  # training values it was built from

    @property
    def bins(self) -> int:
        return len(self.probs)

    def to_json(self) -> dict[str, Any]:
        return {"edges": [float(e) for e in self.edges], "probs": [float(p) for p in self.probs],
                "count": int(self.count)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Histogram":
        edges = np.asarray(data["edges"], dtype=np.float64)
        probs = np.asarray(data["probs"], dtype=np.float64)
        if len(probs) != len(edges) + 1 or not np.all(probs > 0):
            raise ValueError("a reference histogram needs len(edges) + 1 positive probabilities")
        return cls(edges, probs, int(data.get("count", 0)))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many finite ``values`` fall in each bin ``(e[i-1], e[i]]`` (outer bins open)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1)


def smoothed(counts: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    return (counts + alpha) / (counts.sum() + alpha * len(counts))


def reference_histogram(values: np.ndarray, bins: int = BINS, alpha: float = ALPHA) -> Histogram:
    """A feature's reference from its training values (NaN ignored; at least one finite)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        raise ValueError("no finite training values to build a reference from")
    edges = np.unique(np.quantile(v, np.arange(1, bins) / bins, method="inverted_cdf"))
    return Histogram(edges, smoothed(bin_counts(v, edges), alpha), len(v))


def build_reference(features: np.ndarray, names: Sequence[str], bins: int = BINS,
                    alpha: float = ALPHA) -> dict[str, Histogram]:
    """Every drift feature's reference from training rows ``features`` (n, len(names))."""
    f = np.asarray(features, dtype=np.float64).reshape(-1, len(names))
    out = {}
    for j, name in enumerate(names):
        if name in CALENDAR or not np.isfinite(f[:, j]).any():
            continue
        out[name] = reference_histogram(f[:, j], bins, alpha)
    return out


def reference_to_json(ref: Mapping[str, Histogram]) -> dict[str, dict[str, Any]]:
    return {name: h.to_json() for name, h in ref.items()}


def reference_from_json(data: Mapping[str, Mapping[str, Any]]) -> dict[str, Histogram]:
    return {name: Histogram.from_json(h) for name, h in data.items()}


def kl_divergence(values: np.ndarray, ref: Histogram, alpha: float = ALPHA) -> float:
    """``D_KL(live || reference)`` of live ``values`` on the reference's bins (NaN ignored;
    NaN when no value is finite)."""
    counts = bin_counts(values, ref.edges)
    if not counts.sum():
        return math.nan
    p = smoothed(counts, alpha)
    return float(np.sum(p * np.log(p / ref.probs)))


@dataclass(frozen=True)
class Compiled:
    """A reference laid out for a whole window at once: per referenced feature (in window
    column order) its interior edges and its log probabilities padded with 0 to the widest
    feature's bins, so one pass scores every feature in a few vectorised steps."""

    names: tuple[str, ...]
    columns: np.ndarray  # (F,) their columns in the window
    edges: tuple[np.ndarray, ...]  # per feature
    log_q: np.ndarray  # (F, B)
    real: np.ndarray  # (F, B) which bins a feature has


def compile_reference(ref: Mapping[str, Histogram], names: Sequence[str]) -> Compiled:
    picked = [(j, n) for j, n in enumerate(names) if n in ref]
    width = max((ref[n].bins for _, n in picked), default=1)
    log_q = np.zeros((len(picked), width))
    real = np.zeros((len(picked), width), dtype=bool)
    for i, (_, n) in enumerate(picked):
        h = ref[n]
        log_q[i, :h.bins] = np.log(h.probs)
        real[i, :h.bins] = True
    return Compiled(tuple(n for _, n in picked), np.array([j for j, _ in picked], dtype=int),
                    tuple(ref[n].edges for _, n in picked), log_q, real)


def feature_kls(window: np.ndarray, names: Sequence[str],
                ref: Mapping[str, Histogram] | Compiled, alpha: float = ALPHA
                ) -> dict[str, float]:
    """KL of each referenced feature over a live window (n, len(names)) of feature rows, the
    same figures as :func:`kl_divergence` feature by feature (pass a :class:`Compiled`
    reference to skip laying it out again)."""
    return feature_kls_many([window], names, ref, alpha)[0]


def feature_kls_many(windows: Sequence[np.ndarray], names: Sequence[str],
                     ref: Mapping[str, Histogram] | Compiled, alpha: float = ALPHA
                     ) -> list[dict[str, float]]:
    """:func:`feature_kls` of several symbols' windows against one reference (a group's
    symbols share their model's), binned together: one comparison per feature for all of them."""
    c = ref if isinstance(ref, Compiled) else compile_reference(ref, names)
    if not len(c.names) or not windows:
        return [{} for _ in windows]
    parts = [np.asarray(w, dtype=np.float64).reshape(-1, len(names))[:, c.columns]
             for w in windows]
    f, width = c.real.shape
    x = np.full((f, len(parts), max(len(p) for p in parts)), np.nan)  # NaN-padded
    for s, part in enumerate(parts):
        x[:, s, :len(part)] = part.T
    finite = np.count_nonzero(np.isfinite(x), axis=2)  # (F, S)
    counts = np.zeros((len(parts), f, width), dtype=np.int64)
    for i, e in enumerate(c.edges):  # values <= each edge (NaN never is), then bin by bin
        le = np.count_nonzero(x[i][:, None, :] <= e[None, :, None], axis=2)  # (S, B_i - 1)
        counts[:, i, :len(e) + 1] = np.diff(le, axis=1, prepend=0, append=finite[i][:, None])
    n = counts.sum(axis=2)
    p = np.where(c.real, (counts + alpha) / (n + alpha * c.real.sum(axis=1))[:, :, None], 1.0)
    kl = np.where(c.real, p * (np.log(p) - c.log_q), 0.0).sum(axis=2)
    return [{name: float(v) for name, v, m in zip(c.names, kl[s], n[s]) if m}
            for s in range(len(parts))]


def aggregate(kls: Mapping[str, float]) -> float:
    """A symbol's drift: the mean of its features' KL (see the module docstring for why)."""
    values = [v for v in kls.values() if math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


@dataclass(frozen=True)
class Verdict:
    state: str  # WARMING (fewer than min_history points), OK or DRIFT
    points: int
    mean: float | None = None  # of log(aggregate) over the history
    std: float | None = None  # its deviation, at least the floor
    line: float | None = None  # exp(mean + k * std): an aggregate above it is above the line
    zscore: float | None = None
    above: int = 0  # passes in a row above their lines, this one included

    @property
    def fired(self) -> bool:
        return self.state == DRIFT


def _z(logs: np.ndarray, value: float, floor: float) -> tuple[float, float, float]:
    mean = float(logs.mean())
    std = max(float(logs.std(ddof=1)), floor, STD_FLOOR)
    return mean, std, (value - mean) / std


def three_sigma(history: Sequence[float], value: float, *, min_history: int,
                k: float = K_SIGMA, floor: float = SIGMA_FLOOR, persist: int = PERSIST,
                span: int | None = None) -> Verdict:
    """The user's rule: ``value`` against the mean and standard deviation of ``history`` (the
    symbol's earlier aggregates over the history window, not including ``value``), taken on
    the log scale, the deviation never below ``floor`` (log units), and drift only when this
    pass and the ``persist - 1`` before it were all above their lines; see the module
    docstring for why. Each pass is judged against the ``span`` points before it (default:
    all of ``history``), so a caller that keeps ``span + persist - 1`` points judges the
    earlier passes on full histories too.
    ``mean``, ``std`` and ``zscore`` are in log units, ``line`` is back in KL units."""
    everything = np.log([x for x in history if math.isfinite(x) and x > 0])
    span = len(everything) if span is None else span
    logs = everything[max(0, len(everything) - span):]
    if len(logs) < max(2, min_history) or not math.isfinite(value) or value <= 0:
        return Verdict(WARMING, len(logs))
    mean, std, z = _z(logs, math.log(value), floor)
    above = 0
    if z > k:
        above = 1
        while above < persist and len(everything) - above >= 2:
            i = len(everything) - above  # an earlier pass, against the points before it
            if _z(everything[max(0, i - span):i], everything[i], floor)[2] <= k:
                break
            above += 1
    state = DRIFT if above >= persist else OK
    return Verdict(state, len(logs), mean, std, math.exp(mean + k * std), z, above)


def moved_most(current: Mapping[str, float], history: Sequence[Mapping[str, float]],
               n: int = 3) -> list[str]:
    """The ``n`` features whose KL rose most above their own mean over ``history`` (their KL
    itself when there is no history)."""
    def rise(name: str) -> float:
        past = [h[name] for h in history if name in h and math.isfinite(h[name])]
        return current[name] - (float(np.mean(past)) if past else 0.0)

    return sorted((f for f in current if math.isfinite(current[f])), key=lambda f: -rise(f))[:n]


@dataclass(frozen=True)
class Pass:
    """One symbol's drift at one pass."""

    kls: dict[str, float]  # per feature
    kl: float  # the aggregate
    verdict: Verdict
    moved: list[str]  # the features that rose most above their own history


def drift_pass(kls: dict[str, float], history: Sequence[tuple[float, Mapping[str, float]]],
               *, min_history: int, k: float = K_SIGMA, floor: float = SIGMA_FLOOR,
               persist: int = PERSIST, span: int | None = None, moved: int = 3
               ) -> Pass | None:
    """A symbol's pass from its features' KL (:func:`feature_kls`): the aggregate, and the rule
    against ``history`` (earlier passes' aggregate and per-feature KL, oldest first). None when
    no feature has a finite KL. ``moved`` names the features that rose most above their own
    history when the rule fires, else simply those with the largest KL (cheaper: the history
    is only read feature by feature when it matters)."""
    kl = aggregate(kls)
    if not math.isfinite(kl):
        return None
    verdict = three_sigma([h[0] for h in history], kl, min_history=min_history, k=k,
                          floor=floor, persist=persist, span=span)
    past = [h[1] for h in history][-(span or len(history)):] if verdict.fired else []
    return Pass(kls, kl, verdict, moved_most(kls, past, moved))


def past_passes(rows: np.ndarray, close_ms: np.ndarray, names: Sequence[str],
                ref: Mapping[str, Histogram] | Compiled, pass_ms: Sequence[int], window: int,
                alpha: float = ALPHA, chunk: int = 48) -> list[tuple[int, float, dict[str, float]]]:
    """The passes a symbol would have had at ``pass_ms`` against ``ref``, from its feature
    ``rows`` (n, len(names); NaN rows where not warm) of bars closing at ``close_ms``: each
    over the last ``window`` rows closed by then, as the live window is. (ts_ms, aggregate,
    per-feature KL), oldest first; a time with fewer than ``window`` rows closed by then (a
    short window is a noisy KL, and would widen the history), or no finite KL, is left out.

    The drift service seeds a symbol's history with them when a model starts serving it (or
    at start, when the stored history is short), so the rule has a verdict at once and judges
    a new model against its own reference rather than starting blind."""
    c = ref if isinstance(ref, Compiled) else compile_reference(ref, names)
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(names))
    ok = ~np.all(np.isnan(rows), axis=1)
    rows, close_ms = rows[ok], np.asarray(close_ms)[ok]
    times = [int(t) for t in pass_ms]
    ends = np.searchsorted(close_ms, times, side="right")
    picked = [(t, e) for t, e in zip(times, ends) if e >= window]
    out = []
    for i in range(0, len(picked), chunk):
        part = picked[i:i + chunk]
        kls = feature_kls_many([rows[e - window:e] for _, e in part], names, c, alpha)
        for (t, _), k in zip(part, kls):
            agg = aggregate(k)
            if math.isfinite(agg):
                out.append((t, agg, k))
    return out

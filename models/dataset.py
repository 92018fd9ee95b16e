"""Training data for a symbol group, from the lake (pure given the candle arrays).

A group's symbols are aligned on the bars they all have (the same timeline), because the group
trades as one book: validation replays every symbol's targets together, as the paper desk and
the prod book do. For each symbol: features (the same ``models.features`` code as live trading),
fee-aware labels (:mod:`models.labels`), the per-bar volatility the sizing uses, and which rows
are usable (features warm, a label exists).

Samples for a model are windows of ``lookback`` feature rows, gathered only for the rows asked
for (``Panel.samples``): the full window tensor of a long history never exists in memory. The
training windows of all symbols are pooled (the features are scale-free, so a $0.1 coin and a
$40k coin mix).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from appliance.paths import StatePaths
from data.lake import Lake
from models.features import FS1, FeatureSet, compute
from models.labels import UNLABELLED, label_classes
from models.reward import sample_weights
from models.walkforward import NotEnoughHistory

VOL_FEATURE = "vol_12"  # the sizing's per-bar volatility, in every feature set


@dataclass(frozen=True)
class DataSpec:
    interval: str = "5m"
    horizon: int = 12  # bars ahead the label looks (an hour of 5m bars)
    lookback: int = 1  # feature rows per sample
    max_train_samples: int = 200_000
    seed: int = 0


@dataclass
class Panel:
    """A group's aligned bars: T bars × S symbols."""

    symbols: tuple[str, ...]
    open_time: np.ndarray  # (T,)
    close: np.ndarray  # (T, S)
    vol: np.ndarray  # (T, S) the sizing's per-bar volatility (NaN before warm-up)
    labels: np.ndarray  # (T, S) int8, UNLABELLED where none
    usable: np.ndarray  # (T, S) features warm
    features: list[np.ndarray] = field(default_factory=list)  # per symbol (T, F) float32
    lookback: int = 1
    names: tuple[str, ...] = FS1.names  # the model's input columns, in order
    weights: np.ndarray | None = None  # (T, S) sample weights (models.reward); None: equal

    @property
    def bars(self) -> int:
        return len(self.open_time)

    def windows(self, s: int) -> np.ndarray:
        """(T, lookback, F) view of symbol ``s``'s feature windows (NaN-padded at the start)."""
        return windows(self.features[s], self.lookback)

    def samples(self, rows: np.ndarray, *, labelled: bool = True,
                limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Pooled (x, y) of every symbol's usable rows among ``rows`` (bar indices), oldest
        first per symbol; at most ``limit`` samples, drawn at random when there are more."""
        picks = []
        for s in range(len(self.symbols)):
            ok = self.usable[rows, s]
            if labelled:
                ok &= self.labels[rows, s] != UNLABELLED
            picks.append((s, rows[ok]))
        total = sum(len(r) for _, r in picks)
        if self.weights is not None and labelled and total:
            return self._weighted(picks, total if limit is None else min(total, limit), seed)
        keep = None
        if limit is not None and total > limit:
            keep = np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))
        xs, ys, offset = [], [], 0
        for s, r in picks:
            if keep is not None:
                mine = keep[(keep >= offset) & (keep < offset + len(r))] - offset
                offset += len(r)
                r = r[mine]
            xs.append(self.windows(s)[r])
            ys.append(self.labels[r, s])
        x = np.concatenate(xs) if xs else np.zeros((0, self.lookback, len(self.names)))
        return x.astype(np.float32, copy=False), np.concatenate(ys).astype(np.int64)

    def _weighted(self, picks: list[tuple[int, np.ndarray]], count: int, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` samples drawn with replacement, each with probability proportional to
        its weight (a zero-weight row is never drawn), oldest first per symbol."""
        assert self.weights is not None
        w = np.concatenate([self.weights[r, s] for s, r in picks])
        w = np.where(np.isfinite(w), w, 0.0)
        if not w.sum() > 0:
            w = np.ones_like(w)
        draw = np.sort(np.random.default_rng(seed).choice(len(w), count, p=w / w.sum()))
        xs, ys, offset = [], [], 0
        for s, r in picks:
            mine = draw[(draw >= offset) & (draw < offset + len(r))] - offset
            offset += len(r)
            xs.append(self.windows(s)[r[mine]])
            ys.append(self.labels[r[mine], s])
        return (np.concatenate(xs).astype(np.float32, copy=False),
                np.concatenate(ys).astype(np.int64))


def windows(features: np.ndarray, lookback: int) -> np.ndarray:
    """(n, f) → (n, lookback, f): row i holds feature rows i-lookback+1 .. i (NaN-padded)."""
    n, f = features.shape
    padded = np.vstack([np.full((lookback - 1, f), np.nan, dtype=features.dtype), features])
    return sliding_window_view(padded, (lookback, f))[:, 0]


def build_panel(candles: dict[str, np.ndarray], spec: DataSpec, *,
                taker_fee: float | None = None, slippage: float | None = None,
                margin: float = 0.0, feature_set: FeatureSet = FS1,
                columns: Sequence[str] | None = None, risk: str = "none") -> Panel:
    """Align a group's candles on their common bars and derive everything a run needs.

    ``feature_set`` computes the features; ``columns`` (default: all of them, in the set's
    order) are the model's inputs. ``margin`` widens the labels' dead band
    (:func:`models.labels.dead_band`); ``risk`` weights the samples (:mod:`models.reward`).
    """
    names = tuple(feature_set.names if columns is None else columns)
    unknown = sorted(set(names) - set(feature_set.names))
    if unknown or not names:
        raise ValueError(f"columns {unknown or '[]'} are not features of {feature_set.id}")
    pick = [feature_set.names.index(n) for n in names]
    vol_at = feature_set.names.index(VOL_FEATURE)
    symbols = tuple(s for s in sorted(candles) if len(candles[s]) >= 200)
    if not symbols:
        raise NotEnoughHistory("no symbol of the group has enough history to train on "
                               f"({spec.interval} candles: 200 needed)")
    common = candles[symbols[0]][:, 0]
    for s in symbols[1:]:
        common = np.intersect1d(common, candles[s][:, 0], assume_unique=True)
    if len(common) < 200:
        raise NotEnoughHistory(f"the group's symbols share only {len(common)} {spec.interval} "
                               "bars (200 needed)")
    aligned = {s: candles[s][np.isin(candles[s][:, 0], common)] for s in symbols}
    cost: dict[str, float] = {"margin": margin}
    if taker_fee is not None:
        cost["taker_fee"] = taker_fee
    if slippage is not None:
        cost["slippage"] = slippage
    feats, labels, usable, vol, weights = [], [], [], [], []
    for s in symbols:
        c = aligned[s]
        full = compute(feature_set, c)
        f = np.ascontiguousarray(full[:, pick], dtype=np.float32)
        feats.append(f)
        labels.append(label_classes(c[:, 4], spec.horizon, **cost))
        ok = np.isfinite(windows(f, spec.lookback)).all(axis=(1, 2))
        usable.append(ok)
        vol.append(full[:, vol_at].astype(np.float32).astype(np.float64))
        weights.append(sample_weights(c[:, 4], spec.horizon, risk))
    return Panel(symbols, common.astype(np.int64),
                 np.column_stack([aligned[s][:, 4] for s in symbols]),
                 np.column_stack(vol), np.column_stack(labels), np.column_stack(usable),
                 feats, spec.lookback, names,
                 None if risk == "none" else np.column_stack(weights))


def load_group_candles(lake: Lake, symbols: list[str], interval: str) -> dict[str, np.ndarray]:
    return {s: arr for s in symbols if len(arr := lake.read(interval, s))}


def dataset_sha256(lake: Lake, symbols: list[str], interval: str) -> str:
    """One hash over the group's datasets (the manifests' sha256, in symbol order)."""
    digest = hashlib.sha256()
    for symbol in sorted(symbols):
        m = lake.manifest(symbol, interval)
        if m is not None:
            digest.update(f"{symbol}:{m.sha256}".encode())
    return digest.hexdigest()


def lake_at(state_dir: Path) -> Lake:
    return Lake(StatePaths(state_dir).lake)

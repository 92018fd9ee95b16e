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
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from appliance.paths import StatePaths
from data.lake import Lake
from models.features import FEATURE_NAMES, compute_features
from models.labels import UNLABELLED, label_classes

VOL = FEATURE_NAMES.index("vol_12")


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
        x = np.concatenate(xs) if xs else np.zeros((0, self.lookback, len(FEATURE_NAMES)))
        return x.astype(np.float32, copy=False), np.concatenate(ys).astype(np.int64)


def windows(features: np.ndarray, lookback: int) -> np.ndarray:
    """(n, f) → (n, lookback, f): row i holds feature rows i-lookback+1 .. i (NaN-padded)."""
    n, f = features.shape
    padded = np.vstack([np.full((lookback - 1, f), np.nan, dtype=features.dtype), features])
    return sliding_window_view(padded, (lookback, f))[:, 0]


def build_panel(candles: dict[str, np.ndarray], spec: DataSpec, *,
                taker_fee: float | None = None, slippage: float | None = None) -> Panel:
    """Align a group's candles on their common bars and derive everything a run needs."""
    symbols = tuple(s for s in sorted(candles) if len(candles[s]) >= 200)
    if not symbols:
        raise ValueError("no symbol of the group has enough history to train on "
                         f"({spec.interval} candles)")
    common = candles[symbols[0]][:, 0]
    for s in symbols[1:]:
        common = np.intersect1d(common, candles[s][:, 0], assume_unique=True)
    if len(common) < 200:
        raise ValueError(f"the group's symbols share only {len(common)} {spec.interval} bars")
    aligned = {s: candles[s][np.isin(candles[s][:, 0], common)] for s in symbols}
    cost = {} if taker_fee is None else {"taker_fee": taker_fee}
    if slippage is not None:
        cost["slippage"] = slippage
    feats, labels, usable, vol = [], [], [], []
    for s in symbols:
        c = aligned[s]
        f = compute_features(c).astype(np.float32)
        feats.append(f)
        labels.append(label_classes(c[:, 4], spec.horizon, **cost))
        ok = np.isfinite(windows(f, spec.lookback)).all(axis=(1, 2))
        usable.append(ok)
        vol.append(f[:, VOL].astype(np.float64))
    return Panel(symbols, common.astype(np.int64),
                 np.column_stack([aligned[s][:, 4] for s in symbols]),
                 np.column_stack(vol), np.column_stack(labels), np.column_stack(usable),
                 feats, spec.lookback)


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

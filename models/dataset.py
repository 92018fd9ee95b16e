"""Training data for a symbol group, from the lake (pure given the candle arrays).

Each symbol's 5m candles become fs1 features and fee-aware labels; rows inside the feature
warm-up or without a forward return are dropped. Each symbol's series is split in time: the
first ``1 - val_fraction`` trains, the rest validates, with an embargo of ``horizon + lookback``
bars between them so no training label looks into the validation period. Training windows of
all symbols are pooled (the features are scale-free, so a $0.1 coin and a $40k coin mix);
validation stays per symbol, because it is scored by backtesting each symbol's own bars.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from data.lake import Lake
from models.features import compute_features
from models.labels import UNLABELLED, label_classes


@dataclass(frozen=True)
class DataSpec:
    interval: str = "5m"
    horizon: int = 12  # bars ahead the label looks (an hour of 5m bars)
    lookback: int = 1  # feature rows per sample
    val_fraction: float = 0.2
    max_train_samples: int = 200_000
    seed: int = 0


@dataclass
class SymbolValidation:
    symbol: str
    x: np.ndarray  # (n, lookback, n_features) float32
    close: np.ndarray  # (n,) closes of the same bars
    open_time: np.ndarray  # (n,)


@dataclass
class GroupData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    validation: list[SymbolValidation] = field(default_factory=list)
    symbols: tuple[str, ...] = ()


def windows(features: np.ndarray, lookback: int) -> np.ndarray:
    """(n, f) → (n, lookback, f): row i holds feature rows i-lookback+1 .. i (NaN-padded)."""
    n, f = features.shape
    padded = np.vstack([np.full((lookback - 1, f), np.nan), features])
    return sliding_window_view(padded, (lookback, f))[:, 0]


def symbol_arrays(candles: np.ndarray, spec: DataSpec) -> tuple[np.ndarray, np.ndarray,
                                                                   np.ndarray]:
    """Windows, labels and a validity mask for one symbol's candles."""
    feats = compute_features(candles)
    x = windows(feats, spec.lookback)
    y = label_classes(candles[:, 4], spec.horizon)
    valid = np.isfinite(x).all(axis=(1, 2)) & (y != UNLABELLED)
    return x.astype(np.float32), y, valid


def build_group_data(candles: dict[str, np.ndarray], spec: DataSpec) -> GroupData:
    xs, ys, xv, yv, validation = [], [], [], [], []
    embargo = spec.horizon + spec.lookback
    for symbol in sorted(candles):
        c = candles[symbol]
        if len(c) < 200:
            continue
        x, y, valid = symbol_arrays(c, spec)
        split = int(len(c) * (1 - spec.val_fraction))
        train_idx = np.flatnonzero(valid[:max(0, split - embargo)])
        val_idx = split + np.flatnonzero(valid[split:])
        if len(train_idx) == 0 or len(val_idx) == 0:
            continue
        xs.append(x[train_idx])
        ys.append(y[train_idx])
        xv.append(x[val_idx])
        yv.append(y[val_idx])
        ok = split + np.flatnonzero(np.isfinite(x[split:]).all(axis=(1, 2)))
        validation.append(SymbolValidation(symbol, x[ok], c[ok, 4], c[ok, 0]))
    if not xs:
        raise ValueError("no symbol of the group has enough history to train on "
                         f"({spec.interval} candles after the feature warm-up)")
    x_train, y_train = np.concatenate(xs), np.concatenate(ys)
    if len(x_train) > spec.max_train_samples:
        keep = np.sort(np.random.default_rng(spec.seed).choice(
            len(x_train), spec.max_train_samples, replace=False))
        x_train, y_train = x_train[keep], y_train[keep]
    return GroupData(x_train, y_train, np.concatenate(xv), np.concatenate(yv), validation,
                     tuple(v.symbol for v in validation))


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
    return Lake(Path(state_dir) / "lake")

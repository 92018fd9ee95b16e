"""The feature job (huey): features of a symbol's 5m candles, from the lake, into the lake.

Runs in a huey worker, never in ``run``: it reads Parquet and writes Parquet
(``lake/features/<feature set>/symbol=<SYMBOL>/data.parquet``, crash-safe), and touches no
DuckDB file. Idempotent: it rewrites the whole file from the candles each time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from appliance.paths import StatePaths
from data.lake import Lake, write_table_atomic
from models.features import FEATURE_NAMES, FEATURE_SET_ID, compute_features


def features_path(state_dir: Path, symbol: str, feature_set: str = FEATURE_SET_ID) -> Path:
    return StatePaths(state_dir).features / feature_set / f"symbol={symbol}" / "data.parquet"


def build_features(state_dir: Path, symbol: str, interval: str = "5m") -> int:
    candles = Lake(StatePaths(state_dir).lake).read(interval, symbol)
    if len(candles) == 0:
        raise FileNotFoundError(f"no {interval} candles for {symbol} in the lake; backfill it "
                                "first (methtrader backfill " + symbol + ")")
    feats = compute_features(candles)
    columns = {"open_time": pa.array(candles[:, 0].astype(np.int64))}
    columns.update({name: pa.array(feats[:, i]) for i, name in enumerate(FEATURE_NAMES)})
    write_table_atomic(pa.table(columns), features_path(state_dir, symbol))
    return len(candles)

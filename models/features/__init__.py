"""Feature set ``fs1``: one definition, two engines (training over histories, trading per bar).

Candles are rows ``[open_time_ms, open, high, low, close, volume, turnover]`` (float64), oldest
first, open times strictly increasing, prices > 0 (the data layer validates them). Every feature
of row t uses bars <= t only; rows before ``WARMUP_BARS`` are not served. The definitions are in
``fs1.py`` (see ``spec.py`` for how to add an indicator), the engines in ``batch.py`` and
``live.py``.

Training (batch)::

    compute_features(candles)       # (n, 7) -> (n, 15); (n, symbols, 7) -> (n, symbols, 15)

O(n) per symbol, in cache-sized chunks (several symbols chunk by chunk); rows < WARMUP_BARS are
NaN; each feature's column is contiguous (the result is a transposed view).

Trading (live), many symbols at one bar close::

    book = FeatureBook(["BTCUSDT", "ETHUSDT"])   # or FeatureBook() and add() later
    book.prefill("BTCUSDT", history)           # (n, 7) candles, oldest first; returns last row
    feats, warm = book.push(symbols, rows)     # rows (k, 7): one closed bar for each of k symbols
    book.add("SOLUSDT"); book.remove("ETHUSDT")
    book.bars_seen("BTCUSDT"); book.is_warm("BTCUSDT"); book.symbols; book.nbytes

``push`` computes all k symbols in one vectorised step and returns (k, 15) features (NaN rows
where not warm) and the (k,) warm mask; a symbol is warm once it has more than WARMUP_BARS bars.
Unknown symbols are added on their first push; a symbol whose bar is not newer than its last
raises ValueError and nothing is changed. Symbols can be pushed in any subset and order. Memory
per symbol is bounded by the feature window: the book keeps the last ``HISTORY`` values of each
per-bar input (twice, so a window is one contiguous run), the last candle and one value per
smoother: about 6 KB a symbol, never a copy of the history it was given. A push costs a fixed
~120 us of numpy calls plus ~1 us a symbol (fs1): push every symbol whose bar closed in one call.

``prefill`` and ``push`` give the same rows as ``compute_features`` over the same candles from the
same first bar (within 1e-12; tests/models/test_feature_parity.py).

``FeatureState`` (one symbol, bar by bar) and ``latest_features(states)`` are the original
single-symbol interface, now handles on a shared FeatureBook.
"""

import numpy as np

from .batch import compute
from .fs1 import (ATR_PERIOD, BB_WIDTH, BB_WINDOW, FEATURE_NAMES, FEATURE_SET_ID, FS1, HISTORY,
                  MACD_FAST, MACD_SIGNAL, MACD_SLOW, RETURN_LAGS, RSI_PERIOD, VOL_WINDOWS,
                  VOLUME_Z_WINDOW, WARMUP_BARS)
from .fs2 import FS2, INDICATOR_GROUPS
from .live import FeatureBook, FeatureState, latest_features
from .spec import CLOSE, HIGH, LOW, N_COLUMNS, OPEN, OPEN_TIME, TURNOVER, VOLUME, FeatureSet


def compute_features(ohlcv: np.ndarray) -> np.ndarray:
    """Features of every bar of a dataset; rows < WARMUP_BARS are NaN.

    ``ohlcv`` is (n, 7) for one symbol, giving (n, len(FEATURE_NAMES)), or (n, symbols, 7) for
    several aligned symbols, giving (n, symbols, len(FEATURE_NAMES)).
    """
    return compute(FS1, ohlcv)


FEATURE_SETS: dict[str, FeatureSet] = {FS1.id: FS1, FS2.id: FS2}
"""Feature sets by id: ``fs1`` (the default everywhere) and ``fs2``, the catalogue (fs1's
columns first, then ten more classic indicators; ``fs2.py``) that AutoML picks subsets of."""


def feature_set(set_id: str) -> FeatureSet:
    """The feature set called ``set_id``; ValueError for an unknown one."""
    try:
        return FEATURE_SETS[set_id]
    except KeyError:
        raise ValueError(f"unknown feature set {set_id!r}; known: {sorted(FEATURE_SETS)}"
                         ) from None


def serving_columns(set_id: str | None, features: list[str] | None = None) -> np.ndarray:
    """Where a model's input columns sit in a live row of the catalogue (``fs2``, whose first
    columns are fs1's): the trading engine and the drift service compute the catalogue once
    per bar and hand each model its own columns. ``features`` (a run's column list) defaults
    to all of the set's columns."""
    names = list(feature_set(set_id or FS1.id).names if features is None else features)
    try:
        return np.array([FS2.names.index(n) for n in names], dtype=np.intp)
    except ValueError:
        raise ValueError(f"features {names} are not all in the catalogue") from None


__all__ = [
    "ATR_PERIOD", "BB_WIDTH", "BB_WINDOW", "CLOSE", "FEATURE_NAMES", "FEATURE_SET_ID", "FS1",
    "HIGH", "HISTORY", "LOW", "MACD_FAST", "MACD_SIGNAL", "MACD_SLOW", "N_COLUMNS", "OPEN",
    "FEATURE_SETS", "FS2", "INDICATOR_GROUPS",
    "OPEN_TIME", "RETURN_LAGS", "RSI_PERIOD", "TURNOVER", "VOLUME", "VOLUME_Z_WINDOW",
    "VOL_WINDOWS", "WARMUP_BARS", "FeatureBook", "FeatureSet", "FeatureState",
    "compute", "compute_features", "feature_set", "latest_features", "serving_columns",
]

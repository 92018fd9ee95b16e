"""Training labels: the forward return over h bars, as short / flat / long classes.

Labels look forward (features never do). The label of bar t is about the trade a model would
decide at bar t's close: enter at close[t], leave at close[t + h], so its return is
``close[t + h] / close[t] - 1``. A round trip pays the taker fee and the slippage twice; a move
that does not beat that (plus a margin) is not worth trading and is labelled flat.

The last h bars have no future close to look at: their forward return is NaN and their class is
``UNLABELLED`` (-1), so callers must drop them (``labels >= 0``) before training.
"""

from __future__ import annotations

import numpy as np

from models.backtest import DEFAULT_SLIPPAGE, DEFAULT_TAKER_FEE

SHORT, FLAT, LONG = 0, 1, 2
UNLABELLED = -1


def forward_returns(close: np.ndarray, horizon: int) -> np.ndarray:
    """close[t + horizon] / close[t] - 1 along axis 0; NaN for the last ``horizon`` rows."""
    if horizon < 1:
        raise ValueError("horizon must be at least one bar")
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape, np.nan)
    if len(c) > horizon:
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:-horizon] = c[horizon:] / c[:-horizon] - 1.0
    return out


def dead_band(taker_fee: float = DEFAULT_TAKER_FEE, slippage: float = DEFAULT_SLIPPAGE,
              margin: float = 0.0) -> float:
    """The move a round trip must beat: two taker fees, two slippages and a margin."""
    return 2.0 * taker_fee + 2.0 * slippage + margin


def label_classes(close: np.ndarray, horizon: int, *, taker_fee: float = DEFAULT_TAKER_FEE,
                  slippage: float = DEFAULT_SLIPPAGE, margin: float = 0.0) -> np.ndarray:
    """LONG (2) if the forward return > band, SHORT (0) if < -band, else FLAT (1); int8.

    Rows without a forward return (the last ``horizon``, or a NaN close) are UNLABELLED (-1).
    """
    fwd = forward_returns(close, horizon)
    band = dead_band(taker_fee, slippage, margin)
    labels = np.full(fwd.shape, FLAT, dtype=np.int8)
    labels[fwd > band] = LONG
    labels[fwd < -band] = SHORT
    labels[np.isnan(fwd)] = UNLABELLED
    return labels

"""Scoring a model on validation bars: probabilities → positions → backtest → metrics (pure).

The same functions score training runs now and shadows later (one backtester for all).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from data.intervals import INTERVAL_MS
from models.backtest import backtest
from models.metrics import summarize



def probs_to_position(probs: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """+1 long / -1 short when P(long) - P(short) clears ``threshold``, else flat.

    Discrete on purpose: a position that follows every wiggle of the probabilities pays the
    taker fee on every bar.
    """
    score = probs[:, 2] - probs[:, 0]
    return np.where(score > threshold, 1.0, np.where(score < -threshold, -1.0, 0.0))


def score_validation(per_symbol: list[tuple[np.ndarray, np.ndarray]], interval: str,
                     threshold: float = 0.1) -> dict[str, Any]:
    """Metrics of an equal-weight portfolio over the symbols' validation bars.

    ``per_symbol`` holds (close, probs) pairs; each symbol is backtested on its own bars and
    the portfolio earns the mean of their net returns, bar by bar (aligned from the end).
    """
    nets, positions = [], []
    n = min(len(c) for c, _ in per_symbol)
    for close, probs in per_symbol:
        pos = probs_to_position(probs[-n:], threshold)
        nets.append(backtest(close[-n:], pos).net)
        positions.append(pos)
    net = np.mean(nets, axis=0)
    metrics = summarize(net, np.mean(positions, axis=0), INTERVAL_MS[interval])
    metrics["trades"] = int(sum(summarize(r, p, INTERVAL_MS[interval])["trades"]
                                for r, p in zip(nets, positions)))
    return metrics

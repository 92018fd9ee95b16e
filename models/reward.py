"""The reward a model is *trained* on, beyond its labels: sample weighting by return size.

A label says which way price went over the horizon; its weight says how much that sample is
worth learning. With weighting, each training sample is drawn with probability proportional to
the size of its forward move measured in units of the risk measure the weighting targets, over
the same forward bars the label looks at:

* ``sharpe``: |forward log return| / (std of the forward one-bar returns * sqrt(h));
* ``sortino``: |forward log return| / sqrt(sum of squared negative forward one-bar returns);
* ``calmar``: |forward log return| / the largest drawdown along the forward path.

Weights are capped at ``CAP`` risk units (a path without risk on it, e.g. no down bar for
``sortino``, weighs ``CAP``). Each row's weight depends on its own forward bars only (no
normalisation over the series), so it never changes with bars past its horizon.
``none`` keeps every sample equal (no resampling): the default, and what every non-AutoML
run uses. Weights look forward exactly as far as labels do, so the purge that protects labels
protects them too. Every trial is still *scored* on the
walk-forward score (:mod:`models.validation`), whatever it was trained on.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

RISKS = ("none", "sharpe", "sortino", "calmar")
CAP = 10.0


def sample_weights(close: np.ndarray, horizon: int, risk: str) -> np.ndarray | None:
    """(T,) weights of each bar's sample (NaN for the last ``horizon`` bars), or None for
    ``risk = "none"``."""
    if risk not in RISKS:
        raise ValueError(f"risk must be one of {RISKS}, got {risk!r}")
    if risk == "none":
        return None
    c = np.asarray(close, dtype=np.float64)
    out = np.full(len(c), np.nan)
    if len(c) <= horizon:
        return out
    r = np.diff(np.log(c))
    paths = sliding_window_view(r, horizon)[:len(c) - horizon]  # bars t+1 .. t+h of row t
    move = np.abs(paths.sum(axis=1))
    if risk == "sharpe":
        denom = paths.std(axis=1) * np.sqrt(horizon)
    elif risk == "sortino":
        denom = np.sqrt((np.minimum(paths, 0.0) ** 2).sum(axis=1))
    else:
        level = np.cumsum(paths, axis=1)
        peak = np.maximum.accumulate(np.maximum(level, 0.0), axis=1)
        denom = (peak - level).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(denom > 0, move / denom, np.where(move > 0, CAP, 0.0))
    out[:len(w)] = np.minimum(w, CAP)
    return out

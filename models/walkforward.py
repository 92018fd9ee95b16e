"""Walk-forward folds with purge and embargo.

The test blocks are the last ``n_folds * test_size`` bars, cut into ``n_folds`` consecutive blocks
of ``test_size`` bars, oldest first. For a test block [start, end):

* purge: a training row t is labelled with bars up to t + horizon, so rows in
  [start - purge, start) would see prices inside the test block; they are dropped. Use
  purge >= the label horizon.
* embargo: rows in [end, end + embargo) sit right after the test block, and their features (built
  from the bars before them) overlap it; they are dropped too.

Windows (``window``):

* "expanding" (default): train on every row from 0 up to start - purge. Each fold trains on all
  the past it is allowed to see, as a model retrained nightly would.
* "rolling": the same, limited to the ``train_size`` rows just before start - purge.
* "purged_kfold": train on every row outside [start - purge, end + embargo), including rows after
  the test block (Lopez de Prado's purged k-fold, for hyper-parameter search, not for reporting
  out-of-sample performance).

In the two forward windows no training row lies after its test block, so the embargo removes
nothing there; it matters for "purged_kfold". Every fold is checked to keep at least
``min_train`` training rows; otherwise :class:`NotEnoughHistory` (a ``ValueError``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOWS = ("expanding", "rolling", "purged_kfold")


class NotEnoughHistory(ValueError):
    """Too few rows for the folds asked for. Not a fault that trying again fixes: more history
    has to come first (a new pair's first hours, a short ``datasets.days``)."""


@dataclass(frozen=True, slots=True)
class Fold:
    """Sorted row indices (int64) of one fold's training and test sets."""

    train_idx: np.ndarray
    test_idx: np.ndarray


def walk_forward_folds(n: int, n_folds: int, test_size: int, purge: int, embargo: int, *,
                       window: str = "expanding", train_size: int | None = None,
                       min_train: int = 1) -> list[Fold]:
    """Folds over rows 0 .. n-1, oldest test block first (module doc: layout, purge, embargo)."""
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {WINDOWS}")
    if n_folds < 1 or test_size < 1 or purge < 0 or embargo < 0 or min_train < 1:
        raise ValueError("need n_folds >= 1, test_size >= 1, purge >= 0, embargo >= 0, "
                         "min_train >= 1")
    if window == "rolling" and (train_size is None or train_size < 1):
        raise ValueError("a rolling window needs train_size >= 1")
    first = n - n_folds * test_size
    if first < 0:
        raise NotEnoughHistory(f"{n_folds} test blocks of {test_size} rows need more than {n} rows")
    rows = np.arange(n, dtype=np.int64)
    folds = []
    for k in range(n_folds):
        start = first + k * test_size
        end = start + test_size
        train_end = max(start - purge, 0)
        if window == "expanding":
            train = rows[:train_end]
        elif window == "rolling":
            assert train_size is not None
            train = rows[max(train_end - train_size, 0):train_end]
        else:
            train = np.concatenate([rows[:train_end], rows[min(end + embargo, n):]])
        if len(train) < min_train:
            raise NotEnoughHistory(f"fold {k} keeps {len(train)} training rows (< {min_train}): "
                             "too little data for these folds, purge and embargo")
        folds.append(Fold(train_idx=train, test_idx=rows[start:end]))
    return folds

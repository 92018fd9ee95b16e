"""Walk-forward folds: disjoint, ordered, and clear of the purge and embargo zones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.walkforward import WINDOWS, walk_forward_folds


def allowed_train(n: int, start: int, end: int, purge: int, embargo: int, window: str,
                  train_size: int | None) -> set[int]:
    """Brute force: the rows a fold may train on, straight from the definitions."""
    rows = set(range(n)) - set(range(start - purge, end + embargo))
    if window != "purged_kfold":
        rows = {t for t in rows if t < start}
    if window == "rolling":
        rows = {t for t in rows if t >= start - purge - train_size}
    return rows


def test_expanding_example():
    folds = walk_forward_folds(20, 2, 5, purge=2, embargo=3)
    assert [f.test_idx.tolist() for f in folds] == [[10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    assert folds[0].train_idx.tolist() == list(range(8))
    assert folds[1].train_idx.tolist() == list(range(13))


def test_rolling_and_purged_kfold_examples():
    rolling = walk_forward_folds(20, 2, 5, purge=2, embargo=3, window="rolling", train_size=4)
    assert [f.train_idx.tolist() for f in rolling] == [[4, 5, 6, 7], [9, 10, 11, 12]]
    kfold = walk_forward_folds(20, 3, 5, purge=1, embargo=2, window="purged_kfold")
    assert kfold[1].test_idx.tolist() == [10, 11, 12, 13, 14]
    assert kfold[1].train_idx.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 17, 18, 19]


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 600), n_folds=st.integers(1, 8), test_size=st.integers(1, 50),
       purge=st.integers(0, 40), embargo=st.integers(0, 40), window=st.sampled_from(WINDOWS),
       train_size=st.integers(1, 200), min_train=st.integers(1, 50))
def test_folds_are_disjoint_and_respect_purge_and_embargo(n, n_folds, test_size, purge, embargo,
                                                          window, train_size, min_train):
    first = n - n_folds * test_size
    blocks = [(first + k * test_size, first + (k + 1) * test_size) for k in range(n_folds)]
    feasible = first >= 0 and all(
        len(allowed_train(n, s, e, purge, embargo, window, train_size)) >= min_train
        for s, e in blocks)
    if not feasible:
        with pytest.raises(ValueError):
            walk_forward_folds(n, n_folds, test_size, purge, embargo, window=window,
                               train_size=train_size, min_train=min_train)
        return
    folds = walk_forward_folds(n, n_folds, test_size, purge, embargo, window=window,
                               train_size=train_size, min_train=min_train)
    assert len(folds) == n_folds
    tests = np.concatenate([f.test_idx for f in folds])
    assert np.array_equal(tests, np.arange(first, n))  # consecutive blocks, no overlap
    for fold, (start, end) in zip(folds, blocks):
        train, test = fold.train_idx, fold.test_idx
        assert test.tolist() == list(range(start, end))
        assert np.all(np.diff(train) > 0)
        assert not set(train.tolist()) & set(test.tolist())
        assert not np.any((train >= start - purge) & (train < start))
        assert not np.any((train >= end) & (train < end + embargo))
        assert set(train.tolist()) == allowed_train(n, start, end, purge, embargo, window,
                                                    train_size)

"""FeatureBook as the trading engine uses it: refusals, warm-up, memory, and new indicators."""

from __future__ import annotations

import numpy as np
import pytest

from models.features import (FEATURE_NAMES, FS1, HISTORY, WARMUP_BARS, FeatureBook, FeatureSet,
                             compute_features)
from models.features.batch import compute
from models.features.spec import Series, indicator

from .real import load_freqtrade

BOUND = 1e-12  # as in test_feature_parity.py


def close_enough(got: np.ndarray, want: np.ndarray) -> bool:
    return bool(np.array_equal(np.isnan(got), np.isnan(want))
                and np.nanmax(np.abs(got - want), initial=0.0) <= BOUND)


@pytest.fixture(scope="module")
def candles() -> dict[str, np.ndarray]:
    return {"ETH": load_freqtrade("ETH_BTC-5m.json"), "ADA": load_freqtrade("ADA_BTC-5m.json")}


def test_a_refused_push_changes_nothing(candles):
    book = FeatureBook()
    for name, bars in candles.items():
        book.prefill(name, bars[:300])
    eth, ada = candles["ETH"], candles["ADA"]
    stale = np.stack([eth[300], ada[299]])  # ADA's bar is not newer than its last one
    with pytest.raises(ValueError, match=r"push ADA: bar open time \d+ is not after"):
        book.push(["ETH", "ADA", "NEW"], np.vstack([stale, eth[0]]))
    assert "NEW" not in book and book.bars_seen("ETH") == 300
    with pytest.raises(ValueError, match="appears twice"):
        book.push(["ETH", "ETH"], np.stack([eth[300], eth[301]]))
    with pytest.raises(ValueError, match=r"expected \(2, 7\) rows"):
        book.push(["ETH", "ADA"], np.stack([eth[300], ada[300]])[:, :6])
    feats, warm = book.push(["ETH", "ADA"], np.stack([eth[300], ada[300]]))
    assert warm.all()
    assert close_enough(feats[0], compute_features(eth[:301])[-1])
    assert close_enough(feats[1], compute_features(ada[:301])[-1])


def test_rows_are_served_once_warm(candles):
    bars = candles["ETH"][:WARMUP_BARS + 3]
    book = FeatureBook(["ETH"])
    warm_flags = []
    for t, row in enumerate(bars):
        feats, warm = book.push(["ETH"], row[None])
        warm_flags.append(bool(warm[0]))
        assert np.isnan(feats).all() != warm[0]
        assert book.is_warm("ETH") == warm[0] and book.bars_seen("ETH") == t + 1
    assert warm_flags == [False] * WARMUP_BARS + [True] * 3


def test_memory_is_bounded_by_the_feature_window_not_the_history():
    rng = np.random.default_rng(0)
    n = 200_000
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, n)))
    bars = np.column_stack([1.7e12 + 60_000.0 * np.arange(n), close, close * 1.001,
                            close * 0.999, close, np.ones(n), close])
    short, long = FeatureBook(), FeatureBook()
    short.prefill("X", bars[-200:])
    long.prefill("X", bars)
    assert long.nbytes == short.nbytes  # a year of minutes costs what 200 bars cost
    book = FeatureBook([f"S{i}" for i in range(160)])
    assert book.nbytes / 160 <= 16 * 1024  # per symbol: about HISTORY values of 7 inputs
    assert book.nbytes / 160 >= HISTORY * len(FS1.input_names) * 8


def test_removed_symbols_start_over_when_they_return(candles):
    eth = candles["ETH"]
    book = FeatureBook()
    book.prefill("ETH", eth[:500])
    book.remove("ETH")
    assert "ETH" not in book and book.bars_seen("ETH") == 0
    for t in range(600, 600 + WARMUP_BARS + 5):
        feats, warm = book.push(["ETH"], eth[t][None])
    assert warm[0] and close_enough(feats[0], compute_features(eth[600:t + 1])[-1])


# -- a new indicator is one definition, used by both engines ----------------------------------

@indicator("close_z_14", "range_ema_ratio")
def _toy(s: Series) -> list[np.ndarray]:
    fast = s.ema("toy_fast", s("true_range"), 0.3)
    return [s.zscore("close", 14, ddof=0), fast / s.ema("toy_slow", fast, 0.05)]


TOY = FeatureSet("toy", FS1.inputs, FS1.input_names, FS1.indicators + (_toy,),
                 history=FS1.history, warmup=FS1.warmup)


def test_a_new_indicator_is_one_definition_for_both_paths(candles):
    bars = candles["ADA"][:1_500]
    batch = compute(TOY, bars)
    assert TOY.names == FEATURE_NAMES + ("close_z_14", "range_ema_ratio")
    assert np.isfinite(batch[WARMUP_BARS:]).all()
    book = FeatureBook(feature_set=TOY)
    book.prefill("ADA", bars[:700])
    for t in range(700, len(bars)):
        feats, _ = book.push(["ADA"], bars[t][None])
        assert close_enough(feats[0], batch[t])


@indicator("too_far")
def _too_far(s: Series) -> list[np.ndarray]:
    return [s.lag("close", HISTORY)]


def test_a_definition_reaching_past_the_history_is_refused_by_both_engines(candles):
    bad = FeatureSet("bad", FS1.inputs, FS1.input_names, (_too_far,), history=HISTORY,
                     warmup=WARMUP_BARS)
    with pytest.raises(ValueError, match=f"lag {HISTORY} needs history > {HISTORY}"):
        compute(bad, candles["ETH"][:200])
    with pytest.raises(ValueError, match=f"lag {HISTORY} needs history > {HISTORY}"):
        FeatureBook(feature_set=bad).push(["ETH"], candles["ETH"][:1])


def test_bench_features_measures_what_it_says():
    """The benchmark's figures (never asserted on time): the rows it ran, and a parity figure
    within the bound for a small live book."""
    from benchmarks.features import batch_rate, candles, live_step

    batch = batch_rate(candles(3_000, 2), repeats=1)
    assert batch["features_rows"] == 6_000 and batch["features_rows_per_s"] > 0
    live = live_step(5)
    assert live["features_live_5_parity_max_abs_diff"] <= BOUND
    assert live["features_live_5_step_us_p50"] <= live["features_live_5_step_us_p99"]
    assert live["features_live_5_book_bytes_per_symbol"] <= 16 * 1024


def test_a_split_push_gives_the_same_rows_as_a_whole_one(candles):
    """The trading engine computes the prod models' indicators before a bar's orders and the
    rest after (``push(..., first=...)`` then ``finish``): bar after bar, with the smoothers of
    both halves carried on, the rows are the whole push's to the last bit, and a push or a
    prefill that comes before ``finish`` finishes the pending one first."""
    from models.features import FS2

    whole, split = FeatureBook(feature_set=FS2), FeatureBook(feature_set=FS2)
    eth, ada = candles["ETH"], candles["ADA"]
    for book in (whole, split):
        book.prefill("ETH", eth[:150])
        book.prefill("ADA", ada[:150])
    first = [0, 1, 5, 6]  # returns, volatility, rsi, macd: smoothers on both sides (atr)
    later = [i for i in range(len(FS2.indicators)) if i not in first]
    now_cols = np.concatenate([FS2.indicator_columns()[i] for i in first])
    later_cols = np.concatenate([FS2.indicator_columns()[i] for i in later])
    for t in range(150, 190):
        rows = np.stack([eth[t], ada[t]])
        want, _ = whole.push(["ETH", "ADA"], rows)
        got, warm = split.push(["ETH", "ADA"], rows, first=first)
        assert warm.all() and np.array_equal(got[:, now_cols], want[:, now_cols])
        assert np.isnan(got[:, later_cols]).all()
        if t % 3:  # most bars the engine finishes; else the next push does it first
            assert split.finish()
            assert np.array_equal(got, want)
    assert split.finish() and not split.finish()
    split.push(["ETH"], eth[190][None], first=first)
    split.prefill("ADA", ada[:191])  # finishes ETH's bar before touching the book
    want, _ = whole.push(["ETH"], eth[190][None])
    np.testing.assert_array_equal(split.push(["ETH"], eth[191][None])[0],
                                  whole.push(["ETH"], eth[191][None])[0])


def _state(book: FeatureBook) -> list[np.ndarray]:
    return [book._ring.copy(), book._last.copy(), book._count.copy(),
            *(v.copy() for _, v in sorted(book._smoothers.items()))]


def test_a_rehearsal_changes_nothing_and_the_next_push_is_as_without_it(candles):
    """The trading engine goes over a push again between bars to keep it in cache
    (``rehearse``): the book's arrays stay bit for bit what they were, a pending split push is
    finished as any other call would, and the next rows are the ones a book that never
    rehearsed computes."""
    from models.features import FS2

    plain, rehearsed = FeatureBook(feature_set=FS2), FeatureBook(feature_set=FS2)
    eth, ada = candles["ETH"], candles["ADA"]
    assert rehearsed.rehearse() == 0  # no symbol yet
    rehearsed.add("NEW")  # a symbol without a bar is not gone over
    assert rehearsed.rehearse() == 0 and not rehearsed._smoothers
    rehearsed.remove("NEW")
    for book in (plain, rehearsed):
        book.prefill("ETH", eth[:150])
        book.prefill("ADA", ada[:120])
    for t in range(150, 170):
        rows = np.stack([eth[t], ada[t - 30]])
        want, _ = plain.push(["ETH", "ADA"], rows)
        got, _ = rehearsed.push(["ETH", "ADA"], rows, first=[0, 5] if t % 2 else None)
        before = _state(rehearsed) if not t % 2 else None
        for _ in range(3):
            assert rehearsed.rehearse() == 2
        if before is not None:
            after = _state(rehearsed)
            assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(before, after))
        np.testing.assert_array_equal(got, want)  # a pending split push was finished
    np.testing.assert_array_equal(rehearsed.push(["ETH"], eth[170][None])[0],
                                  plain.push(["ETH"], eth[170][None])[0])

"""The live book (one vectorised step per bar for many symbols) gives the batch path's rows.

Bound: |live - batch| <= 1e-12 absolute on every feature of every warm row, and the same rows
NaN. Both paths compute the same definitions in float64 but in a different order (the batch
path sums windows in blocks and runs smoothers as block products, the book takes each window's
two-pass mean and steps each smoother once), so they cannot agree to the bit; every fs1 feature
is a dimensionless number of order one or smaller, and 1e-12 is ~1e4 units in the last place at
that scale (measured differences are ~1e-14), far below anything a model can resolve.

Relative bound: several features are much smaller than one (returns, volatilities, ATR ~1e-3),
so the same rows also agree within 1e-12 of each feature's own scale (its RMS over the rows
compared; measured <= 3e-14), with one exception: ``macd_hist`` is the difference of two
smoothers of the close, divided by the close, so its rounding is relative to those terms (~1),
not to their difference (~1e-4): 1.1e-12 of its RMS is measured on the real candles. Its scale
is 1, i.e. the absolute bound. A bound relative to each value is meaningless for features that
cross zero (z-scores, MACD, returns).
"""

from __future__ import annotations

import numpy as np
import pytest

from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from models.features import FEATURE_NAMES, WARMUP_BARS, FeatureBook, compute_features

from .real import load_freqtrade

BOUND = 1e-12
RELATIVE_BOUND = 1e-12
UNIT_SCALE = {"macd_hist"}  # see above: rounding relative to the close-scaled smoothers
REAL = ["ETH_BTC-5m.json", "ADA_BTC-5m.json", "XRP_ETH-5m.json", "UNITTEST_BTC-1m.json",
        "futures/XRP_USDT_USDT-5m-futures.json"]


def assert_rows_match(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    diff = np.abs(np.nan_to_num(got) - np.nan_to_num(want))
    assert diff.max(initial=0.0) <= BOUND, dict(zip(FEATURE_NAMES, diff.max(axis=0)))


def sim_history(symbols: list[str], bars: int, seed: int = 7) -> dict[str, np.ndarray]:
    market = SimMarket(seed)
    end = EPOCH_MS + 30 * DAY_MS
    return {s: market.candles(s, end - bars * 60_000, end) for s in symbols}


def replay(book: FeatureBook, data: dict[str, np.ndarray], start: dict[str, int],
           steps: int) -> dict[str, list[tuple[int, np.ndarray, bool]]]:
    """Push bar start[s] + i of every symbol at step i, all symbols in one push per step."""
    seen: dict[str, list[tuple[int, np.ndarray, bool]]] = {s: [] for s in data}
    for i in range(steps):
        symbols = [s for s in data if start[s] + i < len(data[s])]
        rows = np.stack([data[s][start[s] + i] for s in symbols])
        feats, warm = book.push(symbols, rows)
        assert feats.shape == (len(symbols), len(FEATURE_NAMES))
        for s, f, ok in zip(symbols, feats, warm):
            seen[s].append((start[s] + i, f, bool(ok)))
    return seen


def check_against_batch(data: dict[str, np.ndarray], first: dict[str, int],
                        seen: dict[str, list[tuple[int, np.ndarray, bool]]]) -> int:
    """Every row the book served equals compute_features over the same bars (from the
    symbol's first bar in the book); returns how many warm rows were compared."""
    compared = 0
    for s, rows in seen.items():
        want = compute_features(data[s][first[s]:])
        for t, got, warm in rows:
            assert warm == (t - first[s] >= WARMUP_BARS)
            assert_rows_match(got, want[t - first[s]])
            compared += warm
    return compared


def test_push_equals_batch_for_real_candles_of_many_symbols_in_one_step():
    data = {name: load_freqtrade(name) for name in REAL}
    book = FeatureBook(data)
    seen = replay(book, data, {s: 0 for s in data}, steps=max(len(b) for b in data.values()))
    assert check_against_batch(data, {s: 0 for s in data}, seen) > 10_000


def test_every_feature_within_1e_12_of_its_own_scale():
    data = {name: load_freqtrade(name) for name in REAL}
    book = FeatureBook(data)
    seen = replay(book, data, {s: 0 for s in data}, steps=max(len(b) for b in data.values()))
    for s, rows in seen.items():
        want = compute_features(data[s])[WARMUP_BARS:]
        got = np.array([f for _, f, _ in rows])[WARMUP_BARS:]
        assert np.array_equal(np.isnan(got), np.isnan(want))
        scale = np.sqrt(np.nanmean(want * want, axis=0))
        for j, name in enumerate(FEATURE_NAMES):
            if name in UNIT_SCALE:
                scale[j] = 1.0
        diff = np.nanmax(np.abs(got - want), axis=0)
        assert (diff <= RELATIVE_BOUND * scale).all(), {
            n: (d, b) for n, d, b in zip(FEATURE_NAMES, diff, RELATIVE_BOUND * scale)
            if d > b}


@pytest.mark.parametrize("split", [0, 1, 50, WARMUP_BARS, WARMUP_BARS + 1, 700, 3_000])
def test_prefill_then_push_equals_batch(split):
    data = {name: load_freqtrade(name) for name in REAL[:3]}
    book = FeatureBook()
    cut = {s: min(split, len(bars) - 100) for s, bars in data.items()}
    for s, bars in data.items():
        last = book.prefill(s, bars[:cut[s]])
        want = compute_features(bars[:cut[s]])
        assert_rows_match(last, want[-1] if cut[s] else np.full(len(FEATURE_NAMES), np.nan))
        assert book.bars_seen(s) == cut[s]
    seen = replay(book, data, cut, steps=800)
    check_against_batch(data, {s: 0 for s in data}, seen)


def test_sim_symbols_added_midway_removed_and_re_added():
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT", "LINKUSDT"]
    data = sim_history(symbols, bars=900)
    book = FeatureBook(symbols[:2])
    book.prefill("BTCUSDT", data["BTCUSDT"][:400])
    # BTC continues from its prefill, ETH starts at bar 400 in the book, SOL joins at 550
    # with a prefill, DOGE joins at 600 by its first push; LINK comes and goes.
    served: dict[str, list[tuple[int, np.ndarray, bool]]] = {s: [] for s in symbols}
    first = {"BTCUSDT": 0, "ETHUSDT": 400, "SOLUSDT": 0, "DOGEUSDT": 600, "LINKUSDT": 650}
    for t in range(400, 900):
        if t == 550:
            book.prefill("SOLUSDT", data["SOLUSDT"][:550])
        if t == 620:
            book.add("LINKUSDT")
            book.prefill("LINKUSDT", data["LINKUSDT"][:300])
            book.remove("LINKUSDT")  # delisted before its first push: gone, history and all
            assert "LINKUSDT" not in book
        live = [s for s in symbols if t >= first[s] and (s != "SOLUSDT" or t >= 550)]
        feats, warm = book.push(live[::-1], np.stack([data[s][t] for s in live[::-1]]))
        for s, f, ok in zip(live[::-1], feats, warm):
            served[s].append((t, f, bool(ok)))
    assert check_against_batch(data, first, served) > 1_000
    assert book.bars_seen("LINKUSDT") == 250


def test_symbols_pushed_in_subsets_that_skip_bars():
    """A symbol with no candle in a bar is simply not pushed; its own series goes on."""
    data = sim_history(["ADAUSDT", "AVAXUSDT", "XRPUSDT"], bars=600)
    rng = np.random.default_rng(5)
    kept = {s: np.sort(rng.choice(len(b), size=len(b) - 60, replace=False))
            for s, b in data.items()}
    book = FeatureBook()
    served: dict[str, list[tuple[int, np.ndarray, bool]]] = {s: [] for s in data}
    for t in range(600):
        due = [s for s in data if t in set(kept[s])]
        if not due:
            continue
        rng.shuffle(due)
        feats, warm = book.push(due, np.stack([data[s][t] for s in due]))
        for s, f, ok in zip(due, feats, warm):
            served[s].append((len(served[s]), f, bool(ok)))
    own = {s: data[s][kept[s]] for s in data}
    assert check_against_batch(own, {s: 0 for s in data}, served) > 1_000


def test_a_capacity_of_many_symbols_keeps_each_series_apart():
    market, end = SimMarket(7), EPOCH_MS + 30 * DAY_MS
    symbols = [s for s in market.symbols()
               if market.listed(s, end - 300 * 60_000) and market.listed(s, end)][:20]
    data = sim_history(symbols, bars=300)
    assert len(symbols) == 20 and all(len(b) == 300 for b in data.values())
    book = FeatureBook()
    for s in symbols[:10]:
        book.prefill(s, data[s][:150])
    for s in symbols[10:]:
        book.prefill(s, data[s][:150])
    seen = replay(book, data, {s: 150 for s in symbols}, steps=150)
    assert check_against_batch(data, {s: 0 for s in symbols}, seen) == 20 * 150

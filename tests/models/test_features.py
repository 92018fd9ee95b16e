"""Feature set fs1: live (incremental) rows equal training (vectorised) rows; no look-ahead."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import (CLOSE, FEATURE_NAMES, FEATURE_SET_ID, HIGH, LOW, OPEN_TIME,
                             VOLUME, WARMUP_BARS, FeatureState, compute_features,
                             latest_features)

from .real import load_freqtrade

TOL = 1e-12  # absolute; see test_feature_parity.py for why this bound
COL = {name: j for j, name in enumerate(FEATURE_NAMES)}


def random_bars(rng: np.random.Generator, n: int, t0: float = 1.7e12) -> np.ndarray:
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * (1.0 + np.abs(rng.normal(0.0, 0.003, n)))
    low = np.minimum(open_, close) * (1.0 - np.abs(rng.normal(0.0, 0.003, n)))
    volume = np.where(rng.random(n) < 0.1, 0.0, rng.lognormal(0.0, 1.0, n))
    times = t0 + 60_000.0 * np.arange(n)
    return np.column_stack([times, open_, high, low, close, volume, volume * close])


def incremental_rows(bars: np.ndarray) -> list[np.ndarray | None]:
    state = FeatureState()
    return [state.update(bar) for bar in bars]


def assert_rows_match(got: np.ndarray, want: np.ndarray) -> float:
    assert np.array_equal(np.isnan(got), np.isnan(want))
    diff = np.abs(np.nan_to_num(got) - np.nan_to_num(want))
    assert diff.max(initial=0.0) <= TOL
    return float(diff.max(initial=0.0))


def test_feature_set_shape_and_warmup():
    bars = load_freqtrade("ETH_BTC-5m.json")
    feats = compute_features(bars)
    assert FEATURE_SET_ID == "fs1"
    assert feats.shape == (len(bars), len(FEATURE_NAMES)) == (5760, 15)
    assert np.isnan(feats[:WARMUP_BARS]).all()
    assert np.isfinite(feats[WARMUP_BARS:]).all()


@pytest.mark.parametrize("name", ["ETH_BTC-5m.json", "UNITTEST_BTC-1m.json",
                                  "futures/XRP_USDT_USDT-5m-futures.json"])
def test_incremental_matches_vectorised_on_real_candles(name):
    bars = load_freqtrade(name)
    want = compute_features(bars)
    rows = incremental_rows(bars)
    assert all(r is None for r in rows[:WARMUP_BARS])
    got = np.array(rows[WARMUP_BARS:])
    assert got.shape == (len(bars) - WARMUP_BARS, len(FEATURE_NAMES))
    assert_rows_match(got, want[WARMUP_BARS:])


def test_batched_latest_features_match_per_symbol_datasets():
    names = ["ETH_BTC-5m.json", "ADA_BTC-5m.json", "XRP_ETH-5m.json"]
    datasets = [load_freqtrade(n) for n in names]
    wanted = [compute_features(b) for b in datasets]
    states = [FeatureState() for _ in names]
    for t in range(max(len(b) for b in datasets)):
        for state, bars in zip(states, datasets):
            if t < len(bars):
                state.push(bars[t])
        rows = latest_features(states)
        for i, (state, bars, want) in enumerate(zip(states, datasets, wanted)):
            if t < len(bars):
                assert_rows_match(rows[i], want[t])
            assert state.warm == (state.bars_seen > WARMUP_BARS)


def test_several_symbols_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(7)
    stacked = np.stack([random_bars(rng, 300) for _ in range(3)], axis=1)
    together = compute_features(stacked)
    assert together.shape == (300, 3, len(FEATURE_NAMES))
    for j in range(3):
        assert_rows_match(together[:, j], compute_features(stacked[:, j]))


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 400), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_changing_future_bars_never_changes_past_features(n, seed, data):
    rng = np.random.default_rng(seed)
    bars = random_bars(rng, n)
    t = data.draw(st.integers(0, n - 1), label="t")
    mode = data.draw(st.sampled_from(["redraw", "scale", "nan"]), label="mode")
    changed = bars.copy()
    if mode == "redraw":
        changed[t + 1:, 1:] = random_bars(rng, n)[t + 1:, 1:]
    elif mode == "scale":
        changed[t + 1:, 1:] *= rng.uniform(0.5, 2.0, (n - t - 1, 6))
    else:
        changed[t + 1:, 1:] = np.nan
    before = compute_features(bars)[:t + 1]
    after = compute_features(changed)[:t + 1]
    assert np.array_equal(before, after, equal_nan=True)
    assert np.array_equal(before, compute_features(bars[:t + 1]), equal_nan=True)


@pytest.mark.parametrize("mode", ["redraw", "scale", "nan"])
def test_changing_future_bars_of_a_long_history_never_changes_past_features(mode):
    """The same across the batch path's full-size chunks: bars changed from inside a later
    chunk on (a window block and a smoother block straddle the change) leave every row before
    them exactly as they were, and a single changed bar changes nothing before it."""
    from models.features.batch import chunks

    rng = np.random.default_rng(11)
    bars = random_bars(rng, 50_000)
    boundaries = [a for a, _, _ in chunks(len(bars))]
    assert len(boundaries) >= 4  # the changes fall inside a full-size chunk
    for t in (boundaries[2] + 5_003, boundaries[1] - 1, boundaries[2]):
        changed = bars.copy()
        if mode == "redraw":
            changed[t + 1:, 1:] = random_bars(rng, len(bars))[t + 1:, 1:]
        elif mode == "scale":
            changed[t + 1:, 1:] *= rng.uniform(0.5, 2.0, (len(bars) - t - 1, 6))
        else:
            changed[t + 1:, 1:] = np.nan
        one = bars.copy()
        one[t + 1, 1:] *= 3.0
        before = compute_features(bars)[:t + 1]
        for other in (changed, one):
            assert np.array_equal(compute_features(other)[:t + 1], before, equal_nan=True), t


def test_values_follow_their_definitions_on_real_candles():
    bars = load_freqtrade("ETH_BTC-5m.json")
    feats = compute_features(bars)
    close = bars[:, CLOSE]
    t = 3000
    assert feats[t, COL["ret_12"]] == pytest.approx(math.log(close[t] / close[t - 12]), abs=1e-15)
    one_bar = np.log(close[t - 47:t + 1] / close[t - 48:t])
    assert feats[t, COL["vol_48"]] == pytest.approx(np.std(one_bar, ddof=1), rel=1e-12)
    window = close[t - 19:t + 1]
    lower = window.mean() - 2 * window.std()
    upper = window.mean() + 2 * window.std()
    assert feats[t, COL["bb_pctb_20"]] == pytest.approx((close[t] - lower) / (upper - lower),
                                                         rel=1e-12)
    vol = bars[t - 47:t + 1, VOLUME]
    assert feats[t, COL["volume_z_48"]] == pytest.approx((vol[-1] - vol.mean()) / vol.std(),
                                                          rel=1e-12)
    assert 0.0 <= np.nanmin(feats[:, COL["rsi_14"]]) <= np.nanmax(feats[:, COL["rsi_14"]]) <= 1.0


def test_rsi_atr_and_calendar_on_constructed_bars():
    n = 300
    monday_midnight = 1_704_067_200_000.0  # 2024-01-01 00:00 UTC, a Monday
    bars = np.zeros((n, 7))
    bars[:, OPEN_TIME] = monday_midnight + 3_600_000.0 * np.arange(n)
    bars[:, CLOSE] = 100.0 + np.arange(n)
    bars[:, 1] = bars[:, CLOSE] - 1.0
    bars[:, HIGH] = bars[:, CLOSE] + 0.5
    bars[:, LOW] = bars[:, CLOSE] - 1.5
    bars[:, VOLUME] = 5.0
    feats = compute_features(bars)
    t = 168  # one week of hourly bars later: Monday 00:00 again
    assert feats[t, COL["rsi_14"]] == 1.0
    assert feats[t, COL["volume_z_48"]] == 0.0
    assert feats[t, COL["atr_14"]] == pytest.approx(2.0 / bars[t, CLOSE], rel=1e-12)
    assert feats[t, COL["tod_sin"]] == pytest.approx(0.0, abs=1e-12)
    assert feats[t, COL["tod_cos"]] == pytest.approx(1.0)
    assert feats[t, COL["dow_sin"]] == pytest.approx(0.0, abs=1e-12)
    assert feats[t, COL["dow_cos"]] == pytest.approx(1.0)
    noon_thursday = t + 3 * 24 + 12
    assert feats[noon_thursday, COL["tod_cos"]] == pytest.approx(-1.0)
    assert feats[noon_thursday, COL["dow_sin"]] == pytest.approx(math.sin(2 * math.pi * 3 / 7))


def test_flat_prices_give_neutral_band_and_rsi():
    bars = random_bars(np.random.default_rng(1), 150)
    bars[:, 1:5] = 0.1234567
    feats = compute_features(bars)
    assert np.all(feats[WARMUP_BARS:, COL["bb_pctb_20"]] == 0.5)
    assert np.all(feats[WARMUP_BARS:, COL["rsi_14"]] == 0.5)
    assert np.all(feats[WARMUP_BARS:, COL["ret_1"]] == 0.0)


def test_update_rejects_a_bar_that_is_not_newer():
    bars = random_bars(np.random.default_rng(2), 3)
    state = FeatureState()
    state.update(bars[0])
    state.update(bars[1])
    with pytest.raises(ValueError):
        state.update(bars[1])
    with pytest.raises(ValueError):
        compute_features(bars[:, :6])


def test_a_state_collected_while_features_are_computed_gives_its_slot_back(monkeypatch):
    """A FeatureState freed by the cyclic collector in the middle of latest_features (which
    holds the shared book's lock) returns its slot from that same thread, without deadlock."""
    import gc
    import threading

    from models.features import live

    real_push = live.FeatureBook.push
    collections = []

    def push_after_a_collection(self, symbols, rows):
        if not collections:  # the doomed state's finalizer runs here, inside latest_features
            collections.append(gc.collect())
        return real_push(self, symbols, rows)

    bars = random_bars(np.random.default_rng(4), 3)
    rows: list[np.ndarray] = []
    gc.disable()
    try:
        doomed = FeatureState()
        key = doomed._key
        cycle: list[object] = [doomed]
        cycle.append(cycle)  # only the cyclic collector can free it
        del doomed, cycle
        monkeypatch.setattr(live.FeatureBook, "push", push_after_a_collection)
        keep = FeatureState()

        def feed() -> None:
            for bar in bars:
                keep.push(bar)
                rows.append(latest_features([keep])[0])

        worker = threading.Thread(target=feed, daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "latest_features deadlocked on a collected state"
    finally:
        gc.enable()
    assert collections and len(rows) == len(bars)
    assert key not in live._POOL.book and keep._key in live._POOL.book

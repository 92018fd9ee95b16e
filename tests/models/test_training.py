"""A training run (models.training.train_run) on a real lake: its timeframe and its funding.

The lake holds the sim market's 1m candles (a pure function of seed, symbol and minute) written
as day files and resampled to 5m and 1h by the lake itself, as the datasets service does.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from data.intervals import interval_ms
from models.artifacts import run_dir
from models.dataset import DataSpec, build_panel, lake_at, load_group_candles
from models.funding import FUNDING_PERIOD_MS
from models.training import group_funding, train_run

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
FIRST_DAY = EPOCH_MS + 100 * DAY_MS
DAYS = 30
RF = {"n_estimators": 6, "max_depth": 4, "min_samples_leaf": 50, "tree_batches": 2,
      "n_jobs": 1}


def fill_lake(state_dir, days: int = DAYS) -> None:
    lake = lake_at(state_dir)
    market = SimMarket(7)
    for s in SYMBOLS:
        for d in range(days):
            start = FIRST_DAY + d * DAY_MS
            lake.write_day(s, start, market.candles(s, start, start + DAY_MS), complete=True,
                           missing=0)
        lake.resample(s)


def funding_rows(rate: float, days: int = DAYS) -> np.ndarray:
    times = np.arange(FIRST_DAY, FIRST_DAY + days * DAY_MS + 1, FUNDING_PERIOD_MS)
    return np.column_stack([times, np.full(len(times), rate)])


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("state")
    fill_lake(d)
    return d


def run(state_dir, run_id: str, timeframe: str = "5m", folds: int = 2):
    return train_run(state_dir, run_id, "t1-a", SYMBOLS, "rf", dict(RF), timeframe=timeframe,
                     folds=folds)


def test_a_1h_run_trains_and_scores_on_1h_bars(lake_dir):
    """Finding 7: the timeframe is the run's: recorded, its bars are 1h (a twelfth of the 5m
    bars over the same days), its folds are spaced by the hour."""
    five = run(lake_dir, "r-5m")
    hour = run(lake_dir, "r-1h", "1h")
    assert (five["timeframe"], hour["timeframe"]) == ("5m", "1h")
    assert (five["metrics"]["timeframe"], hour["metrics"]["timeframe"]) == ("5m", "1h")
    saved = json.loads((run_dir(lake_dir, "r-1h") / "metrics.json").read_text())
    assert saved["timeframe"] == "1h"
    assert [(f["start"], f["end"]) for f in saved["folds"]] == [
        (f["start"], f["end"]) for f in hour["metrics"]["folds"]]
    assert five["metrics"]["bars"] == pytest.approx(12 * hour["metrics"]["bars"], rel=0.01)
    assert hour["metrics"]["bars"] == 2 * (DAYS * 24 // 3)  # 2 folds of a third of 720 bars
    for r in (five, hour):
        step = interval_ms(r["timeframe"])
        for f in r["metrics"]["folds"]:
            assert f["start"] % step == 0 and f["end"] % step == 0
            assert (f["end"] - f["start"]) // step + 1 == f["bars"]
    assert five["dataset_sha256"] != hour["dataset_sha256"]


def test_group_funding_lines_the_lake_file_up_with_the_bar_closes(lake_dir):
    lake = lake_at(lake_dir)
    try:
        rows = funding_rows(0.0)
        rows[:, 1] = np.arange(1, len(rows) + 1) * 1e-5  # a different rate at each time
        lake.write_funding("BTCUSDT", rows)
        for interval in ("5m", "1h"):
            panel = build_panel(load_group_candles(lake, SYMBOLS, interval),
                                DataSpec(interval=interval))
            per_bar = group_funding(lake, panel, interval)
            assert per_bar.shape == (panel.bars, 2)
            assert not per_bar[:, 1].any()  # ETHUSDT has no funding file
            close = panel.open_time + interval_ms(interval)
            due = dict(zip(rows[:, 0].astype(np.int64), rows[:, 1]))
            expect = np.array([due.get(int(c), 0.0) for c in close])
            assert np.array_equal(per_bar[:, 0], expect)
            assert np.count_nonzero(expect) == DAYS * 3  # every 8 h the bars cover
    finally:
        lake.funding_path("BTCUSDT").unlink()
    assert group_funding(lake, panel, "1h") is None  # no funding file: none


def test_a_run_pays_the_lakes_funding_and_an_unreadable_file_scores_without(tmp_path, caplog):
    """Funding in training: the same run on the same candles, with a large positive funding
    rate in the lake, records the funding it paid; a funding file that cannot be read is a
    warning and the run is scored without it."""
    plain, funded, broken = (tmp_path / n for n in ("plain", "funded", "broken"))
    for d in (plain, funded, broken):
        d.mkdir()
        fill_lake(d)
    for s in SYMBOLS:
        lake_at(funded).write_funding(s, funding_rows(0.003))
        path = lake_at(broken).funding_path(s)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"not a parquet file")
    a = run(plain, "r", "1h")["metrics"]
    b = run(funded, "r", "1h")["metrics"]
    with caplog.at_level(logging.WARNING, logger="methtrader.training"):
        c = run(broken, "r", "1h")["metrics"]
    assert "funding file unreadable" in caplog.text
    assert a["funding"] == 0 and c["funding"] == 0
    assert b["funding"] != 0 and any(f["funding"] != 0 for f in b["folds"])
    assert [f["trades"] for f in b["folds"]] == [f["trades"] for f in a["folds"]]
    assert b["total_return"] != a["total_return"]
    for fa, fb in zip(a["folds"], b["folds"]):
        # what a fold paid is what its return lost (to the compounding of a few percent)
        assert fb["total_return"] - fa["total_return"] == pytest.approx(-fb["funding"],
                                                                        rel=0.2, abs=1e-4)
    assert {k: c[k] for k in ("sharpe", "total_return", "trades")} == {
        k: a[k] for k in ("sharpe", "total_return", "trades")}


def test_a_run_stores_its_drift_reference_and_registering_it_fills_feature_reference(lake_dir):
    """The drift reference and the volatility profiles are the run's: files in its folder,
    rows of ``feature_reference`` and ``vol_profile`` once the appliance registers it; its training data sits at the reference's own level (a
    KL near 0) and a later regime does not."""
    from appliance import lifecycle
    from appliance.store import Store
    from models.drift import CALENDAR, aggregate, feature_kls, reference_from_json
    from models.vol_regime import vol_ratio
    from models.features import FEATURE_NAMES, compute_features
    from models.registry import load_reference, load_vol_profiles

    receipt = run(lake_dir, "r-1h", "1h")
    saved = json.loads((run_dir(lake_dir, "r-1h") / "reference.json").read_text())
    assert set(saved) == set(FEATURE_NAMES) - CALENDAR
    store = Store(lake_dir / "methtrader.duckdb")
    try:
        lifecycle.register(store, receipt, now=1.0)
        stored = load_reference(store, "m-r-1h")
        profiles = load_vol_profiles(store, "m-r-1h")
    finally:
        store.close()
    assert stored == saved
    # the seasonal volatility profile of each symbol, from its 5m bars (the run is 1h)
    assert profiles == json.loads((run_dir(lake_dir, "r-1h") / "vol_profile.json").read_text())
    assert set(profiles) == set(SYMBOLS) and all(len(p) == 168 for p in profiles.values())
    bars = lake_at(lake_dir).read("5m", "BTCUSDT")
    assert vol_ratio(bars[:, 0], bars[:, 4], profiles["BTCUSDT"]) == pytest.approx(1, abs=0.3)
    ref = reference_from_json(stored)
    assert all(h.count > 1000 and h.bins >= 10 for h in ref.values())  # 2 × 720 bars pooled
    lake = lake_at(lake_dir)
    trained = np.concatenate([compute_features(lake.read("1h", s)) for s in SYMBOLS])
    assert aggregate(feature_kls(trained, FEATURE_NAMES, ref)) < 0.01  # its own data
    candles = lake.read("1h", "BTCUSDT")
    wild = candles.copy()  # the same path with its log returns tripled
    log_close = np.log(candles[:, 4])
    wild[:, 1:5] = np.exp(np.log(candles[:, 1:5]) + 2 * (log_close - log_close[0])[:, None])
    kls = feature_kls(compute_features(wild), FEATURE_NAMES, ref)
    assert min(kls[f] for f in ("vol_12", "vol_48", "atr_14")) > 1.0


def test_a_run_trains_on_a_catalogue_subset_with_its_reward_and_window(lake_dir):
    """AutoML's knobs: an fs2 column subset is the model's input (recorded as feature_set,
    features and params), the training window keeps the last days only, the dead band margin
    and the sample weighting are recorded; a default run is unchanged (fs1, all columns)."""
    cols = ["ret_1", "vol_12", "stoch_k_14", "adx_14", "skew_48"]
    got = train_run(lake_dir, "r-fs2", "t1-a", SYMBOLS, "rf",
                    {**RF, "feature_set": "fs2", "features": cols, "margin": 0.001,
                     "risk": "sortino", "window_days": 10, "horizon": 6}, folds=2)
    assert (got["feature_set"], got["features"]) == ("fs2", cols)
    assert got["params"]["n_features"] == len(cols)
    assert {k: got["params"][k] for k in ("features", "margin", "risk", "window_days",
                                          "horizon")} == {
        "features": cols, "margin": 0.001, "risk": "sortino", "window_days": 10, "horizon": 6}
    assert got["metrics"]["bars"] == pytest.approx(2 * 10 * 288 // 3, abs=2)
    ref = json.loads((run_dir(lake_dir, "r-fs2") / "reference.json").read_text())
    assert sorted(ref) == sorted(cols)
    plain = run(lake_dir, "r-plain")
    assert plain["feature_set"] == "fs1" and len(plain["features"]) == 15
    assert not {"feature_set", "risk", "window_days"} & set(plain["params"])
    with pytest.raises(ValueError, match="not features of fs2"):
        train_run(lake_dir, "r-bad", "t1-a", SYMBOLS, "rf",
                  {**RF, "feature_set": "fs2", "features": ["nope"]}, folds=2)

"""The sim's planted regime break: config-driven, continuous, only the chosen symbols."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.config import ConfigError, build_config
from appliance.exchange.sim import SimExchange
from appliance.clock import VirtualClock
from appliance.exchange.simmarket import DAY_MS, SimMarket
from appliance.exchange.simshock import parse_shock
from appliance.schedule import utc


def test_the_break_triples_returns_from_its_minute_on_and_only_for_its_symbols():
    shock = parse_shock("2024-06-10 12:00", "BTCUSDT", 3.0)
    assert shock.at_ms == utc("2024-06-10 12:00") * 1000
    calm, broken = SimMarket(7), SimMarket(7, shock=shock)
    lo, hi = shock.at_ms - DAY_MS, shock.at_ms + DAY_MS
    a, b = calm.candles("BTCUSDT", lo, hi), broken.candles("BTCUSDT", lo, hi)
    before = a[:, 0] < shock.at_ms
    assert np.array_equal(a[before], b[before])
    ra, rb = (np.diff(np.log(x[~before, 4])) for x in (a, b))
    assert np.std(rb) == pytest.approx(3 * np.std(ra), rel=0.01)
    assert b[~before][0, 1] == pytest.approx(a[~before][0, 1])  # no jump at the break
    assert np.all(b[:, 2] >= np.maximum(b[:, 1], b[:, 4]))  # highs still on top
    assert np.all(b[:, 3] <= np.minimum(b[:, 1], b[:, 4]))
    assert np.array_equal(calm.candles("ETHUSDT", lo, hi), broken.candles("ETHUSDT", lo, hi))
    # a pure function of (seed, symbol, minute): asked in pieces, the same candles
    assert np.array_equal(SimMarket(7, shock=shock).candles("BTCUSDT", shock.at_ms, hi), b[~before])


def test_the_break_comes_from_the_config(tmp_path):
    cfg = build_config(env={}, overrides={"general": {"state_dir": str(tmp_path)},
                                          "sim": {"shock_at": "2024-06-10",
                                                  "shock_symbols": "SOLUSDT,ETHUSDT"}})
    ex = SimExchange(VirtualClock(0, 1), cfg.sim)
    assert ex.market.shock.symbols == {"SOLUSDT", "ETHUSDT"} and ex.market.shock.factor == 3.0
    assert SimExchange(VirtualClock(0, 1), build_config(
        env={}, overrides={"general": {"state_dir": str(tmp_path)}}).sim).market.shock is None
    with pytest.raises(ConfigError, match="shock_at"):
        build_config(env={}, overrides={"sim": {"shock_at": "June 10"}})
    with pytest.raises(ConfigError, match="shock_vol"):
        build_config(env={}, overrides={"sim": {"shock_vol": 0.0}})


def test_fills_and_marks_see_the_break_too():
    # last_price (what the paper venue fills and marks at) reads the computed day directly for
    # speed; after the break it must read the shocked candles the feed stores
    shock = parse_shock("2024-06-10 12:00", "BTCUSDT", 3.0)
    broken = SimMarket(7, shock=shock)
    for t in (shock.at_ms + 7 * 60_000, shock.at_ms + DAY_MS // 2):
        close = broken.candles("BTCUSDT", t - 60_000, t)[-1, 4]
        assert broken.last_price("BTCUSDT", t) == close
    assert SimMarket(7).last_price("BTCUSDT", shock.at_ms + DAY_MS // 2) != \
        broken.last_price("BTCUSDT", shock.at_ms + DAY_MS // 2)

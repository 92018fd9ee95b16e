"""The 3σ rule on the sim market, through the code the drift service runs (models.drift on
models.features rows of 5m bars aggregated from 1m candles, as the service's windows are):
quiet on 30 stationary days with the default seed, and it fires on a planted regime break.

The scenario is the appliance's: a model trained on 87 days; from then on a pass every market
hour over a 3-day window, the rule against the symbol's 14-day history (48 passes before a
verdict). The drift service itself runs the same passes (tests/appliance/services/
test_drift.py); a 30-day appliance run would be far too slow here.
"""

from __future__ import annotations

import numpy as np
import pytest

from appliance.bars import bars_from_minutes
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from appliance.exchange.simshock import Shock
from models.drift import DRIFT, build_reference, compile_reference, drift_pass, feature_kls
from models.features import FEATURE_NAMES, compute_features

SYMBOL, SEED = "BTCUSDT", 7  # the sim's default seed
STEP, HOUR_MS = 300_000, 3_600_000
WINDOW = 3 * 288  # 3 days of 5m bars (drift.window)
HISTORY_H, MIN_HISTORY = 14 * 24, 48  # drift.history, drift.min_history
T = EPOCH_MS + 200 * DAY_MS  # the 30 days judged start here
RUNNING = 30 * 24  # passes before them: the appliance has run a month since training
TRAIN = (T - 120 * DAY_MS, T - 33 * DAY_MS)
SHOCK_DAY = 20


def verdicts(market: SimMarket) -> list[tuple[int, str, float]]:
    """(hour from T, verdict, aggregate) of every pass over the 30 judged days."""
    rows = market.candles(SYMBOL, TRAIN[0], T + 30 * DAY_MS)
    bars = bars_from_minutes(rows, STEP, T + 30 * DAY_MS)
    feats, close = compute_features(bars), bars[:, 0] + STEP
    ref = compile_reference(build_reference(
        feats[(bars[:, 0] >= TRAIN[0]) & (close <= TRAIN[1])], FEATURE_NAMES), FEATURE_NAMES)
    history: list[tuple[float, dict[str, float]]] = []
    out = []
    for hour in range(-RUNNING, 30 * 24):
        end = np.searchsorted(close, T + hour * HOUR_MS, side="right")
        p = drift_pass(feature_kls(feats[end - WINDOW:end], FEATURE_NAMES, ref),
                       history[-HISTORY_H:], min_history=MIN_HISTORY)
        history.append((p.kl, p.kls))
        if hour >= 0:
            out.append((hour, p.verdict.state, p.kl))
    return out


@pytest.fixture(scope="module")
def calm():
    return verdicts(SimMarket(SEED))


def test_thirty_stationary_days_never_fire(calm):
    assert len(calm) == 30 * 24
    assert [h for h, state, _ in calm if state == DRIFT] == []


def test_a_regime_break_fires_within_three_days_and_not_before_it(calm):
    shock = Shock(T + SHOCK_DAY * DAY_MS, frozenset({SYMBOL}), factor=3.0)
    broken = verdicts(SimMarket(SEED, shock=shock))
    fired = [h for h, state, _ in broken if state == DRIFT]
    assert fired and min(fired) >= SHOCK_DAY * 24
    assert min(fired) - SHOCK_DAY * 24 <= 72
    assert broken[:SHOCK_DAY * 24] == calm[:SHOCK_DAY * 24]  # the same market until then

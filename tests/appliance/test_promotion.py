import math

import numpy as np
import pytest

from appliance.promotion import Decision, PromotionRules, ShadowRecord, decide, shadow_stats
from models.metrics import deflated_sharpe_ratio, probabilistic_sharpe_ratio, sharpe_ratio

RULES = PromotionRules()
NO_DSR_GUARD = PromotionRules(dsr_threshold=0.0)


def shadow(*, days=7.0, sharpe=1.0, trades=30, psr=0.99, trials=1, dsr=None):
    return ShadowRecord(model_id="m-1", days_in_shadow=days, sharpe=sharpe, trades=trades,
                        psr=psr, trials=trials, dsr=psr if dsr is None else dsr)


@pytest.mark.parametrize("record, prod, frozen, pinned, rules, action, reason_has", [
    (shadow(days=6.9), 1.1, False, False, RULES, "wait", "6.9 of 7 days"),
    (shadow(days=3, sharpe=-5), None, False, False, RULES, "wait", "3 of 7"),  # no verdict yet
    (shadow(), 1.1, True, False, RULES, "wait", "deploys frozen"),
    (shadow(sharpe=-1), 1.1, True, False, RULES, "wait", "deploys frozen"),  # not condemned
    (shadow(), 1.1, False, True, RULES, "wait", "prod model pinned"),
    (shadow(sharpe=0.5), None, False, False, RULES, "promote", "0 (no prod model)"),
    (shadow(sharpe=-0.1), None, False, False, RULES, "reject", "sharpe -0.100 <= 0"),
    (shadow(sharpe=0.0), None, False, False, RULES, "reject", "sharpe"),  # strictly above 0
    (shadow(sharpe=1.0), 1.1, False, False, RULES, "promote", "1.000 > prod 1.100"),  # > 0.9
    (shadow(sharpe=0.8), 1.1, False, False, RULES, "reject", "sharpe 0.800 <= prod 1.100"),
    (shadow(days=8, sharpe=1.0), 1.1, False, False, RULES, "promote", "sharpe"),
    (shadow(trades=19), 1.1, False, False, RULES, "reject", "trades 19 < 20"),
    (shadow(trades=20), 1.1, False, False, RULES, "promote", "20 trades"),
    (shadow(trials=6, dsr=0.97), 1.1, False, False, RULES, "promote", "DSR 0.970 over 6 trials"),
    # the PSR alone would pass; as the best of six tries it does not
    (shadow(psr=0.99, trials=6, dsr=0.81), 1.1, False, False, RULES, "reject",
     "DSR 0.810 <= 0.95 over 6 trials"),
    (shadow(psr=0.99, trials=6, dsr=0.81), 1.1, False, False, NO_DSR_GUARD, "promote", "sharpe"),
    # a lucky, short-lived high Sharpe: the DSR guard refuses it, without the guard it passes
    (shadow(sharpe=4.0, psr=0.7), 1.1, False, False, RULES, "reject",
     "DSR 0.700 <= 0.95 over 1 trial"),
    (shadow(sharpe=4.0, psr=0.7), 1.1, False, False, NO_DSR_GUARD, "promote", "sharpe"),
    (shadow(psr=math.nan), 1.1, False, False, RULES, "reject", "DSR nan"),  # no evidence
    (shadow(psr=math.nan), 1.1, False, False, NO_DSR_GUARD, "promote", "sharpe"),
    (shadow(sharpe=math.nan), None, False, False, RULES, "reject", "sharpe nan"),
])
def test_decide(record, prod, frozen, pinned, rules, action, reason_has):
    decision = decide(record, prod, deploys_frozen=frozen, prod_pinned=pinned, rules=rules)
    assert decision.action == action
    assert reason_has in decision.reason


def test_reject_names_every_failed_condition():
    decision = decide(shadow(sharpe=0.5, trades=3, psr=0.6, trials=4, dsr=0.4), 1.1,
                      deploys_frozen=False, prod_pinned=False, rules=RULES)
    assert decision == Decision("reject", "sharpe 0.500 <= prod 1.100 - margin 0.2 = 0.900; "
                                          "trades 3 < 20; DSR 0.400 <= 0.95 over 4 trials")


def test_shadow_stats_uses_the_backtest_metrics():
    rng = np.random.default_rng(3)
    net = rng.normal(0.0005, 0.01, 500)
    positions = np.sign(np.sin(np.arange(500) / 7.0))  # flips every ~22 bars
    sharpe, trades, psr = shadow_stats(net.tolist(), positions.tolist(), 8760.0)
    assert sharpe == pytest.approx(sharpe_ratio(net, 8760.0))
    assert psr == pytest.approx(probabilistic_sharpe_ratio(net, 0.0, 8760.0))
    assert trades == 23


def test_a_short_lucky_run_has_a_high_sharpe_and_a_low_psr():
    net = [0.01, -0.005, 0.012, -0.004, 0.008, 0.002]  # six hours
    sharpe, trades, psr = shadow_stats(net, [1, -1, 1, -1, 1, -1], 8760.0)
    assert sharpe > 10 and trades == 6 and psr < 0.95
    record = ShadowRecord("lucky", 7.0, sharpe, 25, psr, 1, psr)
    guarded = decide(record, 1.0, deploys_frozen=False, prod_pinned=False, rules=RULES)
    unguarded = decide(record, 1.0, deploys_frozen=False, prod_pinned=False, rules=NO_DSR_GUARD)
    assert (guarded.action, unguarded.action) == ("reject", "promote")


@pytest.mark.parametrize("net, positions", [([], []), ([0.01], [1.0])])
def test_shadow_stats_without_evidence(net, positions):
    sharpe, trades, psr = shadow_stats(net, positions, 8760.0)
    assert sharpe == 0.0 and math.isnan(psr)
    assert trades == len(positions)


def test_shadow_stats_needs_aligned_series():
    with pytest.raises(ValueError):
        shadow_stats([0.01, 0.02], [1.0], 8760.0)


def test_a_record_that_passes_alone_fails_as_the_best_of_many_tries():
    """Finding 6: a shadow tested alone with PSR > 0.95 while the group tried many."""
    rng = np.random.default_rng(11)
    net = rng.normal(0.0002, 0.004, 7 * 288)  # a week of 5m bars with a modest edge
    positions = np.sign(np.sin(np.arange(len(net)) / 20.0))
    sharpe, trades, psr = shadow_stats(net.tolist(), positions.tolist(), 105_120.0)
    verdicts = {}
    for trials in (1, 30):
        dsr = deflated_sharpe_ratio(net, trials, 105_120.0)
        record = ShadowRecord("m-1", 7.0, sharpe, trades, psr, trials, dsr)
        verdicts[trials] = decide(record, None, deploys_frozen=False, prod_pinned=False,
                                  rules=RULES)
        off = decide(record, None, deploys_frozen=False, prod_pinned=False, rules=NO_DSR_GUARD)
        assert off.action == "promote"  # threshold 0: only Sharpe and trades count
    assert psr > 0.95
    assert verdicts[1].action == "promote"
    assert verdicts[30].action == "reject"
    assert verdicts[30].reason.startswith("DSR 0.")
    assert "<= 0.95 over 30 trials" in verdicts[30].reason

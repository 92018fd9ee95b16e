"""The rule that splits the account across the groups' prod books."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.allocation import group_volatility, weights


def test_equal_risk_gives_a_calm_group_more_capital_and_the_shares_sum_to_one() -> None:
    w = weights({"calm": 0.001, "wild": 0.004, "mid": 0.002})
    assert sum(w.values()) == pytest.approx(1.0, abs=1e-12)
    # each group's share times its volatility is the same risk
    risks = {g: w[g] * v for g, v in {"calm": 0.001, "wild": 0.004, "mid": 0.002}.items()}
    assert max(risks.values()) == pytest.approx(min(risks.values()), rel=1e-12)
    assert w["calm"] == pytest.approx(4 * w["wild"])


def test_a_group_without_a_volatility_yet_gets_the_median_groups_share() -> None:
    w = weights({"a": 0.001, "b": 0.003, "new": None})
    assert w["new"] == pytest.approx(w["b"] * 0.003 / 0.002)  # median of 0.001 and 0.003
    assert weights({"x": None, "y": None}) == {"x": 0.5, "y": 0.5}


def test_equal_rule_and_unknown_rule() -> None:
    assert weights({"a": 0.001, "b": 0.01, "c": None}, "equal") == pytest.approx(
        {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert weights({}) == {}
    with pytest.raises(ValueError, match="allocation rule 'kelly'; choose one of equal_risk"):
        weights({"a": 0.01}, "kelly")


def test_group_volatility_is_that_of_the_equal_weighted_returns_aligned_from_the_end() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 0.01, 300), rng.normal(0, 0.02, 250)
    expected = np.std((a[-250:] + b) / 2, ddof=1)
    assert group_volatility([a, b]) == pytest.approx(expected, rel=1e-12)
    assert group_volatility([a[:19]]) is None  # too few bars to say
    assert group_volatility([np.zeros(50)]) is None  # a flat market gives no basis
    assert group_volatility([]) is None and group_volatility([np.zeros(0)]) is None

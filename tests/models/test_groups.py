import numpy as np

from models.groups import GroupingRules, liquidity_tier, make_groups


def test_liquidity_tiers():
    assert liquidity_tier(5e9, (500e6, 50e6)) == 1
    assert liquidity_tier(100e6, (500e6, 50e6)) == 2
    assert liquidity_tier(20e6, (500e6, 50e6)) == 3


def test_groups_split_by_tier_then_by_correlation_and_size():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=500), rng.normal(size=500)
    turnovers = {f"A{i}": 2e9 for i in range(4)} | {f"B{i}": 2e9 for i in range(4)} | \
        {"SMALL1": 20e6, "SMALL2": 25e6}
    returns = {f"A{i}": a + 0.1 * rng.normal(size=500) for i in range(4)}
    returns |= {f"B{i}": b + 0.1 * rng.normal(size=500) for i in range(4)}
    returns |= {"SMALL1": rng.normal(size=500), "SMALL2": rng.normal(size=500)}
    groups = make_groups(turnovers, returns, GroupingRules(max_size=4))
    as_sets = {frozenset(g.symbols) for g in groups}
    assert frozenset({"A0", "A1", "A2", "A3"}) in as_sets  # correlated together
    assert frozenset({"B0", "B1", "B2", "B3"}) in as_sets
    assert frozenset({"SMALL1", "SMALL2"}) in as_sets  # a lower tier never mixes in
    assert all(len(g.symbols) <= 4 for g in groups)
    assert sorted(s for g in groups for s in g.symbols) == sorted(turnovers)
    assert make_groups(turnovers, returns, GroupingRules(max_size=4)) == groups  # stable


def test_symbols_without_returns_still_get_a_group():
    groups = make_groups({"X": 1e9, "Y": 1e9}, {"X": np.arange(10.0)})
    assert sorted(s for g in groups for s in g.symbols) == ["X", "Y"]

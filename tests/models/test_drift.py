"""Drift's core against known distributions: references, KL, the aggregate and the 3σ rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.drift import (DRIFT, OK, WARMING, Histogram, aggregate, bin_counts, build_reference,
                          feature_kls, kl_divergence, moved_most, reference_from_json,
                          past_passes, reference_histogram, reference_to_json, three_sigma)

N = 20_000
LIVE = 864  # a 3-day window of 5m bars


@pytest.fixture
def rng():
    return np.random.default_rng(42)


@pytest.fixture
def normal_ref(rng):
    return reference_histogram(rng.normal(0, 1, N))


def test_reference_bins_are_equal_mass_open_ended_and_never_empty(rng):
    ref = reference_histogram(np.r_[rng.normal(0, 1, N), [np.nan] * 10])
    assert ref.bins == 20 and ref.count == N
    assert np.all(np.diff(ref.edges) > 0)
    assert np.allclose(ref.probs, 1 / 20, atol=0.002) and ref.probs.sum() == pytest.approx(1)
    # values far beyond anything seen in training land in the outer bins
    assert list(bin_counts(np.array([-1e9, 1e9]), ref.edges)[[0, -1]]) == [1, 1]
    # a feature with two values gets a bin for each and an open one above the largest
    coarse = reference_histogram(np.r_[np.zeros(900), np.ones(100)])
    assert list(coarse.edges) == [0.0, 1.0]
    assert coarse.probs == pytest.approx(np.array([901, 101, 1]) / 1003)


def test_laplace_smoothing_keeps_the_kl_finite_for_values_in_a_bin_training_never_saw():
    ref = reference_histogram(np.r_[np.zeros(500), np.ones(500)])
    # bins (-inf, 0], (0, 1], (1, inf): the last one empty in training
    assert list(ref.edges) == [0.0, 1.0]
    q = np.array([501, 501, 1]) / 1003
    p = np.array([1, 1, 101]) / 103  # every live value beyond the training maximum
    assert kl_divergence(np.full(100, 5.0), ref) == pytest.approx(float(np.sum(p * np.log(p / q))))


def test_the_same_distribution_is_near_zero(rng, normal_ref):
    kl = kl_divergence(rng.normal(0, 1, LIVE), normal_ref)
    assert 0 <= kl < 0.04  # the estimator's bias, ~ (bins - 1) / (2 n) = 0.011


def test_a_shifted_mean_is_large(rng, normal_ref):
    same = kl_divergence(rng.normal(0, 1, LIVE), normal_ref)
    shifted = kl_divergence(rng.normal(1.0, 1, LIVE), normal_ref)
    assert shifted > 0.3 and shifted > 10 * same  # the true KL of N(1,1) from N(0,1) is 0.5


def test_a_doubled_variance_is_large(rng, normal_ref):
    same = kl_divergence(rng.normal(0, 1, LIVE), normal_ref)
    wide = kl_divergence(rng.normal(0, math.sqrt(2), LIVE), normal_ref)
    assert wide > 0.05 and wide > 4 * same
    wider = kl_divergence(rng.normal(0, 3, LIVE), normal_ref)
    assert wider > 3 * wide  # monotone in the size of the change


def test_kl_ignores_nan_and_is_nan_without_any_value(normal_ref):
    assert math.isnan(kl_divergence(np.full(10, np.nan), normal_ref))
    assert kl_divergence(np.r_[np.zeros(100), [np.nan] * 50], normal_ref) == pytest.approx(
        kl_divergence(np.zeros(100), normal_ref))


def test_reference_round_trips_through_json_and_leaves_the_calendar_out(rng):
    names = ["ret_1", "tod_sin", "vol_12"]
    rows = np.column_stack([rng.normal(0, 1, 500), rng.uniform(-1, 1, 500),
                            rng.gamma(2, 1, 500)])
    ref = build_reference(rows, names)
    assert set(ref) == {"ret_1", "vol_12"}
    back = reference_from_json(reference_to_json(ref))
    assert all(np.array_equal(back[n].edges, ref[n].edges) and
               np.array_equal(back[n].probs, ref[n].probs) for n in ref)
    with pytest.raises(ValueError):
        Histogram.from_json({"edges": [0.0], "probs": [1.0, 0.0]})


def test_feature_kls_and_the_aggregate_is_their_mean(rng):
    names = ["a", "b", "c"]
    train = rng.normal(0, 1, (N, 3))
    ref = build_reference(train, names)
    live = rng.normal(0, 1, (LIVE, 3))
    live[:, 1] += 2.0  # only b moved
    kls = feature_kls(live, names, ref)
    assert set(kls) == set(names) and kls["b"] > 10 * max(kls["a"], kls["c"])
    for j, n in enumerate(names):  # the vectorised pass is kl_divergence, feature by feature
        assert kls[n] == pytest.approx(kl_divergence(live[:, j], ref[n]), rel=1e-12)
    ragged = {"a": reference_histogram(np.r_[np.zeros(500), np.ones(500)]), "b": ref["b"]}
    coin = (live[:, 0] > 0.5).astype(float)  # 3 bins for a, 20 for b; some values NaN
    coin[::7] = np.nan
    got = feature_kls(np.column_stack([coin, live[:, 1:]]), names, ragged)
    assert set(got) == {"a", "b"}
    assert got["a"] == pytest.approx(kl_divergence(coin, ragged["a"]), rel=1e-12)
    assert got["b"] == pytest.approx(kls["b"], rel=1e-12)
    assert feature_kls(np.full((5, 3), np.nan), names, ref) == {}
    assert aggregate(kls) == pytest.approx(np.mean(list(kls.values())))
    assert math.isnan(aggregate({}))
    assert moved_most(kls, [], n=1) == ["b"]
    # "moved most" is the rise above the feature's own past level, not its level
    assert moved_most({"a": 0.5, "b": 0.3}, [{"a": 0.5, "b": 0.05}] * 3, n=1) == ["b"]


def test_no_verdict_before_min_history():
    v = three_sigma([0.1] * 9, 5.0, min_history=10)
    assert v.state == WARMING and v.points == 9 and v.line is None and not v.fired
    assert three_sigma([0.1, 0.2] * 5, 5.0, min_history=10, persist=1).state == DRIFT


def test_the_rule_fires_on_a_planted_jump_and_not_on_stationary_noise(rng):
    series = list(0.05 + 0.005 * rng.standard_normal(24 * 28))  # 4 weeks of hourly noise
    history_len = 24 * 14
    bare = {"floor": 0.0, "persist": 1}  # the plain 3σ rule on the log scale
    fired = [three_sigma(series[max(0, i - history_len):i], series[i], min_history=48,
                         **bare).fired for i in range(len(series))]
    assert sum(fired) <= 2  # a 3σ excursion of Gaussian noise: p ≈ 0.13% per point
    jump = three_sigma(series[-history_len:], 0.05 + 0.005 * 6, min_history=48, **bare)
    assert jump.fired and jump.zscore > 3 and jump.line == pytest.approx(
        math.exp(jump.mean + 3 * jump.std))
    logs = np.log(series[-history_len:])  # the rule is taken on the log scale
    assert jump.mean == pytest.approx(logs.mean()) and jump.std == pytest.approx(logs.std(ddof=1))
    assert three_sigma(series[-history_len:], 0.05, min_history=48, **bare).state == OK


def test_a_calm_history_draws_the_line_with_the_floor(rng):
    calm = list(0.05 * np.exp(0.05 * rng.standard_normal(336)))  # log deviation ~0.05
    spell = 0.05 * math.exp(0.6)  # an ordinary volatile spell: 12σ of this history
    v = three_sigma(calm, spell, min_history=48, persist=1)
    assert v.state == OK and v.std == 0.4 and v.zscore < 3
    assert three_sigma(calm, spell, min_history=48, persist=1, floor=0.0).fired
    assert three_sigma(calm, 0.05 * math.exp(1.3), min_history=48, persist=1).fired


def test_drift_needs_persist_passes_in_a_row_above_the_line(rng):
    history = list(0.05 * np.exp(0.1 * rng.standard_normal(336)))
    states = []
    for _ in range(7):  # a sustained tenfold rise
        v = three_sigma(history, 0.5, min_history=48, persist=6, span=336)
        states.append((v.state, v.above))
        history.append(0.5)
    assert states[:5] == [(OK, n) for n in range(1, 6)]
    assert states[5:] == [(DRIFT, 6), (DRIFT, 6)]
    spike = list(0.05 * np.exp(0.1 * rng.standard_normal(336))) + [0.5] * 5 + [0.05]
    assert three_sigma(spike, 0.5, min_history=48, persist=6, span=336).above == 1


def test_past_passes_are_the_passes_a_live_window_would_have_given(rng):
    names = ["a", "b"]
    ref = build_reference(rng.standard_normal((2000, 2)), names)
    rows = rng.standard_normal((300, 2)) * np.linspace(1, 3, 300)[:, None]  # volatility rising
    rows[:20] = np.nan  # not warm yet
    close = 1_000 + 10 * np.arange(300)
    window = 50
    times = [1_000, 1_400, 1_695, 2_000, 3_990, 5_000]
    got = past_passes(rows, close, names, ref, times, window)
    # 1000 and 1400: fewer than a full window of warm rows closed by then
    assert [t for t, _, _ in got] == [1_695, 2_000, 3_990, 5_000]
    for t, kl, kls in got:
        end = int(np.searchsorted(close, t, side="right"))
        assert kls == pytest.approx(feature_kls(rows[end - window:end], names, ref))
        assert kl == pytest.approx(aggregate(kls))
    assert got[-1][1] > got[0][1]  # the rising volatility shows

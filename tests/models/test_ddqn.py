"""The ``ddqn`` student: its rewards, distillation towards a teacher, and its ONNX graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from models.kinds import KINDS, get_kind, train
from models.kinds.base import merge_params
from models.kinds.ddqn import (RlData, episode_segments, epsilon_at, fit_rl, q_values,
                               step_rewards)
from models.serving import OnnxModel

F = 6
SMALL = {"episodes": 12, "episode_bars": 128, "updates": 25, "batch_size": 128,
         "hidden": [32, 32]}


def market(n: int = 3000, seed: int = 0, teacher: bool = True) -> RlData:
    """Two symbols of random features and returns unrelated to them; the teacher says long
    when feature 0 is high, short when it is low, flat between."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 1, F)).astype(np.float32) * np.geomspace(1e-3, 3, F, dtype=np.float32)
    ret = rng.normal(0.0, 0.002, n)
    next_ok = np.ones(n, dtype=bool)
    next_ok[n // 2 - 1] = next_ok[-1] = False  # the last bar of each symbol has no next
    z = x[:, -1, 0] / 1e-3
    probs = np.stack([1 / (1 + np.exp(3 * z)), np.exp(-z ** 2), 1 / (1 + np.exp(-3 * z))], 1)
    probs = (probs / probs.sum(axis=1, keepdims=True)).astype(np.float32)
    return RlData(x, ret, np.full(n, 0.00075), next_ok, probs if teacher else None)


def params(**over: object) -> dict[str, object]:
    merged = merge_params(KINDS["ddqn"], {**SMALL, **over})
    merged["n_features"] = F
    return merged


def agreement(model, data: RlData) -> float:
    greedy = q_values(model, data.x).argmax(axis=1)
    return float(np.mean(greedy == data.teacher.argmax(axis=1)))


def test_a_position_change_pays_the_fee_and_a_flip_pays_it_twice() -> None:
    positions = np.array([1.0, 1.0, -1.0, 0.0])
    ret = np.array([0.01, -0.02, -0.01, 0.03])
    rewards = step_rewards(positions, ret, np.full(4, 0.001))
    assert rewards == pytest.approx([0.01 - 0.001, -0.02, 0.01 - 0.002, -0.001])


def test_episodes_stay_inside_one_symbols_consecutive_bars() -> None:
    next_ok = np.array([1, 1, 1, 0, 1, 1, 1, 1, 1, 0], dtype=bool)
    assert episode_segments(next_ok, 3) == [(0, 3), (4, 9)]
    assert episode_segments(next_ok, 4) == [(4, 9)]
    assert epsilon_at(0, 10, 1.0, 0.1, 0.5) == 1.0
    assert epsilon_at(5, 10, 1.0, 0.1, 0.5) == pytest.approx(0.1)
    assert epsilon_at(9, 10, 1.0, 0.1, 0.5) == pytest.approx(0.1)


def test_distillation_makes_the_student_agree_with_the_teacher() -> None:
    """Fixed seed, same data: the weighted student follows the teacher's argmax measurably
    more often than the student that learns from rewards alone."""
    data = market()
    alone = fit_rl(data, params(distill_weight=0.0), seed=3)
    taught = fit_rl(data, params(distill_weight=2.0), seed=3)
    a0, a1 = agreement(alone, data), agreement(taught, data)
    assert a1 > a0 + 0.2, (a0, a1)
    assert a1 > 0.6


def test_episode_reports_carry_loss_epsilon_and_agreement() -> None:
    seen: list[dict] = []
    fit_rl(market(), params(episodes=3, distill_weight=1.0), seed=0, on_episode=seen.append)
    assert [r["episode"] for r in seen] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and 0.0 <= r["agreement"] <= 1.0 for r in seen)
    assert seen[0]["epsilon"] > seen[-1]["epsilon"]
    quiet: list[dict] = []
    fit_rl(market(teacher=False), params(episodes=1), seed=0, on_episode=quiet.append)
    assert quiet[0]["agreement"] is None


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_onnx_outputs_the_softmax_of_q_over_t(tmp_path, temperature: float) -> None:
    data = market(800)
    model = fit_rl(data, params(episodes=2, episode_bars=64, updates=5,
                                temperature=temperature, tau=0.05), seed=1)
    path = tmp_path / "student.onnx"
    model.export_onnx(path)
    x = data.x[:300]
    served = OnnxModel(path, providers=["CPUExecutionProvider"]).predict(x)
    q = q_values(model, x).astype(np.float64)
    expected = np.exp(q / temperature - (q / temperature).max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.abs(served - model.predict_proba(x)).max() <= 1e-5
    assert np.abs(served - expected).max() <= 1e-5
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert meta["methtrader.kind"] == "ddqn" and meta["methtrader.classes"] == "short,flat,long"


def test_the_label_path_refuses_ddqn_and_points_at_fit_rl() -> None:
    x = np.zeros((10, 1, F), dtype=np.float32)
    with pytest.raises(ValueError, match="fit_rl"):
        train("ddqn", x, np.ones(10, dtype=np.int64))
    assert get_kind("ddqn").name == "ddqn"


def test_no_episode_fits_in_too_short_a_history() -> None:
    with pytest.raises(ValueError, match="episode_bars"):
        fit_rl(market(100), params(episode_bars=400), seed=0)

"""Model kinds: training contract, learning, and ONNX graphs that match the frameworks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx.external_data_helper import uses_external_data
from numpy.lib.stride_tricks import sliding_window_view

from models.features import FEATURE_NAMES, WARMUP_BARS, compute_features
from models.kinds import (KINDS, META_KIND, META_LOOKBACK, META_N_FEATURES, TrainedModel,
                          build_ensemble, train)
from models.labels import label_classes

from .real import load_freqtrade

PARITY = 1e-4
F = len(FEATURE_NAMES)
SCALES = np.geomspace(1e-3, 10.0, F).astype(np.float32)
"""Per-feature scales of the synthetic data, as uneven as the real features'."""
BASE_KINDS = ("rf", "mlp", "lstm")
TINY = {"rf": {"n_estimators": 12, "tree_batches": 3},
        "mlp": {"lookback": 4, "epochs": 6, "batch_size": 128},
        "lstm": {"lookback": 12, "epochs": 4, "batch_size": 128, "lr": 5e-3}}


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, 12, F); label = sign of feature 0 in the last row, flat near zero."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, 12, F)) * SCALES).astype(np.float32)
    z = x[:, -1, 0] / SCALES[0]
    y = np.where(z > 0.43, 2, np.where(z < -0.43, 0, 1))
    return x, y


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return sess.run(["probs"], {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


def trained_set(x: np.ndarray, y: np.ndarray, tmp: Path) -> dict[str, tuple[TrainedModel, Path]]:
    models = {kind: train(kind, x, y, params=TINY[kind], seed=1) for kind in BASE_KINDS}
    models["ensemble"] = build_ensemble([models[k] for k in BASE_KINDS])
    out = {}
    for kind, model in models.items():
        path = tmp / f"{kind}.onnx"
        model.export_onnx(path)
        out[kind] = (model, path)
    return out


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TrainedModel, Path]]:
    x, y = synthetic(3000, seed=0)
    return trained_set(x, y, tmp_path_factory.mktemp("synth"))


@pytest.fixture(scope="module")
def real_windows() -> tuple[np.ndarray, np.ndarray]:
    """Windows (n, 12, F) of fs1 features of ETH/BTC 5m candles, with 12-bar labels."""
    bars = load_freqtrade("ETH_BTC-5m.json")
    feats = compute_features(bars)[WARMUP_BARS:].astype(np.float32)
    labels = label_classes(bars[WARMUP_BARS:, 4], 12)
    windows = sliding_window_view(feats, 12, axis=0).transpose(0, 2, 1)
    y = labels[11:]
    keep = (y >= 0) & np.isfinite(windows).all(axis=(1, 2))
    return np.ascontiguousarray(windows[keep]), y[keep].astype(np.int64)


@pytest.fixture(scope="module")
def real(real_windows: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, tuple[TrainedModel, Path]]:
    x, y = real_windows
    return trained_set(x, y, tmp_path_factory.mktemp("real"))


@pytest.mark.parametrize("kind", [*BASE_KINDS, "ensemble"])
@pytest.mark.parametrize("batch", [1, 50])
def test_onnx_matches_framework_on_random_windows(synth, kind: str, batch: int) -> None:
    model, path = synth[kind]
    rng = np.random.default_rng(batch)
    x = (rng.normal(size=(batch, model.lookback, F)) * SCALES * 2).astype(np.float32)
    want = model.predict_proba(x)
    got = run(session(path), x)
    assert got.shape == want.shape == (batch, 3) and got.dtype == np.float32
    assert np.abs(got - want).max() < PARITY
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", [*BASE_KINDS, "ensemble"])
def test_onnx_matches_framework_on_real_features(real, real_windows, kind: str) -> None:
    model, path = real[kind]
    x = real_windows[0][:, -model.lookback:]
    want = model.predict_proba(x)
    got = run(session(path), x)
    assert np.abs(got - want).max() < PARITY
    one = run(session(path), x[:1])
    assert np.abs(one - want[:1]).max() < PARITY
    # Not a degenerate model: its predictions vary across real bars.
    assert want.std(axis=0).max() > 1e-3


def test_lstm_graph_runs_at_other_window_lengths(synth) -> None:
    """The dynamo exporter has frozen the time axis of recurrent nets at the example length."""
    model, path = synth["lstm"]
    sess = session(path)
    rng = np.random.default_rng(7)
    for rows in (1, model.lookback - 5, model.lookback, model.lookback + 7):
        for batch in (1, 50):
            x = (rng.normal(size=(batch, rows, F)) * SCALES).astype(np.float32)
            assert np.abs(run(sess, x) - model.predict_proba(x)).max() < PARITY, (rows, batch)
    # Longer windows are cut to the last `lookback` rows in both paths.
    long = (rng.normal(size=(4, model.lookback + 7, F)) * SCALES).astype(np.float32)
    assert np.allclose(model.predict_proba(long), model.predict_proba(long[:, -model.lookback:]))


@pytest.mark.parametrize("kind", [*BASE_KINDS, "ensemble"])
def test_exported_graph_contract(synth, kind: str) -> None:
    model, path = synth[kind]
    proto = onnx.load(str(path))
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "ensemble.onnx", "lstm.onnx", "mlp.onnx", "rf.onnx"]
    assert not any(uses_external_data(t) for t in proto.graph.initializer)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("x", "probs")
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and isinstance(out_dims[0], str)
    assert in_dims[2] == F and out_dims[1] == 3
    if kind == "lstm":
        assert isinstance(in_dims[1], str)
    else:
        assert in_dims[1] == model.lookback
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[META_KIND] == kind
    assert int(meta[META_LOOKBACK]) == model.lookback and int(meta[META_N_FEATURES]) == F


@pytest.mark.parametrize("kind", [*BASE_KINDS, "ensemble"])
def test_learns_a_learnable_problem(synth, kind: str) -> None:
    model, _ = synth[kind]
    x, y = synthetic(2000, seed=99)
    accuracy = (model.predict_proba(x).argmax(axis=1) == y).mean()
    assert accuracy > 0.6, accuracy


def test_ensemble_is_the_mean_of_its_members(synth) -> None:
    ensemble, path = synth["ensemble"]
    assert ensemble.lookback == max(m.lookback for m in ensemble.model)
    x, _ = synthetic(50, seed=5)
    members = np.mean([m.predict_proba(x) for m in ensemble.model], axis=0)
    assert np.abs(ensemble.predict_proba(x) - members).max() < 1e-5
    assert np.abs(run(session(path), x) - members).max() < 1e-5
    assert sum(n.op_type == "Mean" for n in onnx.load(str(path)).graph.node) == 1


def test_ensemble_rejects_members_of_different_widths(synth) -> None:
    rf, _ = synth["rf"]
    x, y = synthetic(300, seed=3)
    narrow = train("rf", x[:, :, :5], y, params={"n_estimators": 2, "tree_batches": 1})
    with pytest.raises(ValueError, match="n_features"):
        build_ensemble([rf, narrow])
    with pytest.raises(ValueError, match="at least one member"):
        build_ensemble([])


def test_train_ensemble_trains_its_members() -> None:
    x, y = synthetic(400, seed=4)
    seen: list[float] = []
    model = train("ensemble", x, y, params={"members": [
        {"kind": "rf", "params": {"n_estimators": 4, "tree_batches": 2}},
        {"kind": "mlp", "params": {"epochs": 2}}]},
        progress=lambda epoch, loss, pct: seen.append(pct))
    assert [m.kind for m in model.model] == ["rf", "mlp"]
    assert seen == sorted(seen) and seen[-1] == pytest.approx(100.0) and max(seen) <= 100.0
    json.dumps(model.params)


@pytest.mark.parametrize("kind", BASE_KINDS)
def test_training_contract(kind: str) -> None:
    x, y = synthetic(600, seed=2)
    calls: list[tuple[int, float, float, int]] = []

    def progress(epoch: int, loss: float, percent: float) -> None:
        calls.append((epoch, loss, percent, torch.get_num_threads()))

    threads_before = torch.get_num_threads()
    params = {**TINY[kind], "epochs": 3} if kind != "rf" else TINY[kind]
    model = train(kind, x, y, params=params, seed=3, progress=progress,
                  x_val=x[:100], y_val=y[:100])
    assert torch.get_num_threads() == threads_before
    assert calls and calls[-1][2] == pytest.approx(100.0)
    assert [c[2] for c in calls] == sorted(c[2] for c in calls)
    assert all(np.isfinite(c[1]) for c in calls)
    assert all(c[3] <= 2 for c in calls)
    expected = 3
    assert len(model.loss_curve) == len(model.val_loss_curve) == expected
    params_out = json.loads(json.dumps(model.params))
    assert params_out["n_features"] == F and params_out["lookback"] == model.lookback
    again = train(kind, x, y, params=params, seed=3, x_val=x[:100], y_val=y[:100])
    assert np.array_equal(again.predict_proba(x[:20]), model.predict_proba(x[:20]))


def test_training_rejects_bad_input() -> None:
    x, y = synthetic(200, seed=6)
    with pytest.raises(ValueError, match="unknown rf params"):
        train("rf", x, y, params={"trees": 3})
    with pytest.raises(ValueError, match="unknown model kind"):
        train("xgb", x, y)
    with pytest.raises(ValueError, match="classes"):
        train("rf", x, np.where(y == 0, -1, y))
    bad = x.copy()
    bad[5, -1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train("mlp", bad, y)
    with pytest.raises(ValueError, match=r"\(batch, 32, 15\)"):
        train("lstm", x, y)


def test_rf_missing_class_still_gives_three_columns(tmp_path: Path) -> None:
    x, y = synthetic(500, seed=8)
    y = np.where(y == 0, 1, y)
    model = train("rf", x, y, params={"n_estimators": 4, "tree_batches": 1})
    probs = model.predict_proba(x[:50])
    assert probs.shape == (50, 3) and np.all(probs[:, 0] == 0.0)
    model.export_onnx(tmp_path / "rf.onnx")
    assert np.abs(run(session(tmp_path / "rf.onnx"), x[:50, -1:]) - probs).max() < PARITY


def test_kinds_registry() -> None:
    assert {"rf", "mlp", "lstm", "ensemble"} <= set(KINDS)
    for name, kind in KINDS.items():
        assert kind.name == name
        json.dumps(kind.defaults)

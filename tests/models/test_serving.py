"""ONNX serving: low-latency sessions, shape checks, one batched call per model per bar."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from models.kinds import TrainedModel, train
from models.serving import ModelServer, OnnxModel, sha256_of

F = 15
SYMBOLS = [f"SYM{i:02d}USDT" for i in range(50)]


def data(n: int, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, rows, F)).astype(np.float32)
    y = np.digitize(x[:, -1, 0], [-0.43, 0.43])
    return x, y


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TrainedModel, Path]]:
    x, y = data(800, 8, seed=0)
    tmp = tmp_path_factory.mktemp("serving")
    models = {"rf": train("rf", x, y, params={"n_estimators": 6, "tree_batches": 1}),
              "lstm": train("lstm", x, y, params={"lookback": 8, "epochs": 1})}
    out = {}
    for name, model in models.items():
        model.export_onnx(tmp / f"{name}.onnx")
        out[name] = (model, tmp / f"{name}.onnx")
    return out


class CountingSession:
    """Wraps an InferenceSession and counts ``run`` calls."""

    def __init__(self, inner: ort.InferenceSession) -> None:
        self.inner = inner
        self.calls: list[tuple[int, ...]] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.calls.append(feeds["x"].shape)
        return self.inner.run(outputs, feeds)


def test_session_is_set_up_for_low_latency(exported) -> None:
    model = OnnxModel(exported["rf"][1])
    options = model.session.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    assert model.device == ("CUDA" if has_cuda else "CPU")
    assert model.session.get_providers()[-1] == "CPUExecutionProvider"
    assert (model.kind, model.lookback, model.n_features) == ("rf", 1, F)


def test_explicit_cpu_provider(exported) -> None:
    model = OnnxModel(exported["lstm"][1], providers=["CPUExecutionProvider"])
    assert model.device == "CPU" and model.session.get_providers() == ["CPUExecutionProvider"]


@pytest.mark.parametrize("name", ["rf", "lstm"])
@pytest.mark.parametrize("batch", [1, 50])
def test_predict_matches_the_framework(exported, name: str, batch: int) -> None:
    trained, path = exported[name]
    x, _ = data(batch, trained.lookback, seed=batch)
    got = OnnxModel(path).predict(x)
    assert got.shape == (batch, 3)
    assert np.abs(got - trained.predict_proba(x)).max() < 1e-4


def test_predict_rejects_wrong_shapes_naming_the_expected_one(exported) -> None:
    model = OnnxModel(exported["lstm"][1])
    expected = r"expects input of shape \(batch, 8, 15\)"
    for bad in (np.zeros((8, F)), np.zeros((2, 7, F)), np.zeros((2, 8, F + 1)),
                np.zeros((0, 8, F))):
        with pytest.raises(ValueError, match=expected):
            model.predict(bad.astype(np.float32))


def test_sha256_of(exported) -> None:
    path = exported["rf"][1]
    assert sha256_of(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert OnnxModel(path).sha256 == sha256_of(path)


def test_server_makes_one_call_per_model_per_bar(exported) -> None:
    server = ModelServer()
    counters = {}
    for name in ("rf", "lstm"):
        model = server.load(name, exported[name][1])
        counters[name] = model.session = CountingSession(model.session)  # type: ignore[assignment]
    rng = np.random.default_rng(3)
    history = rng.normal(size=(len(SYMBOLS), 20, F)).astype(np.float32)
    bars = 3
    for bar in range(bars):
        windows = {s: history[i, bar:bar + 10] for i, s in enumerate(SYMBOLS)}
        # rf serves every symbol, lstm the first 30: one call each, whatever the count.
        out = server.predict_bar({"rf": windows,
                                  "lstm": {s: windows[s] for s in SYMBOLS[:30]}})
        assert list(out["rf"]) == SYMBOLS and list(out["lstm"]) == SYMBOLS[:30]
        for name, per_symbol in out.items():
            trained = exported[name][0]
            lb = trained.lookback
            for i, s in enumerate(per_symbol):
                want = trained.predict_proba(history[i:i + 1, bar + 10 - lb:bar + 10])[0]
                assert np.abs(per_symbol[s] - want).max() < 1e-4, (name, s)
    assert counters["rf"].calls == [(50, 1, F)] * bars
    assert counters["lstm"].calls == [(30, 8, F)] * bars


def test_server_rejects_bad_windows(exported) -> None:
    server = ModelServer()
    server.load("lstm", exported["lstm"][1])
    windows = {s: np.zeros((8, F), np.float32) for s in SYMBOLS}
    windows["SYM07USDT"] = np.zeros((5, F), np.float32)
    with pytest.raises(ValueError, match=r"SYM07USDT.*\(8, 15\)"):
        server.predict("lstm", windows)
    windows["SYM07USDT"] = np.zeros((8, F - 1), np.float32)
    with pytest.raises(ValueError, match=r"SYM07USDT.*\(8, 15\)"):
        server.predict("lstm", windows)
    with pytest.raises(KeyError, match="no model named 'mlp'"):
        server.predict("mlp", windows)
    assert server.predict("lstm", {}) == {}

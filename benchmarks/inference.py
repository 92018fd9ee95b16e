"""``methtrader bench inference``: latency of one batched ONNX call per model per bar.

Budget (issue 4): 50 symbols in one onnxruntime call, p99 < 1 ms per model per bar on CPU. Each
kind is trained briefly on synthetic data with its default shape (tree count and depth, layer
sizes, lookback: what sets the latency), exported, and served through ``ModelServer`` with the
low-latency session (one thread). The same batch also goes through the framework on one thread
(torch eager for mlp/lstm, scikit-learn for rf) for the ratio onnx / framework (budget, issue 15:
lstm <= 1). The ratio comes from a paired run: blocks of ``PAIR_BLOCK`` ONNX calls alternate with
blocks of framework calls, so a change in the machine's load during the run weighs on both
sides alike (each block still runs warm, unlike call-by-call alternation, where each side
evicts the other's working set). The 1-minute load average before and after is reported.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.features import FEATURE_NAMES
from models.kinds import TrainedModel, build_ensemble, train
from models.serving import ModelServer

SYMBOLS = 50
CALLS = 2000
WARMUP_CALLS = 100
BUDGET_P99_MS = 1.0
BUDGET_LSTM_ONNX_OVER_TORCH = 1.0
PAIR_BLOCK = 25
TRAIN_ROWS = 20_000
QUICK_PARAMS: dict[str, dict[str, Any]] = {"rf": {}, "mlp": {"epochs": 1}, "lstm": {"epochs": 1}}
"""Default shapes; the nets get one epoch only, as their weights do not change the latency."""


def _latencies_ms(call: Callable[[], object], calls: int = CALLS) -> np.ndarray:
    for _ in range(WARMUP_CALLS):
        call()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        call()
        out[i] = time.perf_counter() - start
    return out * 1e3


def _paired_ms(first: Callable[[], object], second: Callable[[], object], calls: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Latencies (ms) of two calls measured in alternating blocks of ``PAIR_BLOCK`` calls."""
    for _ in range(WARMUP_CALLS):
        first()
        second()
    out = np.empty((2, calls))
    for start in range(0, calls, PAIR_BLOCK):
        for side, call in enumerate((first, second)):
            for i in range(start, min(start + PAIR_BLOCK, calls)):
                t0 = time.perf_counter()
                call()
                out[side, i] = time.perf_counter() - t0
    return out[0] * 1e3, out[1] * 1e3


def _models(seed: int = 0) -> dict[str, TrainedModel]:
    rng = np.random.default_rng(seed)
    n_features = len(FEATURE_NAMES)
    x = rng.normal(size=(TRAIN_ROWS, 32, n_features)).astype(np.float32)
    y = np.digitize(x[:, -1, 0] + rng.normal(0.0, 1.0, TRAIN_ROWS), [-0.6, 0.6])
    models = {kind: train(kind, x, y, params=params, seed=seed)
              for kind, params in QUICK_PARAMS.items()}
    models["ensemble"] = build_ensemble(list(models.values()))
    return models


def _framework_call(model: TrainedModel, batch: np.ndarray) -> Callable[[], object] | None:
    if model.kind in ("mlp", "lstm"):
        net, xb = model.model, torch.from_numpy(batch)

        def eager() -> object:
            with torch.inference_mode():
                return net(xb)
        return eager
    if model.kind == "rf":
        forest, flat = model.model, batch[:, -model.lookback:, :].reshape(len(batch), -1)
        return lambda: forest.predict_proba(flat)
    return None


def run() -> dict[str, Any]:
    figures: dict[str, Any] = {"inference_symbols": SYMBOLS, "inference_calls": CALLS,
                               "inference_budget_p99_ms": BUDGET_P99_MS,
                               "inference_budget_lstm_onnx_over_torch_p50":
                                   BUDGET_LSTM_ONNX_OVER_TORCH,
                               "load_average_1m_start": round(os.getloadavg()[0], 2)}
    threads = torch.get_num_threads()
    rng = np.random.default_rng(1)
    server = ModelServer()
    try:
        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory() as tmp:
            for kind, model in _models().items():
                path = Path(tmp) / f"{kind}.onnx"
                model.export_onnx(path)
                onnx_model = server.load(kind, path)
                batch = rng.normal(size=(SYMBOLS, model.lookback, model.n_features)
                                   ).astype(np.float32)
                windows = {f"S{i}": batch[i] for i in range(SYMBOLS)}
                onnx_ms = _latencies_ms(lambda: onnx_model.predict(batch))
                server_ms = _latencies_ms(lambda: server.predict(kind, windows))
                figures[f"inference_{kind}_device"] = onnx_model.device
                figures[f"inference_{kind}_onnx_p50_ms"] = round(float(np.median(onnx_ms)), 4)
                figures[f"inference_{kind}_onnx_p99_ms"] = round(
                    float(np.percentile(onnx_ms, 99)), 4)
                figures[f"inference_{kind}_server_p99_ms"] = round(
                    float(np.percentile(server_ms, 99)), 4)
                framework = _framework_call(model, batch)
                if framework is not None:
                    onnx_paired, slow = _paired_ms(lambda: onnx_model.predict(batch), framework,
                                                   CALLS // 4)
                    name = "torch" if kind in ("mlp", "lstm") else "sklearn"
                    figures[f"inference_{kind}_{name}_p50_ms"] = round(float(np.median(slow)), 4)
                    figures[f"inference_{kind}_{name}_p99_ms"] = round(
                        float(np.percentile(slow, 99)), 4)
                    figures[f"inference_{kind}_onnx_over_{name}_p50"] = round(
                        float(np.median(onnx_paired) / np.median(slow)), 3)
                    figures[f"inference_{kind}_onnx_over_{name}_p99"] = round(
                        float(np.percentile(onnx_paired, 99) / np.percentile(slow, 99)), 3)
    finally:
        torch.set_num_threads(threads)
    figures["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<40} {value}")
    sys.exit(0)

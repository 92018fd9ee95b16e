"""ONNX serving: one onnxruntime session per model, one batched call per model per bar.

Sessions use the CUDA provider when the installed onnxruntime offers it (onnxruntime-gpu on a
machine with a GPU), else the CPU, set up for latency rather than throughput: one intra-op and
one inter-op thread, sequential execution, all graph optimisations, no spinning (a spinning
worker would burn a core between bars). Models exported by ``models.kinds`` carry their kind,
lookback and n_features in the ONNX metadata; for other graphs they come from the input shape.
This module defines that contract's names and imports neither torch nor scikit-learn, so a
serving process stays light.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

INPUT_NAME = "x"
OUTPUT_NAME = "probs"
META_KIND = "methtrader.kind"
META_PARAMS = "methtrader.params"
META_LOOKBACK = "methtrader.lookback"
META_N_FEATURES = "methtrader.n_features"
META_CLASSES = "methtrader.classes"

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build offers it, the CPU always as the fallback."""
    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


def low_latency_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def _static_dim(dim: Any) -> int | None:
    return dim if isinstance(dim, int) else None


class OnnxModel:
    """One ONNX model in an onnxruntime session.

    Attributes: ``path``, ``sha256``, ``session``, ``device`` ("CUDA" or "CPU"), ``kind``
    (None for a foreign graph), ``params``, ``lookback`` and ``n_features`` (the window
    ``predict`` accepts; None where neither metadata nor a static input shape tells).
    """

    def __init__(self, path: Path, *, providers: Sequence[str] | None = None,
                 name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.sha256 = sha256_of(self.path)
        self.session = ort.InferenceSession(str(self.path), sess_options=low_latency_options(),
                                            providers=list(providers or default_providers()))
        self.device = "CUDA" if self.session.get_providers()[0] == CUDA else "CPU"
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
            raise ValueError(f"{self.path}: expected one input named {INPUT_NAME!r}, "
                             f"got {[i.name for i in inputs]}")
        if OUTPUT_NAME not in [o.name for o in outputs]:
            raise ValueError(f"{self.path}: no output named {OUTPUT_NAME!r}")
        meta = self.session.get_modelmeta().custom_metadata_map
        shape = inputs[0].shape
        if len(shape) != 3:
            raise ValueError(f"{self.path}: input {INPUT_NAME!r} must be 3-D, has shape {shape}")
        self.kind: str | None = meta.get(META_KIND)
        self.params: dict[str, Any] = json.loads(meta.get(META_PARAMS, "{}"))
        self.lookback: int | None = (int(meta[META_LOOKBACK]) if META_LOOKBACK in meta
                                     else _static_dim(shape[1]))
        self.n_features: int | None = (int(meta[META_N_FEATURES]) if META_N_FEATURES in meta
                                       else _static_dim(shape[2]))
        self._outputs = [OUTPUT_NAME]

    @property
    def expected_shape(self) -> str:
        rows = "rows" if self.lookback is None else str(self.lookback)
        features = "n_features" if self.n_features is None else str(self.n_features)
        return f"(batch, {rows}, {features})"

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities (batch, 3) of windows x (batch, lookback, n_features): one session call."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if (x.ndim != 3 or x.shape[0] < 1
                or (self.lookback is not None and x.shape[1] != self.lookback)
                or (self.n_features is not None and x.shape[2] != self.n_features)):
            raise ValueError(f"model {self.name!r} expects input of shape "
                             f"{self.expected_shape}, got {x.shape}")
        return self.session.run(self._outputs, {INPUT_NAME: x})[0]


class ModelServer:
    """Several models by name; per bar, one batched call per model for all of its symbols."""

    def __init__(self, models: Mapping[str, OnnxModel] | None = None) -> None:
        self.models: dict[str, OnnxModel] = dict(models or {})

    def load(self, name: str, path: Path, *, providers: Sequence[str] | None = None
             ) -> OnnxModel:
        """Load (or replace) model ``name`` from an ONNX file."""
        model = OnnxModel(path, providers=providers, name=name)
        self.models[name] = model
        return model

    def add(self, name: str, model: OnnxModel) -> None:
        self.models[name] = model

    def remove(self, name: str) -> None:
        self.models.pop(name, None)

    def _model(self, name: str) -> OnnxModel:
        try:
            return self.models[name]
        except KeyError:
            raise KeyError(f"no model named {name!r}; loaded: {sorted(self.models)}") from None

    def predict(self, name: str, windows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Probabilities (3,) per symbol from one session call of model ``name``.

        Each window is (rows, n_features) with rows >= the model's lookback, oldest first; the
        last ``lookback`` rows are used, so one feature buffer per symbol can serve models of
        different lookbacks.
        """
        model = self._model(name)
        if not windows:
            return {}
        symbols = list(windows)
        first = np.asarray(windows[symbols[0]])
        lookback = model.lookback if model.lookback is not None else first.shape[0]
        n_features = model.n_features if model.n_features is not None else first.shape[-1]
        batch = np.empty((len(symbols), lookback, n_features), dtype=np.float32)
        for i, symbol in enumerate(symbols):
            w = np.asarray(windows[symbol])
            if w.ndim != 2 or w.shape[0] < lookback or w.shape[1] != n_features:
                raise ValueError(f"model {name!r}, symbol {symbol!r}: expected a window of shape "
                                 f"({lookback}, {n_features}) (at least {lookback} rows), "
                                 f"got {w.shape}")
            batch[i] = w[w.shape[0] - lookback:]
        probs = model.predict(batch)
        return {symbol: probs[i] for i, symbol in enumerate(symbols)}

    def predict_bar(self, windows: Mapping[str, Mapping[str, np.ndarray]]
                    ) -> dict[str, dict[str, np.ndarray]]:
        """{model name: {symbol: window}} -> {model name: {symbol: probs}}; one call per model."""
        return {name: self.predict(name, per_symbol) for name, per_symbol in windows.items()}

"""The contract every model kind follows, and the helpers they share.

A model reads windows ``x`` float32 of shape (batch, lookback, n_features), oldest row first, and
returns class probabilities (batch, 3) for the classes of ``models.labels``: short, flat, long.
Given more rows than its lookback, a model uses the last ``lookback`` rows (so an ensemble can feed
one window to members of different lookbacks).

Every kind has two paths that must agree: the framework path (``TrainedModel.predict_proba``:
scikit-learn or torch) and the ONNX graph (``TrainedModel.export_onnx``) that serving runs. The
graph's input is "x" float32 [batch, lookback, n_features] with a dynamic batch dimension, its
output "probs" float32 [batch, 3]. The model's kind and params travel in the ONNX metadata
(``models.serving.META_*`` keys), so serving knows the window it expects without a side file.
The names of that contract live in ``models.serving``, which must not import torch or sklearn.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx

from models.labels import FLAT, LONG, SHORT
from models.serving import (INPUT_NAME, META_CLASSES, META_KIND, META_LOOKBACK,
                            META_N_FEATURES, META_PARAMS, OUTPUT_NAME)

CLASSES: tuple[int, ...] = (SHORT, FLAT, LONG)
CLASS_NAMES: tuple[str, ...] = ("short", "flat", "long")
N_CLASSES = len(CLASSES)

OPSET = 18
"""Default-domain opset of every exported graph: one value, so an ensemble can merge members."""
ML_OPSET = 3

Progress = Callable[[int, float, float], None]
"""progress(epoch, loss, percent): epoch counts from 1, percent runs 0 .. 100."""


class ModelKind(Protocol):
    """One kind of model: how to train it, run it in its framework and turn it into ONNX."""

    name: str
    defaults: dict[str, Any]
    variable_length: bool
    """True when the model also runs on windows shorter than its lookback (a recurrent net)."""

    def fit(self, x: np.ndarray, y: np.ndarray, params: dict[str, Any], *, seed: int,
            progress: Progress | None, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> TrainedModel:
        """Train on validated windows (x float32 (n, >= lookback, F), y int64 in 0..2)."""
        ...

    def predict_proba(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        """(batch, 3) float32 probabilities through the framework."""
        ...

    def to_onnx(self, model: TrainedModel) -> onnx.ModelProto:
        """The graph "x" [batch, lookback, F] -> "probs" [batch, 3], without metadata."""
        ...


KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    """Add a kind to the registry (``ddqn`` and later kinds register the same way)."""
    if kind.name in KINDS:
        raise ValueError(f"model kind {kind.name!r} is already registered")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> ModelKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; known: {sorted(KINDS)}") from None


@dataclass
class TrainedModel:
    """A trained model of one kind, with its framework object in ``model``.

    ``params`` is JSON-serialisable and always holds ``lookback`` and ``n_features``.
    ``loss_curve`` has one training loss per epoch (per tree batch for rf); ``val_loss_curve``
    the matching validation losses when validation data was given.
    """

    kind: str
    params: dict[str, Any]
    loss_curve: list[float]
    model: Any = field(repr=False)
    val_loss_curve: list[float] = field(default_factory=list)

    @property
    def lookback(self) -> int:
        return int(self.params["lookback"])

    @property
    def n_features(self) -> int:
        return int(self.params["n_features"])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(batch, 3) float32 probabilities of [short, flat, long] through the framework."""
        kind = get_kind(self.kind)
        x = check_windows(x, self.n_features, self.lookback, allow_fewer=kind.variable_length)
        return kind.predict_proba(self, x)

    def to_onnx(self) -> onnx.ModelProto:
        """The ONNX graph with its metadata (kind, params, lookback, n_features, classes)."""
        proto = get_kind(self.kind).to_onnx(self)
        set_metadata(proto, {META_KIND: self.kind, META_PARAMS: json.dumps(self.params),
                             META_LOOKBACK: str(self.lookback),
                             META_N_FEATURES: str(self.n_features),
                             META_CLASSES: ",".join(CLASS_NAMES)})
        proto.producer_name = "methtrader"
        return proto

    def export_onnx(self, path: Path) -> None:
        """Write the graph as one self-contained file, atomically (temp name, then rename)."""
        proto = self.to_onnx()
        onnx.checker.check_model(proto)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(proto.SerializeToString())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def check_windows(x: np.ndarray, n_features: int, lookback: int, *,
                  allow_fewer: bool = False) -> np.ndarray:
    """x as float32 (batch, rows, n_features); rows >= lookback unless ``allow_fewer``.

    No copy when x already is float32 (a strided sliding-window view stays a view).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[2] != n_features or x.shape[0] < 1:
        raise ValueError(f"expected windows of shape (batch, {lookback}, {n_features}), "
                         f"got {x.shape}")
    if x.shape[1] < (1 if allow_fewer else lookback):
        raise ValueError(f"expected windows of shape (batch, {lookback}, {n_features}) "
                         f"(at least {lookback} rows), got {x.shape}")
    return x


def check_labels(y: np.ndarray, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"expected {n} labels of shape ({n},), got {y.shape}")
    if not np.isin(y, CLASSES).all():
        raise ValueError(f"labels must be classes {CLASSES} (drop unlabelled rows first)")
    return y.astype(np.int64)


def class_weights(y: np.ndarray) -> np.ndarray:
    """Balanced weights n / (3 * count) per class; 0 for a class absent from y."""
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, len(y) / (N_CLASSES * counts), 0.0)
    return weights


def merge_params(kind: ModelKind, params: dict[str, Any] | None) -> dict[str, Any]:
    """The kind's defaults overridden by ``params``; unknown names are an error."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(kind.defaults))
    if unknown:
        raise ValueError(f"unknown {kind.name} params {unknown}; known: {sorted(kind.defaults)}")
    merged = copy.deepcopy({**kind.defaults, **params})
    try:
        json.dumps(merged)
    except TypeError as exc:
        raise ValueError(f"params must be JSON-serialisable: {exc}") from None
    return merged


def log_loss(probs: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean (optionally class-weighted) negative log-likelihood of the true classes."""
    p = np.clip(probs[np.arange(len(y)), y].astype(np.float64), 1e-12, 1.0)
    w = np.ones(len(y)) if weights is None else weights[y]
    return float(-(w * np.log(p)).sum() / w.sum())


def set_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    kept = [p for p in proto.metadata_props if p.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)


def _check_finite(x: np.ndarray, what: str) -> None:
    for start in range(0, len(x), 8192):
        if not np.isfinite(x[start:start + 8192]).all():
            raise ValueError(f"{what} holds NaN or inf (drop the feature warm-up rows first)")


def train(kind: str, x: np.ndarray, y: np.ndarray, *, params: dict[str, Any] | None = None,
          seed: int = 0, progress: Progress | None = None, x_val: np.ndarray | None = None,
          y_val: np.ndarray | None = None) -> TrainedModel:
    """Train a model of ``kind`` on windows x (n, rows, n_features) and classes y (n,).

    ``params`` override the kind's defaults (``KINDS[kind].defaults``); the model's params add
    ``n_features``. x may hold more rows than the lookback (the last ones are used) and may be a
    strided view. ``progress(epoch, loss, percent)`` is called as training goes. Validation
    data, when given, is scored each epoch (``val_loss_curve``); torch kinds keep their best
    epoch on it. Torch trains on one thread (``torch_common.TRAIN_THREADS`` says why).
    """
    k = get_kind(kind)
    merged = merge_params(k, params)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected windows of shape (n, lookback, n_features), got {x.shape}")
    merged["n_features"] = int(x.shape[2])
    x = check_windows(x, x.shape[2], int(merged.get("lookback", 1)))
    y = check_labels(y, len(x))
    _check_finite(x, "x")
    if (x_val is None) != (y_val is None):
        raise ValueError("give both x_val and y_val, or neither")
    if x_val is not None and y_val is not None:
        x_val = check_windows(x_val, x.shape[2], int(merged.get("lookback", 1)))
        y_val = check_labels(y_val, len(x_val))
        _check_finite(x_val, "x_val")
    return k.fit(x, y, merged, seed=seed, progress=progress, x_val=x_val, y_val=y_val)

"""``rf``: a scikit-learn RandomForest on the last ``lookback`` rows of the window, flattened.

Training grows the forest in batches (``warm_start``) so progress can be reported per batch; with
an integer seed the result equals one ``fit`` of the whole forest. The ONNX graph is skl2onnx's
conversion (zipmap off) behind a Slice + Flatten that turn the 3-D window into the forest's 2-D
input, then a MatMul that spreads the forest's columns over [short, flat, long] in case a class
was absent from the training labels. Trees compare float32 inputs (as scikit-learn does), so the
graph reproduces ``predict_proba`` on float32 windows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import RandomForestClassifier

from models.kinds.base import (INPUT_NAME, ML_OPSET, N_CLASSES, OPSET, OUTPUT_NAME, Progress,
                               TrainedModel, class_weights, log_loss)

_EVAL_ROWS = 20_000
"""Training rows (a fixed sample) scored after each tree batch for the loss curve."""


def _flat(x: np.ndarray, lookback: int) -> np.ndarray:
    return np.ascontiguousarray(x[:, -lookback:, :].reshape(len(x), -1), dtype=np.float32)


def _class_map(classes: np.ndarray) -> np.ndarray:
    """(n_seen, 3) 0/1 matrix taking the forest's columns to the three classes."""
    m = np.zeros((len(classes), N_CLASSES), dtype=np.float32)
    m[np.arange(len(classes)), classes.astype(np.int64)] = 1.0
    return m


class RandomForestKind:
    name = "rf"
    variable_length = False
    defaults: dict[str, Any] = {"lookback": 1, "n_estimators": 100, "max_depth": 8,
                                "min_samples_leaf": 50, "max_features": "sqrt",
                                "max_samples": None, "tree_batches": 10, "n_jobs": 2}

    def fit(self, x: np.ndarray, y: np.ndarray, params: dict[str, Any], *, seed: int,
            progress: Progress | None, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> TrainedModel:
        lookback = int(params["lookback"])
        flat = _flat(x, lookback)
        rows = np.sort(np.random.default_rng(seed).permutation(len(flat))[:_EVAL_ROWS])
        train_x, train_y = flat[rows], y[rows]
        val_x = _flat(x_val, lookback) if x_val is not None else None
        # Explicit balanced weights: the "balanced" preset would be re-measured per warm start.
        weights = class_weights(y)
        forest = RandomForestClassifier(
            n_estimators=0, max_depth=params["max_depth"],
            min_samples_leaf=params["min_samples_leaf"], max_features=params["max_features"],
            max_samples=params["max_samples"],
            class_weight={int(c): float(w) for c, w in enumerate(weights) if w > 0},
            warm_start=True,
            n_jobs=params["n_jobs"], random_state=seed)
        total = int(params["n_estimators"])
        batches = max(1, min(int(params["tree_batches"]), total))
        curve: list[float] = []
        val_curve: list[float] = []
        for batch in range(1, batches + 1):
            forest.n_estimators = round(total * batch / batches)
            forest.fit(flat, y)
            curve.append(log_loss(self._proba(forest, train_x), train_y, weights))
            if val_x is not None and y_val is not None:
                val_curve.append(log_loss(self._proba(forest, val_x), y_val, weights))
            if progress is not None:
                progress(batch, curve[-1], 100.0 * batch / batches)
        forest.warm_start = False
        forest.n_jobs = 1
        return TrainedModel(self.name, params, curve, forest, val_curve)

    @staticmethod
    def _proba(forest: RandomForestClassifier, flat: np.ndarray) -> np.ndarray:
        probs = forest.predict_proba(flat).astype(np.float32)
        return probs @ _class_map(forest.classes_)

    def predict_proba(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        return self._proba(model.model, _flat(x, model.lookback))

    def to_onnx(self, model: TrainedModel) -> onnx.ModelProto:
        forest: RandomForestClassifier = model.model
        lookback, n_features = model.lookback, model.n_features
        flat_name = "rf_flat"
        proto = convert_sklearn(
            forest, initial_types=[(flat_name, FloatTensorType([None, lookback * n_features]))],
            options={id(forest): {"zipmap": False}},
            target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET})
        graph = proto.graph
        probs_out = next(o.name for o in graph.output if o.name != "label")
        front = [
            helper.make_node("Slice", [INPUT_NAME, "rf_starts", "rf_ends", "rf_axes"],
                             ["rf_window"]),
            helper.make_node("Flatten", ["rf_window"], [flat_name], axis=1),
        ]
        back = [helper.make_node("MatMul", [probs_out, "rf_class_map"], [OUTPUT_NAME])]
        graph.initializer.extend([
            numpy_helper.from_array(np.array([-lookback], np.int64), "rf_starts"),
            numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "rf_ends"),
            numpy_helper.from_array(np.array([1], np.int64), "rf_axes"),
            numpy_helper.from_array(_class_map(forest.classes_), "rf_class_map"),
        ])
        nodes = front + list(graph.node) + back
        del graph.node[:]
        graph.node.extend(nodes)
        del graph.input[:]
        graph.input.append(helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.FLOAT, ["batch", lookback, n_features]))
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(
            OUTPUT_NAME, TensorProto.FLOAT, ["batch", N_CLASSES]))
        return proto


KIND = RandomForestKind()

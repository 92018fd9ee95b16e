"""``mlp``: a feed-forward net on the last ``lookback`` rows of the window, flattened.

Standardize -> Flatten -> [Linear -> ReLU -> Dropout] per hidden layer -> Linear(3); the exported
graph ends in a softmax. Its input rows are fixed (``lookback``); the batch is dynamic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from models.kinds.base import N_CLASSES, Progress, TrainedModel
from models.kinds.torch_common import (TRAIN_THREADS, ProbabilityNet, Standardize, export_net,
                                       feature_scale, fit_net, predict_net, torch_threads)


def build_mlp(n_features: int, lookback: int, hidden: list[int], dropout: float,
              mean: np.ndarray, std: np.ndarray) -> ProbabilityNet:
    layers: list[nn.Module] = [nn.Flatten()]
    width = n_features * lookback
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, N_CLASSES))
    return ProbabilityNet(Standardize(mean, std), nn.Sequential(*layers), lookback)


class MlpKind:
    name = "mlp"
    variable_length = False
    defaults: dict[str, Any] = {"lookback": 1, "hidden": [64, 64], "dropout": 0.1,
                                "epochs": 10, "batch_size": 512, "lr": 1e-3,
                                "weight_decay": 1e-5}

    def fit(self, x: np.ndarray, y: np.ndarray, params: dict[str, Any], *, seed: int,
            progress: Progress | None, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> TrainedModel:
        with torch_threads(TRAIN_THREADS):
            torch.manual_seed(seed)
            mean, std = feature_scale(x, seed)
            net = build_mlp(int(params["n_features"]), int(params["lookback"]),
                            [int(h) for h in params["hidden"]], float(params["dropout"]),
                            mean, std)
            train_curve, val_curve = fit_net(net, x, y, params, seed=seed, progress=progress,
                                             x_val=x_val, y_val=y_val)
        return TrainedModel(self.name, params, train_curve, net, val_curve)

    def predict_proba(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        return predict_net(model.model, x, model.lookback)

    def to_onnx(self, model: TrainedModel) -> onnx.ModelProto:
        return export_net(model.model, model, dynamic_rows=False)


KIND = MlpKind()

"""``lstm``: a one-layer LSTM over the window; its last hidden state feeds a Linear(3).

The ONNX graph has a dynamic row dimension as well as a dynamic batch: it runs on any window of
up to ``lookback`` rows (longer windows are cut to their last ``lookback`` rows), like the torch
module. Tests evaluate it at row counts other than the export example's, because the dynamo
exporter has frozen the time axis of some recurrent patterns.
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


class LstmBody(nn.Module):
    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(self.drop(out[:, -1, :]))


class LstmKind:
    name = "lstm"
    variable_length = True
    defaults: dict[str, Any] = {"lookback": 32, "hidden": 32, "layers": 1, "dropout": 0.1,
                                "epochs": 5, "batch_size": 512, "lr": 2e-3,
                                "weight_decay": 1e-5}

    def fit(self, x: np.ndarray, y: np.ndarray, params: dict[str, Any], *, seed: int,
            progress: Progress | None, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> TrainedModel:
        with torch_threads(TRAIN_THREADS):
            torch.manual_seed(seed)
            mean, std = feature_scale(x, seed)
            body = LstmBody(int(params["n_features"]), int(params["hidden"]),
                            int(params["layers"]), float(params["dropout"]))
            net = ProbabilityNet(Standardize(mean, std), body, int(params["lookback"]))
            train_curve, val_curve = fit_net(net, x, y, params, seed=seed, progress=progress,
                                             x_val=x_val, y_val=y_val)
        return TrainedModel(self.name, params, train_curve, net, val_curve)

    def predict_proba(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        return predict_net(model.model, x, model.lookback)

    def to_onnx(self, model: TrainedModel) -> onnx.ModelProto:
        return export_net(model.model, model, dynamic_rows=True)


KIND = LstmKind()

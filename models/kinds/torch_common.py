"""What the torch kinds (``mlp``, ``lstm``) share: input scaling, the training loop, the export.

Features come on very different scales (log returns ~1e-3, z-scores ~1, RSI in [0, 1]), so each
net starts with a fixed standardisation whose mean and scale are measured on the training data
and stored as buffers: they travel inside the ONNX graph, and serving feeds raw features. The
standardised values are clipped to +-``CLIP`` so one absurd bar cannot saturate the net.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn
from torch.export import Dim

from models.kinds.base import (INPUT_NAME, OPSET, OUTPUT_NAME, Progress, TrainedModel,
                               class_weights)

CLIP = 8.0
#: torch's intra-op threads while training. One: the nets are small, so an op's parallel share
#: is tiny, and every op ends at a barrier that waits for the other thread to be scheduled. On
#: a busy 2-core box (the appliance trains beside ``run``) two threads made an mlp AutoML trial
#: 5.4x slower by the wall clock and 8x costlier in CPU (87 s / 30 CPU-s against 16 s / 3.6
#: CPU-s, identical result), and an lstm trial 8x slower (516 s / 161 CPU-s against 62 s /
#: 16.5 CPU-s, identical result; load average 11 to 15 on 2 cores).
TRAIN_THREADS = 1
_SCALE_ROWS = 200_000
_PREDICT_CHUNK = 8192
_PROGRESS_STEPS = 10
"""Progress reports per epoch (the last one at the epoch's end)."""
DEVICES = ("auto", "cpu", "cuda")
_DEVICE: ContextVar[str] = ContextVar("methtrader_train_device", default="cpu")

log = logging.getLogger("methtrader.training")


def resolve_device(setting: str) -> str:
    """The device a run trains on, picked once: "cuda" when asked for ("cuda") or allowed
    ("auto") and torch sees one, else "cpu" (asking for CUDA without one falls back to the
    CPU with a warning: a run never fails for want of a GPU)."""
    if setting not in DEVICES:
        raise ValueError(f"training device must be one of {DEVICES}, got {setting!r}")
    if setting == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if setting == "cuda":
        log.warning("training.device = cuda but torch sees no CUDA device; training on the CPU")
    return "cpu"


@contextmanager
def on_device(device: str) -> Iterator[None]:
    """Torch kinds trained inside the block train on ``device`` ("cpu" or "cuda"); the model
    comes back on the CPU (prediction and export run there)."""
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def train_device() -> torch.device:
    """The device of the current run (:func:`on_device`; the CPU by default)."""
    return torch.device(_DEVICE.get())


class Standardize(nn.Module):
    """(x - mean) / std per feature, clipped to +-CLIP; mean and std are fixed buffers."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("inv_std", torch.as_tensor(1.0 / std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp((x - self.mean) * self.inv_std, -CLIP, CLIP)


class ProbabilityNet(nn.Module):
    """Last ``lookback`` rows -> Standardize -> ``body`` (logits); ``forward`` adds the softmax.

    Training uses ``logits`` (cross-entropy wants them); the exported graph is ``forward``.
    """

    def __init__(self, scale: Standardize, body: nn.Module, lookback: int) -> None:
        super().__init__()
        self.scale = scale
        self.body = body
        self.lookback = lookback

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.scale(x[:, -self.lookback:, :]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


def feature_scale(x: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each feature over (a sample of) the windows' last rows."""
    rows = x[:, -1, :]
    if len(rows) > _SCALE_ROWS:
        pick = np.sort(np.random.default_rng(seed).choice(len(rows), _SCALE_ROWS, replace=False))
        rows = rows[pick]
    rows = np.asarray(rows, dtype=np.float64)
    std = rows.std(axis=0)
    return rows.mean(axis=0), np.where(std > 1e-12, std, 1.0)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """At most ``n`` intra-op threads inside the block; the previous count after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, previous)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _batches(x: np.ndarray, rows: np.ndarray, lookback: int, size: int
             ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    for start in range(0, len(rows), size):
        idx = rows[start:start + size]
        yield idx, torch.from_numpy(np.ascontiguousarray(x[idx, -lookback:, :]))


def fit_net(net: ProbabilityNet, x: np.ndarray, y: np.ndarray, params: dict[str, Any], *,
            seed: int, progress: Progress | None, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> tuple[list[float], list[float]]:
    """Adam on class-weighted cross-entropy; returns (train, validation) loss per epoch.

    Mini-batches are copied out of ``x`` one at a time, so x may be a strided view of a feature
    matrix (``sliding_window_view``) and the full window tensor never exists in memory. With
    validation data, the weights of the epoch with the lowest validation loss are kept.
    """
    lookback, epochs = int(params["lookback"]), int(params["epochs"])
    batch = int(params["batch_size"])
    rng = np.random.default_rng(seed)
    device = train_device()
    net.to(device)
    weights = torch.as_tensor(class_weights(y), dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    labels = torch.from_numpy(y).to(device)
    optimiser = torch.optim.Adam(net.parameters(), lr=float(params["lr"]),
                                 weight_decay=float(params["weight_decay"]))
    n_batches = -(-len(x) // batch)
    report_every = max(1, n_batches // _PROGRESS_STEPS)
    train_curve: list[float] = []
    val_curve: list[float] = []
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    for epoch in range(1, epochs + 1):
        net.train()
        total, seen = 0.0, 0
        for i, (idx, xb) in enumerate(_batches(x, rng.permutation(len(x)), lookback, batch), 1):
            optimiser.zero_grad(set_to_none=True)
            xb = xb.to(device)
            loss = loss_fn(net.logits(xb), labels[torch.from_numpy(idx).to(device)])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if progress is not None and i % report_every == 0 and i < n_batches:
                progress(epoch, total / seen, 100.0 * (epoch - 1 + i / n_batches) / epochs)
        train_curve.append(total / seen)
        if x_val is not None and y_val is not None:
            val_curve.append(_eval_loss(net, x_val, y_val, lookback, loss_fn))
            if best is None or val_curve[-1] < best[0]:
                best = (val_curve[-1], copy.deepcopy(net.state_dict()))
        if progress is not None:
            progress(epoch, train_curve[-1], 100.0 * epoch / epochs)
    if best is not None:
        net.load_state_dict(best[1])
    net.to("cpu").eval()
    return train_curve, val_curve


def _eval_loss(net: ProbabilityNet, x: np.ndarray, y: np.ndarray, lookback: int,
               loss_fn: nn.CrossEntropyLoss) -> float:
    net.eval()
    device = next(net.parameters()).device
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)
    total = 0.0
    with torch.inference_mode():
        for idx, xb in _batches(x, np.arange(len(x)), lookback, _PREDICT_CHUNK):
            total += float(loss_fn(net.logits(xb.to(device)),
                                   labels[torch.from_numpy(idx).to(device)])) * len(idx)
    net.train()
    return total / len(x)


def predict_net(net: ProbabilityNet, x: np.ndarray, lookback: int) -> np.ndarray:
    """Softmax probabilities of the last ``lookback`` rows of each window, in chunks."""
    net.eval()
    out = np.empty((len(x), 3), dtype=np.float32)
    with torch.inference_mode():
        for idx, xb in _batches(x, np.arange(len(x)), lookback, _PREDICT_CHUNK):
            out[idx] = net(xb).numpy()
    return out


def export_net(net: ProbabilityNet, model: TrainedModel, *, dynamic_rows: bool) -> onnx.ModelProto:
    """torch.onnx.export (dynamo) with a dynamic batch, and dynamic rows when ``dynamic_rows``.

    The example input has lookback + 1 rows where rows are dynamic, so the graph cannot quietly
    specialise on the served window length.
    """
    lookback, n_features = model.lookback, model.n_features
    rows = lookback + 1 if dynamic_rows else lookback
    example = torch.zeros((2, rows, n_features), dtype=torch.float32)
    dims: dict[int, Any] = {0: Dim("batch")}
    if dynamic_rows:
        dims[1] = Dim("rows")
    net.eval()
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                net, (example,), dynamo=True, verbose=False, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes={"x": dims}, opset_version=OPSET,
                external_data=False)
    finally:
        registration.setLevel(level)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto

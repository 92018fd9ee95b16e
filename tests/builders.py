"""Small real objects for tests: finished training runs (real artifact folders and receipts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.artifacts import write_run


def fake_run(state_dir: Path, run_id: str, sharpe: float = 1.0, group: str = "t1-a",
             kind: str = "rf", symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
             timeframe: str = "5m") -> dict[str, Any]:
    """A run folder with a (fake) model file and its receipt, as a training job leaves it."""

    def write_model(path: Path) -> None:
        path.write_bytes(b"onnx bytes of " + run_id.encode())

    return write_run(state_dir, run_id, write_model, {"params.json": {"a": 1}}, {
        "run_id": run_id, "kind": kind, "group": group, "symbols": list(symbols),
        "timeframe": timeframe, "params": {"a": 1}, "metrics": {"sharpe": sharpe},
        "tags": {"autogen": False}, "parent_run_id": None, "feature_set": "fs1",
        "dataset_sha256": "d" * 64, "loss_curve": [1.0, 0.5], "started": 1.0, "ended": 2.0})

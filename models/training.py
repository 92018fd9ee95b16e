"""One training run, as the huey job runs it (and ``methtrader train`` in the foreground).

Reads the group's 5m candles from the lake (never DuckDB), trains the kind on the pooled
training windows, scores it by backtesting each symbol's validation bars net of fees and
slippage, exports ONNX, and writes the run's artifacts with a ``result.json`` receipt. The
appliance registers receipts in DuckDB. Idempotent by run id: a run that already has a receipt
returns it without training again (a retried or re-queued job costs nothing twice).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from models.artifacts import read_result, write_run
from models.dataset import DataSpec, build_group_data, dataset_sha256, lake_at, load_group_candles
from models.evaluate import score_validation
from models.features import FEATURE_NAMES, FEATURE_SET_ID

Progress = Callable[[dict[str, Any]], None]
ENSEMBLE_MEMBERS = ("rf", "mlp")
DEFAULT_LOOKBACK = {"rf": 1, "mlp": 1, "lstm": 32, "ensemble": 1}


def train_run(state_dir: Path, run_id: str, group: str, symbols: list[str], kind: str,
              params: dict[str, Any] | None = None, *, tags: dict[str, Any] | None = None,
              parent_run_id: str | None = None, seed: int = 0,
              progress: Progress | None = None) -> dict[str, Any]:
    from models.kinds import train  # torch and sklearn load in the worker only

    done = read_result(state_dir, run_id)
    if done is not None:
        return done
    params = dict(params or {})
    started = time.time()
    spec = DataSpec(lookback=int(params.get("lookback", DEFAULT_LOOKBACK.get(kind, 1))),
                    horizon=int(params.pop("horizon", 12)), seed=seed)
    params.setdefault("lookback", spec.lookback)
    lake = lake_at(state_dir)
    data = build_group_data(load_group_candles(lake, symbols, spec.interval), spec)

    def report(epoch: int, loss: float, percent: float) -> None:
        if progress is not None:
            progress({"run_id": run_id, "group": group, "kind": kind, "epoch": epoch,
                      "loss": float(loss), "percent": float(percent), "status": "running"})

    if kind == "ensemble":
        params.pop("lookback", None)
        params.setdefault("members", list(ENSEMBLE_MEMBERS))
    model = train(kind, data.x_train, data.y_train, params=params, seed=seed,
                  progress=report, x_val=data.x_val, y_val=data.y_val)
    metrics = score_validation([(v.close, model.predict_proba(v.x)) for v in data.validation],
                               spec.interval)
    val_pred = np.argmax(model.predict_proba(data.x_val), axis=1)
    metrics["val_accuracy"] = float(np.mean(val_pred == data.y_val))
    metrics["train_samples"] = int(len(data.y_train))
    result = {
        "run_id": run_id, "kind": kind, "group": group, "symbols": list(data.symbols),
        "timeframe": spec.interval, "params": {**model.params, "horizon": spec.horizon},
        "metrics": metrics, "tags": tags or {}, "parent_run_id": parent_run_id,
        "feature_set": FEATURE_SET_ID, "features": list(FEATURE_NAMES),
        "dataset_sha256": dataset_sha256(lake, list(data.symbols), spec.interval),
        "loss_curve": [float(v) for v in model.loss_curve], "started": started,
        "ended": time.time(),
    }
    result = write_run(state_dir, run_id, model.export_onnx,
                       {"params.json": result["params"], "metrics.json": metrics,
                        "loss_curve.json": result["loss_curve"]}, result)
    if progress is not None:
        progress({"run_id": run_id, "group": group, "kind": kind, "epoch": None,
                  "loss": result["loss_curve"][-1] if result["loss_curve"] else None,
                  "percent": 100.0, "status": "completed"})
    return result

"""One training run, as the huey job runs it (and ``methtrader train`` in the foreground).

Reads the group's candles of the run's timeframe from the lake (never DuckDB), validates the
kind walk-forward (:mod:`models.validation`: K folds, purge, an inner split for early stopping,
each test block scored by replaying the strategy as it trades, costs included), refits it on
every bar, exports ONNX, and writes the run's artifacts with a ``result.json`` receipt and the
drift reference of its features (``reference.json``, :mod:`models.drift`) and its symbols'
seasonal volatility profiles (``vol_profile.json``, :mod:`models.vol_regime`). The appliance
registers receipts (references and profiles too) in DuckDB. Idempotent by run id: a run that already has a receipt
returns it without training again (a retried or re-queued job costs nothing twice).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from data.intervals import interval_ms
from models.artifacts import REFERENCE_FILE, VOL_PROFILE_FILE, read_result, write_run
from models.costs import CostModel
from models.dataset import (DataSpec, Panel, build_panel, dataset_sha256, lake_at,
                            load_group_candles)
from models.drift import build_reference, reference_to_json
from models.vol_regime import vol_profile
from models.features import FS1, feature_set
from models.funding import funding_per_bar
from models.validation import inner_split, walk_forward

Progress = Callable[[dict[str, Any]], None]
ENSEMBLE_MEMBERS = ("rf", "mlp")
DEFAULT_LOOKBACK = {"rf": 1, "mlp": 1, "lstm": 32, "ensemble": 1}
DEFAULT_FOLDS = 4
DEFAULT_THRESHOLD = 0.1
CPU_ONLY = ("rf",)
"""Kinds that never use torch's device (scikit-learn trains on the CPU)."""


def run_setup(timeframe: str, folds: int, threshold: float, taker_fee: float,
              slippage: float, device: str = "cpu") -> dict[str, Any]:
    """What a run needs from the appliance's config, as plain data (a job argument)."""
    return {"timeframe": timeframe, "folds": folds, "threshold": threshold,
            "taker_fee": taker_fee, "slippage": slippage, "device": device}


def run_kwargs(setup: dict[str, Any]) -> dict[str, Any]:
    """:func:`run_setup`'s data as :func:`train_run`'s keyword arguments."""
    out: dict[str, Any] = {k: setup[k] for k in ("timeframe", "folds", "threshold", "device")
                           if k in setup}
    if "taker_fee" in setup or "slippage" in setup:
        out["costs"] = CostModel(float(setup.get("taker_fee", CostModel.taker_fee)),
                                 float(setup.get("slippage", CostModel.slippage)))
    return out

log = logging.getLogger("methtrader.training")


def group_funding(lake: Any, panel: Any, interval: str) -> np.ndarray | None:
    """The funding rate due at each of the panel's bars per symbol (T, S), from the lake's
    funding files (stored by the datasets service); None where the lake has none. A funding
    file that cannot be read counts as none: the run is scored without funding, never not
    at all."""
    close_ms = panel.open_time + interval_ms(interval)
    cols = []
    for symbol in panel.symbols:
        try:
            events = lake.read_funding(symbol)
        except (OSError, pa.ArrowException) as exc:
            log.warning("%s: funding file unreadable (%s); scoring without it", symbol, exc)
            events = np.zeros((0, 2))
        cols.append(funding_per_bar(close_ms, events))
    out = np.stack(cols, axis=1) if cols else None
    return out if out is not None and out.any() else None


def panel_reference(panel: Panel) -> dict[str, Any]:
    """The run's drift reference (:mod:`models.drift`): every usable bar of every symbol of
    the group, pooled (the features are scale-free, as the model's samples are pooled)."""
    rows = np.concatenate([panel.features[s][panel.usable[:, s]]
                           for s in range(len(panel.symbols))])
    return reference_to_json(build_reference(rows, panel.names))


DATA_PARAMS = ("horizon", "feature_set", "features", "margin", "risk", "window_days")
"""Run params about the data rather than the model (popped before the kind sees them):
``horizon`` (label bars), ``feature_set`` (fs1 default) and ``features`` (a subset of its
columns, in order), ``margin`` (added to the labels' dead band), ``risk`` (sample weighting,
:mod:`models.reward`) and ``window_days`` (train and validate on the last that many days only).
The defaults give exactly the run every non-AutoML path has always trained."""


def window_candles(candles: dict[str, np.ndarray], days: float | None) -> dict[str, np.ndarray]:
    """Each symbol's candles of the last ``days`` days before the group's newest bar."""
    if not days or not candles:
        return candles
    newest = max(int(c[-1, 0]) for c in candles.values() if len(c))
    first = newest - int(days * 86_400_000)
    return {s: c[c[:, 0] > first] for s, c in candles.items()}


def panel_vol_profiles(lake: Any, panel: Panel) -> dict[str, list[float]]:
    """Each symbol's seasonal volatility profile (:mod:`models.vol_regime`) from the lake's 5m
    bars over the run's training span (whatever the run's timeframe); a symbol without enough
    5m bars has none."""
    first, last = int(panel.open_time[0]), int(panel.open_time[-1])
    out = {}
    for symbol in panel.symbols:
        bars = lake.read("5m", symbol)
        bars = bars[(bars[:, 0] >= first) & (bars[:, 0] <= last)] if len(bars) else bars
        if len(bars) > 1:
            try:
                out[symbol] = [float(v) for v in vol_profile(bars[:, 0], bars[:, 4])]
            except ValueError:
                continue
    return out


def train_run(state_dir: Path, run_id: str, group: str, symbols: list[str], kind: str,
              params: dict[str, Any] | None = None, *, tags: dict[str, Any] | None = None,
              parent_run_id: str | None = None, seed: int = 0,
              progress: Progress | None = None, timeframe: str = "5m",
              folds: int = DEFAULT_FOLDS, costs: CostModel | None = None,
              threshold: float = DEFAULT_THRESHOLD, device: str = "cpu") -> dict[str, Any]:
    """Train, validate, export and write one run (module docstring); its receipt.

    ``device`` ("auto", "cpu" or "cuda", ``training.device``) is resolved once, here: the
    torch kinds train there (a CUDA device torch cannot see falls back to the CPU), and the
    receipt records the device actually used."""
    from models.kinds import train  # torch and sklearn load in the worker only
    from models.kinds.torch_common import on_device, resolve_device

    done = read_result(state_dir, run_id)
    if done is not None:
        return done
    params = dict(params or {})
    data = {k: params.pop(k) for k in DATA_PARAMS if k in params}
    started = time.time()
    device = resolve_device(device) if kind not in CPU_ONLY else "cpu"
    spec = DataSpec(interval=timeframe,
                    lookback=int(params.get("lookback", DEFAULT_LOOKBACK.get(kind, 1))),
                    horizon=int(data.get("horizon", 12)), seed=seed)
    fs = feature_set(str(data.get("feature_set", FS1.id)))
    params.setdefault("lookback", spec.lookback)
    if kind == "ensemble":
        params.pop("lookback", None)
        params.setdefault("members", list(ENSEMBLE_MEMBERS))
    lake = lake_at(state_dir)
    candles = window_candles(load_group_candles(lake, symbols, spec.interval),
                             data.get("window_days"))
    panel = build_panel(candles, spec, margin=float(data.get("margin", 0.0)), feature_set=fs,
                        columns=data.get("features"), risk=str(data.get("risk", "none")))
    funding = group_funding(lake, panel, spec.interval)
    steps = folds + 1

    def report(step: int) -> Callable[[int, float, float], None]:
        def inner(epoch: int, loss: float, percent: float) -> None:
            if progress is not None:
                progress({"run_id": run_id, "group": group, "kind": kind, "epoch": epoch,
                          "loss": float(loss), "percent": (100.0 * step + percent) / steps,
                          "status": "running", "fold": step if step < folds else None,
                          "device": device})
        return inner

    fold_no = [0]

    def fit(x: np.ndarray, y: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None) -> Any:
        with on_device(device):
            return train(kind, x, y, params=params, seed=seed, progress=report(fold_no[0]),
                         x_val=xv, y_val=yv)

    def next_fold(k: int) -> None:
        fold_no[0] = k + 1

    metrics = walk_forward(panel, spec, fit, folds=folds, base=costs or CostModel(),
                           threshold=threshold, funding=funding, on_fold=next_fold)
    rows = np.arange(panel.bars)
    train_rows, stop_rows = inner_split(rows, spec.horizon + spec.lookback)
    x, y = panel.samples(train_rows, limit=spec.max_train_samples, seed=seed)
    xv, yv = panel.samples(stop_rows, limit=spec.max_train_samples // 4, seed=seed)
    model = fit(x, y, xv, yv)
    metrics["val_accuracy"] = float(np.mean(np.argmax(model.predict_proba(xv), axis=1) == yv)
                                    ) if len(yv) else None
    metrics["train_samples"] = int(len(y))
    result = {
        "run_id": run_id, "kind": kind, "group": group, "symbols": list(panel.symbols),
        "timeframe": spec.interval, "params": {**model.params, **data, "horizon": spec.horizon},
        "metrics": metrics, "tags": tags or {}, "parent_run_id": parent_run_id,
        "feature_set": fs.id, "features": list(panel.names),
        "dataset_sha256": dataset_sha256(lake, list(panel.symbols), spec.interval),
        "loss_curve": [float(v) for v in model.loss_curve], "device": device,
        "started": started, "ended": time.time(),
    }
    result = write_run(state_dir, run_id, model.export_onnx,
                       {"params.json": result["params"], "metrics.json": metrics,
                        "loss_curve.json": result["loss_curve"],
                        REFERENCE_FILE: panel_reference(panel),
                        VOL_PROFILE_FILE: panel_vol_profiles(lake, panel)}, result)
    if progress is not None:
        progress({"run_id": run_id, "group": group, "kind": kind, "epoch": None,
                  "loss": result["loss_curve"][-1] if result["loss_curve"] else None,
                  "percent": 100.0, "status": "completed", "device": device})
    return result

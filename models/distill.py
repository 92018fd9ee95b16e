"""Layer 8, meta-learning: a 1h LSTM teacher distilled into a 5m double-DQN student, one group.

1. The teacher is an ordinary ``lstm`` training run on the group's **1h** candles (the lake's
   resampling; features from the same ``models.features`` code, at 1h): walk-forward validated,
   exported, its receipt written like any run's, so it registers as a candidate with timeframe
   ``1h`` and may shadow and trade like any 1h model.
2. Its ONNX graph (the file serving runs) scores every hour of the group; each 5m bar gets the
   probabilities of its last CLOSED hour (:mod:`models.distill_align`: no look-ahead).
3. The student, a ``ddqn`` (:mod:`models.kinds.ddqn`), trades the 5m bars for rewards net of
   costs, its loss pulled towards the teacher by ``weight`` × KL at temperature
   ``temperature``. It is validated walk-forward like every run (the same folds, purge, cost
   model and replay through the engine's sizing), refit on every bar, and its receipt names
   the teacher's run as ``parent_run_id``: provenance is a chain a reader can follow.

Both receipts are registered by whoever holds DuckDB (``methtrader distill`` when ``run`` is
down, else ``run``'s training service), as candidates. Idempotent by run id.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from appliance.paths import StatePaths
from models.artifacts import REFERENCE_FILE, VOL_PROFILE_FILE, read_result, write_run
from models.costs import CostModel
from models.dataset import DataSpec, Panel, build_panel, dataset_sha256, lake_at
from models.distill_align import align_teacher
from models.features import FS1
from models.training import (group_funding, load_group_candles, panel_reference,
                             panel_vol_profiles, train_run, window_candles)
from models.validation import costs_on, inner_split, walk_forward

Progress = Callable[[dict[str, Any]], None]
TEACHER_KIND, STUDENT_KIND = "lstm", "ddqn"
TEACHER_TIMEFRAME, STUDENT_TIMEFRAME = "1h", "5m"
STUDENT_HORIZON = 12  # bars of the purge between folds (an hour of 5m bars)


def distill_setup(*, temperature: float = 1.0, weight: float = 1.0, episodes: int = 40,
                  episode_bars: int = 256, updates: int = 40, teacher_epochs: int = 5,
                  teacher_lookback: int = 32, window_days: float = 90.0, folds: int = 4, threshold: float = 0.1,
                  taker_fee: float = CostModel.taker_fee, slippage: float = CostModel.slippage,
                  seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """What one distillation needs from the config, as plain data (a job argument)."""
    return {"temperature": temperature, "weight": weight, "episodes": episodes,
            "episode_bars": episode_bars, "updates": updates, "teacher_epochs": teacher_epochs,
            "teacher_lookback": teacher_lookback, "window_days": window_days, "folds": folds, "threshold": threshold,
            "taker_fee": taker_fee, "slippage": slippage, "seed": seed, "device": device}


def teacher_hour_probs(onnx_path: Path, panel: Panel) -> list[np.ndarray]:
    """Per symbol of the 1h panel, (T_h, 3) probabilities of the teacher's ONNX graph (NaN
    where its features are not warm)."""
    from models.serving import OnnxModel

    model = OnnxModel(onnx_path, providers=["CPUExecutionProvider"])
    out = []
    for s in range(len(panel.symbols)):
        probs = np.full((panel.bars, 3), np.nan, dtype=np.float32)
        rows = np.flatnonzero(panel.usable[:, s])
        for start in range(0, len(rows), 4096):
            chunk = rows[start:start + 4096]
            probs[chunk] = model.predict(panel.windows(s)[chunk])
        out.append(probs)
    return out


def student_teacher(bars: Panel, hours: Panel, hour_probs: list[np.ndarray]) -> np.ndarray:
    """(T, S, 3) teacher probabilities at each 5m bar of each symbol (NaN where none)."""
    out = np.full((bars.bars, len(bars.symbols), 3), np.nan, dtype=np.float32)
    for s, symbol in enumerate(bars.symbols):
        h = hours.symbols.index(symbol)
        out[:, s] = align_teacher(bars.open_time, hours.open_time, hour_probs[h])
    return out


def rl_data(panel: Panel, teacher: np.ndarray, rows: np.ndarray, costs: CostModel) -> Any:
    """The student's :class:`models.kinds.ddqn.RlData` over the bars ``rows`` (ascending) of
    every symbol: a bar is playable when its features are warm and the teacher has spoken."""
    from models.kinds.ddqn import RlData

    rows = np.asarray(rows, dtype=np.int64)
    rows = rows[rows < panel.bars - 1]
    xs, rets, cost, oks, teach = [], [], [], [], []
    for s, symbol in enumerate(panel.symbols):
        ok = panel.usable[rows, s] & np.isfinite(teacher[rows, s]).all(axis=1)
        nxt = ok[1:] & ok[:-1] & (np.diff(rows) == 1)
        xs.append(panel.windows(s)[rows])
        rets.append(panel.close[rows + 1, s] / panel.close[rows, s] - 1.0)
        cost.append(np.full(len(rows), costs.per_side(symbol)))
        oks.append(np.concatenate([nxt, [False]]))
        teach.append(np.nan_to_num(teacher[rows, s], nan=1 / 3))
    return RlData(np.concatenate(xs).astype(np.float32, copy=False), np.concatenate(rets),
                  np.concatenate(cost), np.concatenate(oks), np.concatenate(teach))


def agreement(model: Any, panel: Panel, teacher: np.ndarray, rows: np.ndarray) -> float | None:
    """Share of the usable bars ``rows`` where the student's greedy action is the teacher's
    argmax."""
    hits, seen = 0, 0
    for s in range(len(panel.symbols)):
        ok = rows[panel.usable[rows, s] & np.isfinite(teacher[rows, s]).all(axis=1)]
        if len(ok):
            mine = model.predict_proba(panel.windows(s)[ok].astype(np.float32)).argmax(axis=1)
            hits += int((mine == teacher[ok, s].argmax(axis=1)).sum())
            seen += len(ok)
    return hits / seen if seen else None


def distill_group(state_dir: Path, group: str, symbols: list[str], setup: dict[str, Any], *,
                  teacher_run_id: str, student_run_id: str, tags: dict[str, Any] | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Train (or reuse) the teacher, then the student; {"teacher": receipt, "student":
    receipt}."""
    from models.kinds.base import merge_params
    from models.kinds.ddqn import KIND, fit_rl
    from models.kinds.torch_common import on_device, resolve_device

    state_dir = Path(state_dir)
    tags = dict(tags or {})
    seed, folds = int(setup["seed"]), int(setup["folds"])
    base = CostModel(float(setup["taker_fee"]), float(setup["slippage"]))
    device = resolve_device(str(setup["device"]))

    def say(record: dict[str, Any]) -> None:
        if progress is not None:
            progress({"group": group, "device": device, **record})

    say({"phase": "teacher", "run_id": teacher_run_id, "percent": 0.0})
    teacher = train_run(
        state_dir, teacher_run_id, group, symbols, TEACHER_KIND,
        {"epochs": int(setup["teacher_epochs"]), "lookback": int(setup["teacher_lookback"]),
         "window_days": setup["window_days"]},
        tags={**tags, "role": "teacher"}, seed=seed, timeframe=TEACHER_TIMEFRAME, folds=folds,
        costs=base, threshold=float(setup["threshold"]), device=device,
        progress=lambda p: say({"phase": "teacher", "run_id": teacher_run_id,
                                "percent": p["percent"], "loss": p.get("loss")}))
    say({"phase": "teacher", "run_id": teacher_run_id, "percent": 100.0})
    done = read_result(state_dir, student_run_id)
    if done is not None:
        say({"phase": "done", "run_id": student_run_id, "percent": 100.0,
             "agreement": done["metrics"].get("teacher_agreement")})
        return {"teacher": teacher, "student": done}
    started = time.time()
    lake = lake_at(state_dir)
    hour_spec = DataSpec(interval=TEACHER_TIMEFRAME, lookback=int(teacher["params"]["lookback"]),
                         horizon=int(teacher["params"]["horizon"]), seed=seed)
    hours = build_panel(window_candles(load_group_candles(lake, symbols, TEACHER_TIMEFRAME),
                                       setup["window_days"]), hour_spec, feature_set=FS1,
                        columns=teacher["features"])
    probs = teacher_hour_probs(StatePaths(state_dir).resolve_stored(teacher["onnx_path"]), hours)
    params = merge_params(KIND, {"episodes": int(setup["episodes"]),
                                 "episode_bars": int(setup["episode_bars"]),
                                 "updates": int(setup["updates"]),
                                 "temperature": float(setup["temperature"]),
                                 "distill_weight": float(setup["weight"])})
    spec = DataSpec(interval=STUDENT_TIMEFRAME, lookback=int(params["lookback"]),
                    horizon=STUDENT_HORIZON, seed=seed)
    candles = window_candles(load_group_candles(lake, list(hours.symbols), STUDENT_TIMEFRAME),
                             setup["window_days"])
    bars = build_panel(candles, spec, feature_set=FS1)
    params["n_features"] = len(bars.names)
    teach = student_teacher(bars, hours, probs)
    step = [0]

    def fit_rows(train_rows: np.ndarray, stop_rows: np.ndarray) -> Any:
        costs = costs_on(bars, train_rows, base)

        def episode(r: dict[str, Any]) -> None:
            say({"phase": "student", "run_id": student_run_id, "fold": step[0] + 1,
                 "folds": folds + 1, **r,
                 "percent": 100.0 * (step[0] + r["episode"] / r["episodes"]) / (folds + 1)})

        with on_device(device):
            model = fit_rl(rl_data(bars, teach, train_rows, costs), params,
                           seed=seed + step[0], on_episode=episode)
        step[0] += 1
        return model

    metrics = walk_forward(bars, spec, None, folds=folds, base=base,
                           threshold=float(setup["threshold"]),
                           funding=group_funding(lake, bars, spec.interval), fit_rows=fit_rows)
    train_rows, stop_rows = inner_split(np.arange(bars.bars), spec.horizon + spec.lookback)
    model = fit_rows(train_rows, stop_rows)
    metrics["teacher_agreement"] = agreement(model, bars, teach, stop_rows)
    metrics["train_bars"] = int(len(train_rows))
    result = {
        "run_id": student_run_id, "kind": STUDENT_KIND, "group": group,
        "symbols": list(bars.symbols), "timeframe": STUDENT_TIMEFRAME,
        "params": {**model.params, "horizon": spec.horizon,
                   "window_days": setup["window_days"]},
        "metrics": metrics, "tags": {**tags, "role": "student"},
        "parent_run_id": teacher_run_id, "feature_set": FS1.id, "features": list(bars.names),
        "dataset_sha256": dataset_sha256(lake, list(bars.symbols), spec.interval),
        "loss_curve": [float(v) for v in model.loss_curve], "device": device,
        "started": started, "ended": time.time()}
    student = write_run(state_dir, student_run_id, model.export_onnx,
                        {"params.json": result["params"], "metrics.json": metrics,
                         "loss_curve.json": result["loss_curve"],
                         REFERENCE_FILE: panel_reference(bars),
                         VOL_PROFILE_FILE: panel_vol_profiles(lake, bars)}, result)
    say({"phase": "done", "run_id": student_run_id, "percent": 100.0,
         "agreement": metrics["teacher_agreement"]})
    return {"teacher": teacher, "student": student}

"""The model registry in DuckDB: our own lightweight MLflow.

``training_runs`` keeps every run (kind, group, params, metrics, tags such as autogen, the
dataset's sha256, the feature set, the parent run (a distilled student's teacher), the device
it trained on, status, times, loss curve); ``ml_models``
keeps the models those runs produced and their ``mode``; ``feature_reference`` each model's drift
reference (:mod:`models.drift`), one row per feature; ``vol_profile`` its symbols' seasonal
volatility profiles (:mod:`models.vol_regime`). Modes change only through
:mod:`appliance.lifecycle` (candidate → shadow → prod → retired → archived; rejected), which also
registers runs (idempotent by run id, so a job that ran twice is registered once).

A model is only ever loaded through :func:`verified_onnx_path`, which refuses a file whose
sha256 no longer matches the registry.

``onnx_path`` is stored relative to the state dir, and the state dir is the folder of the DuckDB
file: :func:`model_path` resolves a stored path against the state dir in use, so a copy of a
state dir loads (and archives) its own files, never the original's.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from appliance.paths import OutsideStateDir, StatePaths
from appliance.store import Store
from data.files import sha256_file
from models.artifacts import REFERENCE_FILE, VOL_PROFILE_FILE


class RegistryError(RuntimeError):
    """A registry rule was broken (unknown model, tampered file, bad mode)."""


class ModelNotFound(RegistryError):
    """No model of that id: the operator named one that does not exist (bad input)."""


def insert_candidate(store: Store, r: dict[str, Any], now: float) -> dict[str, Any] | None:
    """Insert a finished run and its model (mode unset: the lifecycle makes it a candidate in
    the same transaction); None when the run is already registered. Call only from
    :func:`appliance.lifecycle.register`."""
    known = store.sql("SELECT 1 FROM training_runs WHERE run_id = ? AND status = 'completed'",
                      [r["run_id"]])
    if known:
        return None
    store.sql("DELETE FROM training_runs WHERE run_id = ?", [r["run_id"]])  # a failed try
    store.sql(
        "INSERT INTO training_runs (run_id, kind, grp, params, metrics, tags, "
        "dataset_sha256, feature_set, parent_run_id, status, started, ended, loss_curve, "
        "device) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'completed', ?, ?, ?, ?)",
        [r["run_id"], r["kind"], r["group"], json.dumps(r["params"]),
         json.dumps(r["metrics"]), json.dumps(r.get("tags", {})), r["dataset_sha256"],
         r["feature_set"], r.get("parent_run_id"), r["started"], r["ended"],
         json.dumps(r.get("loss_curve", [])), r.get("device")])
    model_id = model_id_of(r["run_id"])
    save_reference(store, model_id, r["run_id"])
    save_vol_profiles(store, model_id, r["run_id"])
    store.sql(
        "INSERT INTO ml_models (model_id, run_id, grp, symbols, timeframe, kind, mode, "
        "onnx_path, onnx_sha256, created, metrics, mode_since) VALUES (?, ?, ?, ?, ?, ?, "
        "'new', ?, ?, ?, ?, ?)",
        [model_id, r["run_id"], r["group"], json.dumps(r["symbols"]), r["timeframe"],
         r["kind"], stored_path(store, r["onnx_path"]), r["onnx_sha256"], now, json.dumps(r["metrics"]), now])
    return get_model(store, model_id)


def save_reference(store: Store, model_id: str, run_id: str) -> int:
    """The run's drift reference (its folder's ``reference.json``) as ``feature_reference``
    rows, one per feature; 0 for a run that has none (trained before drift existed)."""
    path = state_paths(store).run_dir(run_id) / REFERENCE_FILE
    if not path.exists():
        return 0
    ref = json.loads(path.read_text())
    store.sql("DELETE FROM feature_reference WHERE model_id = ?", [model_id])
    for feature, stats in sorted(ref.items()):
        store.sql("INSERT INTO feature_reference VALUES (?, ?, ?)",
                  [model_id, feature, json.dumps(stats)])
    return len(ref)


def save_vol_profiles(store: Store, model_id: str, run_id: str) -> int:
    """The run's seasonal volatility profiles (``vol_profile.json``) as ``vol_profile`` rows,
    one per symbol; 0 for a run that has none."""
    path = state_paths(store).run_dir(run_id) / VOL_PROFILE_FILE
    if not path.exists():
        return 0
    profiles = json.loads(path.read_text())
    store.sql("DELETE FROM vol_profile WHERE model_id = ?", [model_id])
    for symbol, profile in sorted(profiles.items()):
        store.sql("INSERT INTO vol_profile VALUES (?, ?, ?)",
                  [model_id, symbol, json.dumps(profile)])
    return len(profiles)


def load_vol_profiles(store: Store, model_id: str) -> dict[str, list[float]]:
    """A model's seasonal volatility profile per symbol (empty when none)."""
    return {s: json.loads(p) for s, p in store.sql(
        "SELECT symbol, profile FROM vol_profile WHERE model_id = ?", [model_id])}


def load_reference(store: Store, model_id: str) -> dict[str, dict[str, Any]]:
    """A model's drift reference as stored: feature → histogram data (empty when none)."""
    return {f: json.loads(s) for f, s in store.sql(
        "SELECT feature, stats FROM feature_reference WHERE model_id = ?", [model_id])}


def record_failed_run(store: Store, run_id: str, kind: str, group: str, error: str) -> None:
    store.sql("INSERT INTO training_runs (run_id, kind, grp, status, ended, metrics) VALUES "
              "(?, ?, ?, 'failed', ?, ?) ON CONFLICT (run_id) DO NOTHING",
              [run_id, kind, group, time.time(), json.dumps({"error": error})])


def model_id_of(run_id: str) -> str:
    return f"m-{run_id}"


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("symbols", "metrics", "params", "tags", "loss_curve"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def list_models(store: Store, mode: str | None = None) -> list[dict[str, Any]]:
    where, params = ("WHERE m.mode = ?", [mode]) if mode else ("", [])
    rows = store._dicts(
        "SELECT m.model_id, m.run_id, r.parent_run_id, m.grp AS \"group\", m.symbols, "
        "m.timeframe, m.kind, m.mode, m.onnx_path, m.onnx_sha256, r.tags, m.metrics, "
        "m.created, m.shadow_started, m.promoted, m.retired, m.archived, m.mode_since, "
        "m.pinned, r.feature_set, r.params, r.device, "
        f"r.dataset_sha256 FROM ml_models m LEFT JOIN training_runs r USING (run_id) {where} "
        "ORDER BY m.created, m.model_id", params)
    return [_decode(r) for r in rows]


def get_model(store: Store, model_id: str) -> dict[str, Any]:
    for m in list_models(store):
        if m["model_id"] == model_id:
            return m
    raise ModelNotFound(f"no model {model_id!r} in the registry (methtrader models lists them)")


def state_paths(store: Store) -> StatePaths:
    """The state dir a registry's paths are relative to: the DuckDB file's folder."""
    return StatePaths(store.path.parent)


def stored_path(store: Store, path: str) -> str:
    """How a model path is stored: relative to the state dir (old absolute paths relativised)."""
    return state_paths(store).relativise(path)


def model_path(store: Store, onnx_path: str) -> Path:
    """The absolute path of a stored model path, inside the state dir in use."""
    try:
        return state_paths(store).resolve_stored(onnx_path)
    except OutsideStateDir as exc:
        raise RegistryError(f"model file {onnx_path}: {exc}") from None


def verified_onnx_path(store: Store, model_id: str) -> Path:
    """The model's ONNX file, after checking it is the file that was registered."""
    m = get_model(store, model_id)
    path = model_path(store, m["onnx_path"])
    if not path.exists():
        raise RegistryError(f"model {model_id}: {path} is missing (archived or deleted)")
    actual = sha256_file(path)
    if actual != m["onnx_sha256"]:
        raise RegistryError(f"model {model_id}: {path} does not match its registered sha256 "
                            f"({actual[:12]}… ≠ {m['onnx_sha256'][:12]}…); refusing to load a "
                            "file that changed after training")
    return path

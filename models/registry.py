"""The model registry in DuckDB: our own lightweight MLflow.

``training_runs`` keeps every run (kind, group, params, metrics, tags such as autogen, the
dataset's sha256, the feature set, the parent run, status, times, loss curve); ``ml_models``
keeps the models those runs produced and their ``mode``: candidate → shadow → prod, or archived.
Registration is idempotent by run id, so a job that ran twice is registered once.

A model is only ever loaded through :func:`verified_onnx_path`, which refuses a file whose
sha256 no longer matches the registry.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from appliance.store import Store
from models.artifacts import sha256_file

MODES = ("candidate", "shadow", "prod", "archived")


class RegistryError(RuntimeError):
    """A registry rule was broken (unknown model, tampered file, bad mode)."""


def register_result(store: Store, r: dict[str, Any]) -> bool:
    """Register a finished run and its model as a candidate; False when already known."""
    known = store.sql("SELECT 1 FROM training_runs WHERE run_id = ? AND status = 'completed'",
                      [r["run_id"]])
    if known:
        return False
    store.sql("BEGIN TRANSACTION")
    try:
        store.sql("DELETE FROM training_runs WHERE run_id = ?", [r["run_id"]])  # a failed try
        store.sql(
            "INSERT INTO training_runs (run_id, kind, grp, params, metrics, tags, "
            "dataset_sha256, feature_set, parent_run_id, status, started, ended, loss_curve) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'completed', ?, ?, ?)",
            [r["run_id"], r["kind"], r["group"], json.dumps(r["params"]),
             json.dumps(r["metrics"]), json.dumps(r.get("tags", {})), r["dataset_sha256"],
             r["feature_set"], r.get("parent_run_id"), r["started"], r["ended"],
             json.dumps(r.get("loss_curve", []))])
        store.sql(
            "INSERT INTO ml_models (model_id, run_id, grp, symbols, timeframe, kind, mode, "
            "onnx_path, onnx_sha256, created, metrics) VALUES (?, ?, ?, ?, ?, ?, 'candidate', "
            "?, ?, ?, ?)",
            [model_id_of(r["run_id"]), r["run_id"], r["group"], json.dumps(r["symbols"]),
             r["timeframe"], r["kind"], r["onnx_path"], r["onnx_sha256"], r["ended"],
             json.dumps(r["metrics"])])
        store.sql("COMMIT")
    except Exception:
        store.sql("ROLLBACK")
        raise
    return True


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
        "m.created, m.shadow_started, m.promoted, m.archived, m.pinned, r.feature_set, "
        f"r.dataset_sha256 FROM ml_models m LEFT JOIN training_runs r USING (run_id) {where} "
        "ORDER BY m.created, m.model_id", params)
    return [_decode(r) for r in rows]


def get_model(store: Store, model_id: str) -> dict[str, Any]:
    for m in list_models(store):
        if m["model_id"] == model_id:
            return m
    raise RegistryError(f"no model {model_id!r} in the registry (methtrader models lists them)")


def set_mode(store: Store, model_id: str, mode: str, ts: float | None = None) -> None:
    if mode not in MODES:
        raise RegistryError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    get_model(store, model_id)
    column = {"shadow": "shadow_started", "prod": "promoted", "archived": "archived"}.get(mode)
    stamp = f", {column} = ?" if column else ""
    store.sql(f"UPDATE ml_models SET mode = ?{stamp} WHERE model_id = ?",
              [mode, *([ts or time.time()] if column else []), model_id])


def verified_onnx_path(store: Store, model_id: str) -> Path:
    """The model's ONNX file, after checking it is the file that was registered."""
    m = get_model(store, model_id)
    path = Path(m["onnx_path"])
    if not path.exists():
        raise RegistryError(f"model {model_id}: {path} is missing (archived or deleted)")
    actual = sha256_file(path)
    if actual != m["onnx_sha256"]:
        raise RegistryError(f"model {model_id}: {path} does not match its registered sha256 "
                            f"({actual[:12]}… ≠ {m['onnx_sha256'][:12]}…); refusing to load a "
                            "file that changed after training")
    return path


def worst_non_prod(models: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The worst ``fraction`` (rounded up) of live non-prod, unpinned models by validation
    Sharpe: the archive candidates when the disk fills up."""
    pool = [m for m in models if m["mode"] in ("candidate", "shadow") and not m.get("pinned")]
    pool.sort(key=lambda m: (m["metrics"] or {}).get("sharpe", float("-inf")))
    n = -(-len(pool) * fraction // 1) if pool else 0
    return pool[:int(n)]

"""Run artifacts on disk: ``<state>/artifacts/<run_id>/`` (model.onnx, params.json,
metrics.json, loss_curve.json, reference.json, vol_profile.json, result.json).

A run's folder appears whole or not at all: everything is written into ``<run_id>.partial``,
fsynced, and the folder is renamed. ``result.json`` is the receipt the appliance registers from;
a folder with it is a finished run, so a job that runs again returns it instead of retraining.

The receipt's ``onnx_path`` is relative to the state dir (``artifacts/<run_id>/model.onnx``), so
a copied or restored state dir registers its own files; receipts written by older versions held
absolute paths and are read back relative.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from appliance.paths import StatePaths
from data.files import fsync_path, sha256_file

REFERENCE_FILE = "reference.json"  # the run's drift reference (models.drift), per feature
VOL_PROFILE_FILE = "vol_profile.json"  # its symbols' seasonal volatility (models.vol_regime)


def artifacts_root(state_dir: Path) -> Path:
    return StatePaths(state_dir).artifacts


def run_dir(state_dir: Path, run_id: str) -> Path:
    return StatePaths(state_dir).run_dir(run_id)


def _receipt(state_dir: Path, path: Path) -> dict[str, Any]:
    result = json.loads(path.read_text())
    if "onnx_path" in result:
        result["onnx_path"] = StatePaths(state_dir).relativise(result["onnx_path"])
    return result


def read_result(state_dir: Path, run_id: str) -> dict[str, Any] | None:
    path = run_dir(state_dir, run_id) / "result.json"
    return _receipt(state_dir, path) if path.exists() else None


def write_run(state_dir: Path, run_id: str, write_model: Callable[[Path], None],
              files: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Write a finished run crash-safely; returns ``result`` with the ONNX path (relative to
    the state dir) and sha256."""
    final = run_dir(state_dir, run_id)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_model(partial / "model.onnx")
    for name, content in files.items():
        (partial / name).write_text(json.dumps(content, indent=1, sort_keys=True, default=float))
    result = {**result, "onnx_path": StatePaths(state_dir).model_rel(run_id),
              "onnx_sha256": sha256_file(partial / "model.onnx")}
    (partial / "result.json").write_text(json.dumps(result, sort_keys=True, default=float))
    for f in partial.iterdir():
        fsync_path(f)
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    fsync_path(final.parent)
    return result


def finished_runs(state_dir: Path) -> list[dict[str, Any]]:
    root = artifacts_root(state_dir)
    if not root.exists():
        return []
    out = []
    for d in sorted(root.iterdir()):
        receipt = d / "result.json"
        if d.is_dir() and not d.name.endswith(".partial") and receipt.exists():
            out.append(_receipt(state_dir, receipt))
    return out


def delete_model_files(onnx_path: str | Path) -> bool:
    """Archive: the model file goes, params/metrics/receipt stay for the record. True when a
    file was deleted."""
    path = Path(onnx_path)
    if path.exists():
        path.unlink()
        return True
    return False

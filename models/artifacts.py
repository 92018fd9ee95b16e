"""Run artifacts on disk: ``<state>/artifacts/<run_id>/`` (model.onnx, params.json,
metrics.json, loss_curve.json, result.json).

A run's folder appears whole or not at all: everything is written into ``<run_id>.partial``,
fsynced, and the folder is renamed. ``result.json`` is the receipt the appliance registers from;
a folder with it is a finished run, so a job that runs again returns it instead of retraining.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable


def artifacts_root(state_dir: Path) -> Path:
    return Path(state_dir) / "artifacts"


def run_dir(state_dir: Path, run_id: str) -> Path:
    return artifacts_root(state_dir) / run_id


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_result(state_dir: Path, run_id: str) -> dict[str, Any] | None:
    path = run_dir(state_dir, run_id) / "result.json"
    return json.loads(path.read_text()) if path.exists() else None


def write_run(state_dir: Path, run_id: str, write_model: Callable[[Path], None],
              files: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Write a finished run crash-safely; returns ``result`` with the ONNX path and sha256."""
    final = run_dir(state_dir, run_id)
    partial = final.with_name(final.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    write_model(partial / "model.onnx")
    for name, content in files.items():
        (partial / name).write_text(json.dumps(content, indent=1, sort_keys=True, default=float))
    result = {**result, "onnx_path": str((final / "model.onnx").resolve()),
              "onnx_sha256": sha256_file(partial / "model.onnx")}
    (partial / "result.json").write_text(json.dumps(result, sort_keys=True, default=float))
    for f in partial.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return result


def finished_runs(state_dir: Path) -> list[dict[str, Any]]:
    root = artifacts_root(state_dir)
    if not root.exists():
        return []
    out = []
    for d in sorted(root.iterdir()):
        receipt = d / "result.json"
        if d.is_dir() and not d.name.endswith(".partial") and receipt.exists():
            out.append(json.loads(receipt.read_text()))
    return out


def delete_model_files(onnx_path: str | Path) -> bool:
    """Archive: the model file goes, params/metrics/receipt stay for the record. True when a
    file was deleted."""
    path = Path(onnx_path)
    if path.exists():
        path.unlink()
        return True
    return False

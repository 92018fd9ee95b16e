"""A state dir is relocatable (finding 4): every stored path is relative to it, so a ``cp -a``
copy loads and archives its own model files and never touches the original's. And a schema
migration never starts without a copy of the file as it was."""

from __future__ import annotations

import json
import subprocess

import duckdb
import numpy as np
import pytest

from appliance import lifecycle
from appliance.commands import list_registry
from appliance.config import build_config
from appliance.services.training import model_files, unregistered_runs
from appliance.store import SCHEMA_VERSION, Store, migrate, schema_version
from models.artifacts import write_run
from models.registry import get_model, list_models, verified_onnx_path
from models.serving import OnnxModel
from tests.statedir_helpers import F, receipt, tiny_rf, trained_state, tree_digest


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_rf()


def test_a_copy_loads_and_archives_its_own_models_and_never_the_originals(tmp_path):
    orig, copy = tmp_path / "orig", tmp_path / "copy"
    trained_state(orig, ("r1", "r2"))
    subprocess.run(["cp", "-a", str(orig), str(copy)], check=True)
    before = tree_digest(orig)

    store = Store(copy / "methtrader.duckdb")
    try:
        for m in list_models(store):
            assert not m["onnx_path"].startswith("/")  # stored relative
        path = verified_onnx_path(store, "m-r2")
        assert path == copy / "artifacts" / "r2" / "model.onnx"  # the copy's, not the original's
        probs = OnnxModel(path).predict(np.zeros((2, 1, F), np.float32))
        assert probs.shape == (2, 3)
        assert {f.model_id: f.bytes for f in model_files(store, copy)} == {
            "m-r1": (copy / "artifacts" / "r1" / "model.onnx").stat().st_size,
            "m-r2": path.stat().st_size}  # the disk guard measures the copy's files
        assert get_model(store, "m-r1")["mode"] == "rejected"  # superseded by r2
        lifecycle.archive(store, "m-r1", actor="disk_guard", reason="test", now=2000.0)
        assert lifecycle.delete_archived_files(store, copy) == 1
        assert get_model(store, "m-r1")["mode"] == "archived"
    finally:
        store.close()
    assert not (copy / "artifacts" / "r1" / "model.onnx").exists()
    assert (copy / "artifacts" / "r2" / "model.onnx").exists()
    assert tree_digest(orig) == before  # the original's files are untouched

    cfg = build_config(env={}, overrides={"general": {"state_dir": str(orig)}})
    assert [m["onnx_path"] for m in list_registry(cfg)] == [
        str(orig / "artifacts" / r / "model.onnx") for r in ("r1", "r2")]  # absolute for users


def test_an_old_state_dir_with_absolute_paths_migrates_to_relative(tmp_path, tiny_model):
    """A v4 state dir (absolute paths in DuckDB and in receipts), copied elsewhere: the copy's
    first open backs the file up, relativises the paths and resolves them in the copy."""
    orig, copy = tmp_path / "orig", tmp_path / "copy"
    orig.mkdir()
    con = duckdb.connect(str(orig / "methtrader.duckdb"))
    migrate(con, upto=4)
    for run_id in ("r1", "r2"):
        r = write_run(orig, run_id, tiny_model.export_onnx, {}, receipt(run_id))
        absolute = str((orig / r["onnx_path"]).resolve())
        receipt_file = orig / "artifacts" / run_id / "result.json"
        receipt_file.write_text(json.dumps({**json.loads(receipt_file.read_text()),
                                            "onnx_path": absolute}))  # as v4 wrote it
        if run_id == "r1":  # registered by v4; r2's receipt is not registered yet
            con.execute("INSERT INTO training_runs (run_id, status) VALUES ('r1', 'completed')")
            con.execute("INSERT INTO ml_models (model_id, run_id, grp, mode, onnx_path, "
                        "onnx_sha256, created) VALUES ('m-r1', 'r1', 't1-a', 'candidate', ?, "
                        "?, 1)", [absolute, r["onnx_sha256"]])
    con.close()
    subprocess.run(["cp", "-a", str(orig), str(copy)], check=True)
    before = tree_digest(orig)

    store = Store(copy / "methtrader.duckdb")
    try:
        assert store.sql("SELECT onnx_path FROM ml_models") == [("artifacts/r1/model.onnx",)]
        assert verified_onnx_path(store, "m-r1") == copy / "artifacts" / "r1" / "model.onnx"
        # r2's old receipt (absolute path into the original) registers relative
        (r2,) = unregistered_runs(store, copy)
        assert r2["run_id"] == "r2" and r2["onnx_path"] == "artifacts/r2/model.onnx"
        lifecycle.register(store, r2, now=2000.0)
        assert get_model(store, "m-r2")["onnx_path"] == "artifacts/r2/model.onnx"
        assert verified_onnx_path(store, "m-r2") == copy / "artifacts" / "r2" / "model.onnx"
    finally:
        store.close()
    (backup,) = (copy / "backups").iterdir()
    assert backup.name.startswith("methtrader-v4-") and backup.suffix == ".duckdb"
    assert tree_digest(orig) == before


def test_a_migration_is_preceded_by_a_backup_of_the_old_file(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    path = state / "methtrader.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, upto=2)  # a file built by an older methtrader
    con.execute("INSERT INTO candles VALUES ('BTCUSDT', '1m', 0, 1, 2, 0.5, 1.5, 10, 3)")
    con.close()

    Store(path).close()
    (backup,) = (state / "backups").iterdir()
    assert backup.name.startswith("methtrader-v2-") and backup.stat().st_mode & 0o777 == 0o600
    old = duckdb.connect(str(backup), read_only=True)
    assert schema_version(old) == 2  # the file as it was, before the migration
    assert old.execute("SELECT close FROM candles").fetchall() == [(1.5,)]
    old.close()
    current = duckdb.connect(str(path), read_only=True)
    assert schema_version(current) == SCHEMA_VERSION
    current.close()

    Store(path).close()  # already current: no second backup
    assert len(list((state / "backups").iterdir())) == 1


def test_a_fresh_database_takes_no_backup(tmp_path):
    Store(tmp_path / "methtrader.duckdb").close()
    assert not (tmp_path / "backups").exists()

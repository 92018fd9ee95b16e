import json

import pytest

from appliance.store import Store
from models.artifacts import finished_runs, read_result, write_run
from models.registry import (RegistryError, get_model, list_models, record_failed_run,
                             register_result, set_mode, verified_onnx_path, worst_non_prod)


def fake_run(state_dir, run_id, sharpe=1.0, group="t1-a"):
    def write_model(path):
        path.write_bytes(b"onnx bytes of " + run_id.encode())

    return write_run(state_dir, run_id, write_model, {"params.json": {"a": 1}}, {
        "run_id": run_id, "kind": "rf", "group": group, "symbols": ["BTCUSDT", "ETHUSDT"],
        "timeframe": "5m", "params": {"a": 1}, "metrics": {"sharpe": sharpe},
        "tags": {"autogen": False}, "parent_run_id": None, "feature_set": "fs1",
        "dataset_sha256": "d" * 64, "loss_curve": [1.0, 0.5], "started": 1.0, "ended": 2.0})


def test_registry_round_trip_and_idempotent_registration(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    r = fake_run(tmp_path, "run1")
    assert read_result(tmp_path, "run1")["onnx_sha256"] == r["onnx_sha256"]
    assert [x["run_id"] for x in finished_runs(tmp_path)] == ["run1"]
    assert register_result(store, r) is True
    assert register_result(store, r) is False  # a second receipt of the same run
    (m,) = list_models(store)
    assert m["mode"] == "candidate" and m["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert m["group"] == "t1-a" and m["metrics"] == {"sharpe": 1.0} and m["tags"]["autogen"] is False
    assert m["onnx_path"].endswith("run1/model.onnx") and len(m["onnx_sha256"]) == 64
    set_mode(store, m["model_id"], "shadow", ts=5.0)
    assert get_model(store, m["model_id"])["shadow_started"] == 5.0
    with pytest.raises(RegistryError, match="mode must be one of"):
        set_mode(store, m["model_id"], "yolo")
    with pytest.raises(RegistryError, match="no model"):
        get_model(store, "m-nope")


def test_a_tampered_model_file_is_refused(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    r = fake_run(tmp_path, "run1")
    register_result(store, r)
    model_id = list_models(store)[0]["model_id"]
    assert verified_onnx_path(store, model_id).exists()
    with open(r["onnx_path"], "ab") as fh:
        fh.write(b"!")
    with pytest.raises(RegistryError, match="does not match its registered sha256"):
        verified_onnx_path(store, model_id)


def test_a_failed_try_is_replaced_by_the_successful_retry(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    record_failed_run(store, "run1", "rf", "t1-a", "boom")
    assert register_result(store, fake_run(tmp_path, "run1")) is True
    rows = store.sql("SELECT status FROM training_runs WHERE run_id = 'run1'")
    assert rows == [("completed",)]


def test_worst_twenty_percent_of_non_prod_models():
    models = [{"model_id": f"m{i}", "mode": "candidate", "metrics": {"sharpe": s},
               "pinned": False} for i, s in enumerate([0.5, -1.0, 2.0, 0.1, 1.0])]
    models += [{"model_id": "prod", "mode": "prod", "metrics": {"sharpe": -9}, "pinned": False},
               {"model_id": "pin", "mode": "shadow", "metrics": {"sharpe": -9}, "pinned": True}]
    assert [m["model_id"] for m in worst_non_prod(models, 0.2)] == ["m1"]
    assert [m["model_id"] for m in worst_non_prod(models, 0.5)] == ["m1", "m3", "m0"]


def test_artifacts_are_written_whole(tmp_path):
    r = fake_run(tmp_path, "run2")
    folder = tmp_path / "artifacts" / "run2"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "params.json",
                                                       "result.json"]
    assert json.loads((folder / "params.json").read_text()) == {"a": 1}
    assert not list((tmp_path / "artifacts").glob("*.partial"))
    assert r["onnx_path"] == str((folder / "model.onnx").resolve())

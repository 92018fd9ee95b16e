import json

import pytest

from appliance import lifecycle
from appliance.store import Store
from models.artifacts import finished_runs, read_result
from models.registry import (RegistryError, get_model, list_models, record_failed_run,
                             verified_onnx_path)
from tests.builders import fake_run


def register_result(store, r) -> bool:
    return bool(lifecycle.register(store, r, now=3.0))


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
    lifecycle.start_shadow(store, m["model_id"], actor="t", reason="r", now=5.0)
    assert get_model(store, m["model_id"])["shadow_started"] == 5.0
    with pytest.raises(RegistryError, match="cannot become candidate"):
        lifecycle._in_transaction(store, lambda: [lifecycle._move(
            store, get_model(store, m["model_id"]), "candidate", actor="t", reason="r",
            now=6.0)])
    with pytest.raises(RegistryError, match="no model"):
        get_model(store, "m-nope")


def test_a_tampered_model_file_is_refused(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    r = fake_run(tmp_path, "run1")
    register_result(store, r)
    model_id = list_models(store)[0]["model_id"]
    assert verified_onnx_path(store, model_id).exists()
    with open(tmp_path / r["onnx_path"], "ab") as fh:
        fh.write(b"!")
    with pytest.raises(RegistryError, match="does not match its registered sha256"):
        verified_onnx_path(store, model_id)


def test_a_failed_try_is_replaced_by_the_successful_retry(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    record_failed_run(store, "run1", "rf", "t1-a", "boom")
    assert register_result(store, fake_run(tmp_path, "run1")) is True
    rows = store.sql("SELECT status FROM training_runs WHERE run_id = 'run1'")
    assert rows == [("completed",)]


def test_artifacts_are_written_whole(tmp_path):
    r = fake_run(tmp_path, "run2")
    folder = tmp_path / "artifacts" / "run2"
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "params.json",
                                                       "result.json"]
    assert json.loads((folder / "params.json").read_text()) == {"a": 1}
    assert not list((tmp_path / "artifacts").glob("*.partial"))
    assert r["onnx_path"] == "artifacts/run2/model.onnx"  # relative to the state dir

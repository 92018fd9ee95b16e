"""StatePaths: every stored path is relative to the state dir and never leaves it."""

from __future__ import annotations

import pytest

from appliance.paths import OutsideStateDir, StatePaths


def test_names_every_file_of_a_state_dir(tmp_path):
    p = StatePaths(tmp_path)
    named = {p.duckdb, p.bus, p.lake, p.artifacts, p.logs, p.clock, p.sim_account, p.queue,
             p.optuna_journal, p.backups, p.run_lock}
    assert len(named) == 11 and all(x.parent == tmp_path for x in named)
    assert p.rel(p.clock) == "clock.json"
    assert p.model_rel("r1") == "artifacts/r1/model.onnx"
    assert p.resolve(p.model_rel("r1")) == tmp_path / "artifacts" / "r1" / "model.onnx"


def test_rel_and_resolve_round_trip_and_refuse_what_lies_outside(tmp_path):
    p = StatePaths(tmp_path / "state")
    inside = tmp_path / "state" / "lake" / "manifests" / "x.json"
    assert p.rel(inside) == "lake/manifests/x.json"
    assert p.resolve(p.rel(inside)) == inside
    assert p.rel("artifacts/./r1/model.onnx") == "artifacts/r1/model.onnx"
    for bad in (tmp_path / "other" / "x", "../state2/x", "artifacts/../../x", "."):
        with pytest.raises(OutsideStateDir):
            p.rel(bad)
    for bad in (str(inside), "../x", "artifacts/../../x"):
        with pytest.raises(OutsideStateDir):
            p.resolve(bad)


def test_rel_sees_through_a_symlinked_state_dir(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    p = StatePaths(tmp_path / "link")
    assert p.rel((tmp_path / "real" / "clock.json").resolve()) == "clock.json"


def test_relativise_maps_an_old_absolute_path_into_this_state_dir(tmp_path):
    copy = StatePaths(tmp_path / "copy")
    assert copy.relativise(str(tmp_path / "copy" / "artifacts" / "r1" / "model.onnx")) == \
        "artifacts/r1/model.onnx"
    # a path of the original (the copy's database came from there): this copy's file
    assert copy.relativise("/srv/orig/artifacts/r2/model.onnx") == "artifacts/r2/model.onnx"
    assert copy.relativise("/a/artifacts/b/artifacts/r3/model.onnx") == \
        "artifacts/r3/model.onnx"
    assert copy.relativise("artifacts/r4/model.onnx") == "artifacts/r4/model.onnx"
    with pytest.raises(OutsideStateDir):
        copy.relativise("/etc/passwd")

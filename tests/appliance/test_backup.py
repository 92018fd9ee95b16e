"""Backup and restore in process (the e2e tests drive them through ``run`` and the CLI)."""

from __future__ import annotations

import json

import pytest

from appliance.backup import MANIFEST, BackupError, make_backup, restore
from appliance.bus import MAINTENANCE_MODE, Bus
from appliance.config import build_config
from tests.statedir_helpers import trained_state, tree_digest


def cfg_for(state):
    return build_config(env={}, overrides={"general": {"state_dir": str(state)}})


@pytest.fixture
def backed_up(tmp_path):
    state = tmp_path / "state"
    trained_state(state, ("r1",))
    (state / "lake" / "manifests").mkdir(parents=True)
    (state / "lake" / "manifests" / "BTCUSDT-1m.json").write_text("{}")
    (state / "lake" / "manifests" / ".BTCUSDT-5m.json.tmp").write_text("half")  # a write
    (state / "artifacts" / "r9.partial").mkdir()  # a run still being written
    (state / "artifacts" / "r9.partial" / "model.onnx").write_bytes(b"half")
    with Bus(state / "bus") as bus:
        bus.set_switch(MAINTENANCE_MODE, True, actor="alice", reason="test")
    dest = tmp_path / "backup"
    make_backup(cfg_for(state), dest)
    return state, dest


def test_a_backup_holds_finished_files_only_and_restores_them(tmp_path, backed_up):
    state, dest = backed_up
    files = json.loads((dest / MANIFEST).read_text())["files"]
    assert sorted(files) == ["artifacts/r1/model.onnx", "artifacts/r1/result.json",
                             "lake/manifests/BTCUSDT-1m.json", "methtrader.duckdb",
                             "switches.json"]
    target = tmp_path / "target"
    result = restore(cfg_for(target), dest)
    assert result["files"] == 5 and result["moved_aside"] is None
    digest = tree_digest(target)
    assert all(digest[rel] == e["sha256"] for rel, e in files.items() if rel != "switches.json")
    with Bus(target / "bus") as bus:
        assert bus.maintenance_mode is True  # the switch came back with the data
        assert bus.audit_entries()[-1]["action"] == "restore"


def test_a_manifest_cannot_point_outside_the_backup(tmp_path, backed_up):
    _state, dest = backed_up
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["files"]["../outside"] = {"sha256": "0" * 64, "size": 1}
    (dest / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BackupError, match=r"\.\./outside \(a path outside") as err:
        restore(cfg_for(tmp_path / "target"), dest)
    assert err.value.code == 2 and not (tmp_path / "target").exists()


def test_a_backup_goes_outside_the_state_dir_or_under_its_backups(tmp_path):
    state = tmp_path / "state"
    trained_state(state, ("r1",))
    with pytest.raises(BackupError, match="inside the state dir") as err:
        make_backup(cfg_for(state), state / "lake" / "copy")
    assert err.value.code == 2
    make_backup(cfg_for(state), state / "backups" / "b1")
    assert (state / "backups" / "b1" / MANIFEST).exists()
    with pytest.raises(BackupError, match="no methtrader state"):
        make_backup(cfg_for(tmp_path / "nothing"), tmp_path / "b2")


def test_a_destination_an_interrupted_backup_left_is_named_as_such(tmp_path, backed_up):
    """A backup killed midway leaves its folder without MANIFEST.json: restore refuses it,
    and a new backup to it says what it is instead of "not an empty folder"."""
    state, dest = backed_up
    (dest / MANIFEST).unlink()  # as if killed before the manifest was written
    with pytest.raises(BackupError, match="not a finished methtrader backup"):
        restore(cfg_for(tmp_path / "target"), dest)
    with pytest.raises(BackupError, match="holds an unfinished backup .*interrupted") as err:
        make_backup(cfg_for(state), dest)
    assert err.value.code == 2
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(BackupError, match="already exists and is not an empty folder"):
        make_backup(cfg_for(state), other)

"""A state dir as an operator moves it: copied with ``cp -a``, backed up while ``run`` is up,
restored elsewhere. Real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from appliance.store import connect
from tests.e2e.conftest import methtrader, status_json, stderr_of
from tests.e2e.test_run import wait_for
from tests.statedir_helpers import trained_state, tree_digest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QUIET = {"METHTRADER__DATASETS__DAYS": "1", "METHTRADER__TRAINING__KINDS": "rf"}


def models_json(state) -> list[dict]:
    return json.loads(methtrader("models", "--json", "--state-dir", str(state)).stdout)


def db_rows(db, sql: str) -> list[tuple]:
    con = connect(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_run_on_a_copied_state_dir_uses_only_its_own_files(tmp_path, run_proc):
    """Finding 4 end to end, with the original moved away while the copy runs: the copy's
    appliance loads its own prod model, and a promotion there retires and archives (deletes)
    the old prod's file in the copy, while the original stays byte for byte."""
    orig, copy = tmp_path / "orig", tmp_path / "copy"
    trained_state(orig, ("r1", "r2"), prod="r1")  # r1 prod, r2 a candidate
    subprocess.run(["cp", "-a", str(orig), str(copy)], check=True)
    before = tree_digest(orig)
    away = tmp_path / "orig-away"
    os.rename(orig, away)  # nothing of the copy may need the original
    try:
        proc = run_proc(copy, "--speed", "60", "--metrics-port", "0",
                        env={**QUIET, "METHTRADER__LIFECYCLE__KEEP_RETIRED": "0"})
        wait_for(lambda: status_json(copy)["running"], 60, "run on the copy")
        methtrader("promote", "m-r2", "--reason", "e2e", "--state-dir", str(copy))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, stderr_of(proc)[-3000:]
    finally:
        os.rename(away, orig)
    assert tree_digest(orig) == before  # the original untouched

    incidents = db_rows(copy / "methtrader.duckdb", "SELECT kind, message FROM incidents")
    assert not [i for i in incidents if "model" in i[0] or "onnx" in i[1]], incidents
    models = {m["model_id"]: m for m in models_json(copy)}
    assert all(m["onnx_path"].startswith(str(copy) + "/") for m in models.values())
    assert models["m-r2"]["mode"] == "prod" and os.path.exists(models["m-r2"]["onnx_path"])
    old = models["m-r1"]  # retired by the promotion, then archived (keep_retired 0)
    assert old["mode"] == "archived" and not os.path.exists(old["onnx_path"])
    assert (orig / "artifacts" / "r1" / "model.onnx").exists()  # not the original's file


def test_backup_while_running_then_restore_elsewhere(tmp_path, run_proc):
    state, dest, target = tmp_path / "state", tmp_path / "backup", tmp_path / "restored"
    trained_state(state, ("r1", "r2"))
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0", env=QUIET)
    wait_for(lambda: (s := status_json(state))["running"] and s["candles"], 60, "run to be up")
    wait_for(lambda: list((state / "lake" / "manifests").glob("*.json")), 60, "a dataset")
    methtrader("kill", "--reason", "before the backup", "--state-dir", str(state))

    out = json.loads(methtrader("backup", str(dest), "--json", "--state-dir", str(state),
                                timeout=120).stdout)
    assert out["via"] == "run" and out["dest"] == str(dest)
    assert status_json(state)["running"]  # run carried on
    refused = methtrader("restore", str(dest), "--state-dir", str(state), check=False)
    assert refused.returncode == 1 and "stop it" in refused.stderr  # not onto a running run
    assert not list(tmp_path.glob("state.before-restore-*"))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, stderr_of(proc)[-3000:]

    manifest = json.loads((dest / "MANIFEST.json").read_text())
    files = manifest["files"]
    assert {"methtrader.duckdb", "clock.json", "switches.json",
            "artifacts/r1/model.onnx"} <= set(files)
    assert any(f.startswith("lake/manifests/") for f in files)
    assert any(f.startswith("lake/candles/") for f in files)
    assert out["files"] == len(files)
    backed_up = dest / "methtrader.duckdb"
    candles = db_rows(backed_up, "SELECT count(*) FROM candles")[0][0]
    assert candles > 0
    audit = db_rows(backed_up, "SELECT action FROM audit_log")
    assert ("maintenance_mode=on",) in audit  # the journal was flushed before the copy

    restored = json.loads(methtrader("restore", str(dest), "--json", "--state-dir",
                                     str(target)).stdout)
    assert restored["restored"] == str(target) and restored["moved_aside"] is None
    assert restored["files"] == len(files)
    st = status_json(target)
    assert st["running"] is False and st["source"] == "duckdb"
    assert st["candles"] == candles and st["maintenance_mode"] is True
    # not "never started": the restored state dir has run, its heartbeat was left behind
    headline = methtrader("status", "--state-dir", str(target)).stdout.splitlines()[0]
    assert headline.startswith("NOT RUNNING (no heartbeat") and "restored" in headline
    models = models_json(target)
    assert sorted(m["model_id"] for m in models) == sorted(
        r[0] for r in db_rows(backed_up, "SELECT model_id FROM ml_models"))
    for m in models:
        path = target / os.path.relpath(m["onnx_path"], target)
        assert m["onnx_path"].startswith(str(target) + "/") and path.exists()
    for rel, entry in files.items():
        if rel != "switches.json":
            assert tree_digest(target)[rel] == entry["sha256"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o700)
    for p in target.rglob("*"):
        assert p.stat().st_mode & 0o777 == (0o700 if p.is_dir() else 0o600), p

    # a second restore onto it moves it aside, and says so
    again = methtrader("restore", str(dest), "--state-dir", str(target))
    (aside,) = tmp_path.glob("restored.before-restore-*")
    assert str(aside) in again.stdout and (aside / "methtrader.duckdb").exists()


def test_restore_refuses_a_tampered_or_incomplete_backup(tmp_path):
    state, dest = tmp_path / "state", tmp_path / "backup"
    trained_state(state, ("r1",))
    out = json.loads(methtrader("backup", str(dest), "--json", "--state-dir", str(state)).stdout)
    assert out["via"] == "cli"  # run is down: the CLI copied the database itself

    model = dest / "artifacts" / "r1" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"!")
    bad = methtrader("restore", str(dest), "--state-dir", str(tmp_path / "t1"), check=False)
    assert bad.returncode == 2 and "artifacts/r1/model.onnx" in bad.stderr
    assert "sha256" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "t1").exists()  # nothing was put back

    model.unlink()
    gone = methtrader("restore", str(dest), "--state-dir", str(tmp_path / "t1"), check=False)
    assert gone.returncode == 2 and "artifacts/r1/model.onnx (missing)" in gone.stderr

    (dest / "MANIFEST.json").unlink()
    unfinished = methtrader("restore", str(dest), "--state-dir", str(tmp_path / "t1"),
                            check=False)
    assert unfinished.returncode == 2 and "no MANIFEST.json" in unfinished.stderr

    exists = methtrader("backup", str(dest), "--state-dir", str(state), check=False)
    assert exists.returncode == 2 and "holds an unfinished backup" in exists.stderr

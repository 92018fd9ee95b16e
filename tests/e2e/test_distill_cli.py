"""``methtrader distill`` on a small sim state dir, as an operator runs it: a 1h lstm teacher and
a 5m ddqn student registered as candidates, the student naming its teacher (``models --json``),
both trained on the CPU (``training.device = "auto"`` on a machine without CUDA)."""

from __future__ import annotations

import json

import pytest

from models.honesty import random_walk
from tests.e2e.conftest import methtrader
from tests.e2e.test_automl_cli import lake_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

SMALL = ('[training]\nfolds = 2\n[distill]\nepisodes = 3\nepisode_bars = 128\nupdates = 8\n'
         'teacher_epochs = 1\nteacher_lookback = 16\nwindow_days = 30\n')


def test_distill_registers_a_teacher_and_its_student_and_models_links_them(tmp_path):
    state = tmp_path / "state"
    lake_of(state, random_walk(3, days=30, symbols=2))
    conf = tmp_path / "m.toml"
    conf.write_text(SMALL)
    out = methtrader("distill", "--json", "--config", str(conf), "--state-dir", str(state),
                     timeout=360)
    [g] = json.loads(out.stdout)  # JSON alone on stdout: the progress bar is not shown
    teacher, student = g["teacher"], g["student"]
    assert (teacher["kind"], teacher["timeframe"]) == ("lstm", "1h")
    assert (student["kind"], student["timeframe"]) == ("ddqn", "5m")
    assert student["parent_run_id"] == teacher["run_id"]
    assert teacher["device"] == student["device"] == "cpu"
    assert 0.0 <= student["teacher_agreement"] <= 1.0

    models = {m["model_id"]: m for m in json.loads(
        methtrader("models", "--json", "--state-dir", str(state)).stdout)}
    assert set(models) == {teacher["model_id"], student["model_id"]}
    taught, parent = models[student["model_id"]], models[teacher["model_id"]]
    assert taught["parent_run_id"] == parent["run_id"] == teacher["run_id"]
    assert (parent["kind"], parent["timeframe"], parent["mode"]) == ("lstm", "1h", "candidate")
    assert (taught["kind"], taught["timeframe"], taught["mode"]) == ("ddqn", "5m", "candidate")
    assert parent["parent_run_id"] is None
    assert taught["device"] == parent["device"] == "cpu"

    text = methtrader("models", "--state-dir", str(state)).stdout
    assert f"(student of run {teacher['run_id']})" in text

    bad = methtrader("distill", "nosuch", "--state-dir", str(state), check=False)
    assert bad.returncode == 2 and "unknown group" in bad.stderr
    short = tmp_path / "short.toml"
    short.write_text(SMALL.replace("teacher_lookback = 16", "teacher_lookback = 200"))
    refused = methtrader("distill", "--config", str(short), "--state-dir", str(state),
                         check=False, timeout=120)
    assert refused.returncode == 2 and "cannot be distilled" in refused.stderr
    assert "backfill more days" in refused.stderr

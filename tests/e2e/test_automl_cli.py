"""AutoML on a state dir: a group's study on the lake's candles, its winner registered through
the lifecycle as an autogen candidate (``models --json`` shows its tags), the verdict recorded
either way, and ``methtrader automl`` / ``automl --report`` as an operator runs them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from appliance.automl import run_group_study, verdict_path
from appliance.automl_report import latest_report
from appliance.commands import register_winners
from appliance.config import Config, GeneralConfig, TrainingConfig
from appliance.paths import StatePaths
from data.lake import Lake, to_table, write_table_atomic
from models import automl
from models.honesty import random_walk, sim_drift, write_lake
from tests.e2e.conftest import methtrader

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

NOW = 1_780_000_000.0  # 2026-05-28, ISO week 22
SPACE = automl.Space(kinds=("rf",), window_days=(10, 30), horizon=(6, 24), rf_trees=(10, 40))
SETUP = automl.Setup(folds=3, max_train_samples=6000, seed=0)
DRIFT_SYMBOLS = ["SOLUSDT", "DOGEUSDT", "AVAXUSDT", "NEARUSDT", "LINKUSDT"]


def lake_of(state_dir: Path, candles: dict) -> None:
    """5m candles into the lake, and their 1h bars (what grouping reads)."""
    lake = Lake(StatePaths(state_dir).lake)
    write_lake(lake, candles)
    for symbol, rows in candles.items():
        b = rows[:len(rows) // 12 * 12].reshape(-1, 12, 7)
        hourly = np.column_stack([b[:, 0, 0], b[:, 0, 1], b[:, :, 2].max(axis=1),
                                  b[:, :, 3].min(axis=1), b[:, -1, 4], b[:, :, 5].sum(axis=1),
                                  b[:, :, 6].sum(axis=1)])
        write_table_atomic(to_table(hourly), lake.dir("1h", symbol) / "data.parquet")


def config(state_dir: Path) -> Config:
    return replace(Config(), general=replace(GeneralConfig(), state_dir=str(state_dir)),
                   training=replace(TrainingConfig(), folds=3))


def test_a_winner_is_registered_as_an_autogen_candidate_and_a_rerun_changes_nothing(tmp_path):
    state = tmp_path / "state"
    lake_of(state, sim_drift(0, symbols=tuple(DRIFT_SYMBOLS), days=30))
    cfg = config(state)
    lines = []
    summary = run_group_study(cfg, "g1", DRIFT_SYMBOLS, now=NOW, trials=10, space=SPACE,
                              setup=SETUP, progress=lines.append)
    assert [p["trial"] for p in lines] == list(range(1, 11))
    assert summary["passed"] and summary["dsr"] > 0.95, summary["reason"]
    [row] = register_winners(cfg, [summary])
    study = "g1-2026-W22"
    assert row["study"] == study and row["model_id"] == f"m-automl-{study}-t{row['best_trial']}"
    models = json.loads(methtrader("models", "--json", "--state-dir", str(state)).stdout)
    [m] = models
    assert (m["model_id"], m["mode"]) == (row["model_id"], "candidate")
    assert m["tags"] == {"autogen": True, "study": study, "trial": row["best_trial"],
                         "trigger": "automl"}
    recorded = json.loads(verdict_path(state, study).read_text())
    assert recorded["passed"] and recorded["run_id"] == f"automl-{study}-t{row['best_trial']}"

    again = run_group_study(cfg, "g1", DRIFT_SYMBOLS, now=NOW + 3600, trials=10, space=SPACE,
                            setup=SETUP)  # the same week: the study is done, nothing reruns
    assert (again["trials"], again["run_id"]) == (10, summary["run_id"])
    assert register_winners(cfg, [again])[0]["model_id"] == row["model_id"]
    assert len(json.loads(methtrader("models", "--json", "--state-dir",
                                     str(state)).stdout)) == 1

    report = methtrader("automl", "--report", "g1", "--state-dir", str(state)).stdout
    assert f"study {study}: 10 trials" in report and "registered" in report
    assert "parameter importances (fANOVA)" in report and "window_days" in report
    data = latest_report(state, "g1")  # what --json prints
    assert data["importances"] and data["best"][0]["value"] == pytest.approx(
        summary["wf_score"])


def test_the_cli_runs_a_study_per_group_and_exits_0_without_a_winner(tmp_path):
    state = tmp_path / "state"
    lake_of(state, random_walk(5, days=14, symbols=2))
    conf = tmp_path / "m.toml"
    conf.write_text('[training]\nfolds = 2\n[automl]\nkinds = "rf"\nmax_train_samples = 2000\n')
    out = methtrader("automl", "--trials", "3", "--json", "--config", str(conf),
                     "--state-dir", str(state), timeout=240)
    [g] = json.loads(out.stdout)
    assert g["trials"] == 3 and g["model_id"] is None and g["reason"]
    assert set(g) >= {"group", "study", "trials", "pruned", "best_params", "wf_score",
                      "holdout_sharpe", "dsr", "model_id", "reason"}
    progress = [line for line in out.stderr.splitlines() if " trial " in line]
    assert [line.split()[2] for line in progress] == ["1/3", "2/3", "3/3"]
    assert json.loads(verdict_path(state, g["study"]).read_text())["reason"] == g["reason"]
    assert not (StatePaths(state).duckdb).exists() or json.loads(methtrader(
        "models", "--json", "--state-dir", str(state)).stdout) == []
    text = methtrader("automl", "--trials", "3", "--config", str(conf), "--state-dir",
                      str(state), timeout=240).stdout
    assert text.startswith(g["group"]) and "3 trials" in text and "none:" in text
    bad = methtrader("automl", "nosuch", "--state-dir", str(state), check=False)
    assert bad.returncode == 2 and "unknown group" in bad.stderr

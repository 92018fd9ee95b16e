"""Scale-out on Redis: two ``methtrader worker`` processes (real subprocesses, as on two other
machines) consume the appliance's Redis queue and share one AutoML study in Optuna's Redis
journal. Every trial runs exactly once, the winner's receipt comes back through huey's result
store with its artifacts on the shared root, and it is registered once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from optuna.trial import TrialState

from appliance import job_reports, lifecycle
from appliance.automl import search_over, setup_to_json, space_to_json
from appliance.bus import Bus
from appliance.config import AutomlConfig, Config, GeneralConfig, JobsConfig
from appliance.jobs import jobs_for
from appliance.paths import StatePaths
from appliance.store import Store
from models import automl
from models.honesty import sim_drift
from models.registry import list_models, verified_onnx_path
from tests.e2e.conftest import METHTRADER
from tests.e2e.test_automl_cli import lake_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SYMBOLS = ["SOLUSDT", "DOGEUSDT", "AVAXUSDT", "NEARUSDT", "LINKUSDT"]
TRIALS = 6
STUDY = "g1-2026-W22"
NOW = 1_780_000_000.0
SPACE = automl.Space(kinds=("rf",), window_days=(10, 30), horizon=(6, 24), rf_trees=(10, 40))
SETUP = automl.Setup(folds=3, max_train_samples=6000, seed=0)


def start_worker(url: str, root: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([*METHTRADER, "worker", "--redis-url", url, "--artifact-root",
                             str(root), "--workers", "1"], stdout=subprocess.DEVNULL,
                            stderr=open(log, "w"), start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # graceful: huey's consumer and its worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def wait_until(cond, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise AssertionError(f"a worker exited ({dead[0].returncode}) while waiting for "
                                 f"{what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def executed(log: Path, job: str) -> list[str]:
    """Task ids a worker's log says it executed (huey logs each execution)."""
    return re.findall(rf"Executing methtrader\.jobs\.{job}: ([0-9a-f-]+)", log.read_text())


def test_two_workers_share_one_study_each_trial_once_winner_registered_once(tmp_path,
                                                                              redis_url):
    state, root = tmp_path / "state", tmp_path / "shared"  # the appliance's disk, the mount
    state.mkdir()
    lake_of(root, sim_drift(0, symbols=tuple(SYMBOLS), days=30))
    cfg = replace(Config(), general=replace(GeneralConfig(), state_dir=str(state)),
                  jobs=replace(JobsConfig(), backend="redis", redis_url=redis_url,
                               artifact_root=str(root)),
                  automl=replace(AutomlConfig(), storage="redis", trials=TRIALS, kinds="rf"))
    jobs = jobs_for(cfg)
    setup = setup_to_json(SETUP, "redis")
    automl.open_study(state, STUDY, SETUP.seed, redis_url=redis_url)  # as the weekly step does
    trial_results = [jobs.enqueue("automl_trial", STUDY, SYMBOLS, setup, space_to_json(SPACE),
                                  TRIALS, 3600.0) for _ in range(TRIALS)]

    logs = [tmp_path / "worker-a.err", tmp_path / "worker-b.err"]
    workers = [start_worker(redis_url, root, log) for log in logs]
    try:
        wait_until(lambda: search_over(state, STUDY, TRIALS, redis_url), 200, "the search",
                   workers)
        assert [r.get(blocking=True, timeout=30) for r in trial_results] == ["trial run"] * TRIALS
        finish = jobs.enqueue("automl_finish", STUDY, "g1", SYMBOLS, setup, 0.95, NOW)
        verdict = finish.get(blocking=True, timeout=120)
    finally:
        for w in workers:
            stop(w)

    # every trial ran exactly once, spread over both workers
    ran = [executed(log, "automl_trial") for log in logs]
    assert all(ran), [log.read_text()[-2000:] for log in logs]
    assert sorted(ran[0] + ran[1]) == sorted(r.id for r in trial_results)
    study = automl.open_study(state, STUDY, SETUP.seed, fail_stale=False, redis_url=redis_url)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(TRIALS))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == TRIALS  # no repeats
    assert not (state / automl.JOURNAL_FILE).exists()  # the study lived on Redis alone

    # the winner comes back through the result store; the appliance imports and registers it
    assert verdict["passed"], verdict["reason"]
    run_id = f"automl-{STUDY}-t{verdict['best_trial']}"
    assert verdict["run_id"] == run_id
    assert (root / "artifacts" / run_id / "model.onnx").exists()  # written on the mount
    store = Store(StatePaths(state).duckdb)
    bus = Bus(StatePaths(state).bus)
    try:
        for _ in range(2):  # a second pass (a re-delivered receipt) registers nothing
            for receipt, error in job_reports.take(jobs, state, bus):
                assert error is None
                lifecycle.register(store, receipt, now=NOW)
                job_reports.ack(jobs, job_reports.RECEIPT, receipt["run_id"])
            if _ == 0:  # the selection job runs again (re-queued): same receipt, reported again
                again = jobs.enqueue("automl_finish", STUDY, "g1", SYMBOLS, setup, 0.95, NOW)
                w = start_worker(redis_url, root, tmp_path / "worker-c.err")
                try:
                    assert again.get(blocking=True, timeout=120)["run_id"] == run_id
                finally:
                    stop(w)
        models = list_models(store)
        assert [(m["run_id"], m["mode"]) for m in models] == [(run_id, "candidate")]
        assert models[0]["tags"] == {"autogen": True, "study": STUDY,
                                     "trial": verdict["best_trial"], "trigger": "automl"}
        assert models[0]["onnx_path"] == f"artifacts/{run_id}/model.onnx"  # relative
        assert verified_onnx_path(store, models[0]["model_id"]).is_relative_to(state)
        assert store.sql("SELECT count(*) FROM training_runs")[0][0] == 1
    finally:
        store.close()
        bus.close()
    assert job_reports.pending(jobs).receipts == {}


def test_the_job_of_a_killed_worker_is_put_back_and_runs_once(tmp_path, redis_url):
    """A worker SIGKILLed mid-job (or its machine lost): its note in Redis goes stale, the
    appliance puts the job back, another worker runs it, once."""
    from appliance import remote_jobs
    from appliance.jobs import Jobs

    state, root = tmp_path / "state", tmp_path / "shared"
    state.mkdir()
    (root / "lake").mkdir(parents=True)
    jobs = Jobs(state, redis_url=redis_url, root=root)  # the appliance's side
    jobs.enqueue("selftest", 8.0, "slow")
    first = start_worker(redis_url, root, tmp_path / "worker-a.err")
    second = None
    try:
        wait_until(lambda: remote_jobs.notes(jobs), 60, "the job to start", [first])
        [note] = remote_jobs.notes(jobs).values()
        assert note["name"] == "selftest" and note["args"] == [8.0, "slow"]
        assert jobs.requeue_remote(stale_s=30) == ([], [])  # its beat is fresh: alive
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert not (root / "jobs" / "slow").exists()  # cut short
        wait_until(lambda: jobs.requeue_remote(stale_s=2)[0] == ["selftest"], 30,
                   "its note to go stale")
        assert remote_jobs.notes(jobs) == {} and jobs.requeue_remote(stale_s=2) == ([], [])
        second = start_worker(redis_url, root, tmp_path / "worker-b.err")
        wait_until(lambda: (root / "jobs" / "slow").exists(), 90, "the job again", [second])
        wait_until(lambda: remote_jobs.notes(jobs) == {}, 30, "its note to go", [second])
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert len((root / "jobs" / "slow").read_text().split()) == 1  # exactly once
    assert len(executed(tmp_path / "worker-b.err", "selftest")) == 1
    jobs.close()


def test_a_trial_whose_worker_died_is_marked_failed_and_run_again(tmp_path, redis_url):
    """The trial a SIGKILLed worker was running would stay RUNNING in the study for good: when
    the appliance puts its job back it marks that trial failed, and the job runs a new one."""
    from appliance import remote_jobs
    from appliance.jobs import Jobs

    state, root = tmp_path / "state", tmp_path / "shared"
    state.mkdir()
    lake_of(root, sim_drift(0, symbols=tuple(SYMBOLS), days=30))
    jobs = Jobs(state, redis_url=redis_url, root=root)
    setup = setup_to_json(SETUP, "redis")
    automl.open_study(state, STUDY, SETUP.seed, redis_url=redis_url)
    jobs.enqueue("automl_trial", STUDY, SYMBOLS, setup, space_to_json(SPACE), 1, 3600.0)

    def trials(*states):
        s = automl.open_study(state, STUDY, SETUP.seed, fail_stale=False, redis_url=redis_url)
        return s.get_trials(deepcopy=False, states=states or None)

    first = start_worker(redis_url, root, tmp_path / "worker-a.err")
    second = None
    try:
        wait_until(lambda: trials(TrialState.RUNNING), 90, "the trial to start", [first])
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        [lost] = trials(TrialState.RUNNING)
        wait_until(lambda: jobs.requeue_remote(stale_s=2)[0] == ["automl_trial"], 30,
                   "its note to go stale")
        assert [t.number for t in trials(TrialState.FAIL)] == [lost.number]
        second = start_worker(redis_url, root, tmp_path / "worker-b.err")
        wait_until(lambda: search_over(state, STUDY, 2, redis_url), 120, "the trial again",
                   [second])
        wait_until(lambda: remote_jobs.notes(jobs) == {}, 30, "the job's end", [second])
    finally:
        stop(first)
        if second is not None:
            stop(second)
    done = trials()
    assert [t.state for t in done][0] == TrialState.FAIL and len(done) == 2
    assert done[1].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert done[0].user_attrs["job"] != done[1].user_attrs["job"]  # a new job ran it
    jobs.close()

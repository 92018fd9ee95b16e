"""The job queue with a real huey consumer process: retries with backoff, one registration."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import trio

from appliance.backfill import backfill_symbol
from appliance.clock import VirtualClock
from appliance.config import SimConfig
from appliance.exchange.sim import SimExchange
from appliance.jobs import Jobs
from appliance.schedule import utc
from appliance import lifecycle
from appliance.services.training import unregistered_runs
from appliance.store import Store
from data.lake import Lake

CONSUMER = """
import sys
from pathlib import Path
from appliance import jobs as J

state = Path(sys.argv[1])
attempts = state / "attempts"

def flaky_train(state_dir, *args, **kwargs):
    n = int(attempts.read_text()) + 1 if attempts.exists() else 1
    attempts.write_text(str(n))
    if n <= 2:
        raise RuntimeError(f"attempt {n} fails on purpose")
    return J._train(state_dir, *args, **kwargs)

jobs = J.Jobs(state, defaults=False)
jobs.register("train", flaky_train, retry_delay=0.2)
J.run_consumer(jobs, workers=1)
"""


@pytest.mark.timeout(180)
def test_a_job_failing_twice_is_retried_and_registered_once(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    lake = Lake(state / "lake")
    end = int(utc("2026-11-28 00:00") * 1000)
    ex = SimExchange(VirtualClock(end / 1000, 1.0), SimConfig(), inline=True)
    for s in ("BTCUSDT", "ETHUSDT"):
        trio.run(lambda s=s: backfill_symbol(ex, lake, s, end - 8 * 86_400_000, end,
                                             inline=True))
        lake.resample(s)
    jobs = Jobs(state, defaults=False)  # the producer's task carries the retry schedule
    jobs.register("train", lambda *a, **k: None, retry_delay=0.2)
    consumer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CONSUMER), str(state)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        jobs.enqueue("train", "run-flaky", "t1-a", ["BTCUSDT", "ETHUSDT"], "rf", {}, {})
        receipt = state / "artifacts" / "run-flaky" / "result.json"
        deadline = time.monotonic() + 150
        while not receipt.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert receipt.exists(), "the job never succeeded"
        assert (state / "attempts").read_text() == "3"  # two failures, then success
    finally:
        consumer.send_signal(2)
        consumer.wait(timeout=30)
        jobs.close()
    store = Store(state / "methtrader.duckdb")
    (receipt,) = unregistered_runs(store, state)
    assert receipt["run_id"] == "run-flaky"
    assert lifecycle.register(store, receipt, now=1.0)
    assert unregistered_runs(store, state) == []  # seen again: registered once
    assert lifecycle.register(store, receipt, now=2.0) == []
    assert store.sql("SELECT count(*) FROM training_runs")[0][0] == 1
    store.close()


def test_a_job_whose_worker_died_is_requeued_first_and_given_up_after_three_deaths(tmp_path):
    import os

    from appliance.consumer_process import process_alive
    from appliance.jobs import RUNNING_PREFIX

    calls: list[str] = []
    jobs = Jobs(tmp_path, defaults=False)
    try:
        jobs.register("work", lambda state_dir, tag: calls.append(tag))
        jobs.enqueue("work", "other")  # queued before the job whose worker dies
        dead = 2**22 + 17  # above pid_max's default: no such process
        assert not process_alive(dead) and process_alive(os.getpid())
        note = {"name": "work", "args": ["killed"], "kwargs": {}, "started": 0.0, "pid": dead}
        jobs.bus.cache.set(f"{RUNNING_PREFIX}a", {**note, "pid": os.getpid()})  # still working
        for attempt in range(4):
            jobs.bus.cache.set(f"{RUNNING_PREFIX}{attempt}", note)
            requeued, dropped = jobs.requeue_dead()
            assert (requeued, dropped) == ((["work"], []) if attempt < 3 else ([], ["work"]))
        assert [j["pid"] for j in jobs.running()] == [os.getpid()]  # the live one is kept
        first = jobs.huey.dequeue()
        assert first.args == ("killed",)  # ahead of the job queued before it
        assert jobs.pending() == 3  # two more re-queues of it, and "other"
    finally:
        jobs.close()


def test_a_job_interrupted_by_a_stop_is_requeued_ahead_of_the_queue_at_the_next_start(tmp_path):
    from appliance.jobs import RUNNING_PREFIX

    jobs = Jobs(tmp_path, defaults=False)
    try:
        jobs.register("work", lambda state_dir, tag: None)
        jobs.enqueue("work", "queued earlier")
        note = {"name": "work", "args": ["interrupted"], "kwargs": {}, "started": 0.0, "pid": 1}
        jobs.bus.cache.set(f"{RUNNING_PREFIX}x", note)  # left by the consumer a stop ended
        assert jobs.requeue_interrupted() == 1
        assert jobs.running() == [] and jobs.pending() == 2
        assert jobs.huey.dequeue().args == ("interrupted",)  # it was being worked on: first
    finally:
        jobs.close()


ALWAYS_FAILS = """
import sys
from pathlib import Path
from appliance import jobs as J

state = Path(sys.argv[1])

def broken(state_dir, *args, **kwargs):
    with open(state / "attempts", "a") as f:
        f.write("x")
    raise RuntimeError("the data folder is gone")

jobs = J.Jobs(state, defaults=False)
jobs.register("train", broken, retry_delay=0.1)
J.run_consumer(jobs, workers=1)
"""


@pytest.mark.timeout(120)
def test_a_job_whose_last_attempt_fails_is_one_job_failed_event(tmp_path):
    from appliance.bus import Bus
    from appliance.contracts import Event

    state = tmp_path / "state"
    state.mkdir()
    jobs = Jobs(state, defaults=False)
    jobs.register("train", lambda *a, **k: None, retry_delay=0.1)
    consumer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(ALWAYS_FAILS),
                                 str(state)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        jobs.enqueue("train", "run-broken", "t1-a", ["BTCUSDT"], "rf", {}, {})
        attempts = state / "attempts"
        deadline = time.monotonic() + 90
        with Bus(state / "bus") as bus:
            while time.monotonic() < deadline and not bus.events_since(
                    0, kinds=[Event.JOB_FAILED]):
                time.sleep(0.1)
            time.sleep(1.0)  # nothing more comes after the last attempt
            failed = bus.events_since(0, kinds=[Event.JOB_FAILED])
        assert attempts.read_text() == "xxx"  # three attempts, then it gave up
        assert len(failed) == 1
        data = failed[0]["data"]
        assert data["job"] == "train" and data["attempts"] == 3
        assert data["error"] == "RuntimeError: the data folder is gone"
        assert data["args"][0] == "run-broken"
    finally:
        consumer.send_signal(2)
        consumer.wait(timeout=30)
        jobs.close()

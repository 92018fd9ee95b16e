"""``methtrader run`` on a Redis queue (``jobs.backend = "redis"``), with a ``methtrader worker``
whose artifact root is the state dir (as an NFS mount of it would be): both consume the one
queue, every job runs exactly once; then Redis goes away and the appliance degrades (an
incident), it does not crash, and it still stops cleanly."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest

from appliance.jobs import Jobs
from appliance.paths import StatePaths
from appliance.store import Store
from tests.e2e.conftest import stderr_of
from tests.e2e.test_run import wait_for
from tests.e2e.test_workers import executed, start_worker, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

QUIET = {"METHTRADER__DATASETS__DAYS": "1", "METHTRADER__TRAINING__KINDS": "rf"}
JOBS = 6


def selftests_run(err: str) -> list[str]:
    """Task ids of selftest jobs `run`'s consumer executed (its stderr is JSON lines)."""
    out = []
    for line in err.splitlines():
        try:
            msg = str(json.loads(line).get("msg", ""))
        except ValueError:
            continue
        found = re.match(r"Executing methtrader\.jobs\.selftest: ([0-9a-f-]{36})", msg)
        if found:
            out.append(found.group(1))
    return out


def test_run_shares_its_redis_queue_with_a_worker_and_outlives_redis(tmp_path, redis_server,
                                                                      run_proc):
    state = tmp_path / "state"
    env = {**QUIET, "METHTRADER__JOBS__BACKEND": "redis",
           "METHTRADER__JOBS__REDIS_URL": redis_server.url}
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0", env=env)
    wait_for(lambda: (state / "lake").is_dir(), 60, "the lake")
    log = tmp_path / "worker.err"
    worker = start_worker(redis_server.url, state, log)
    jobs = Jobs(state, redis_url=redis_server.url)  # a client of the queue, as `run` is
    try:
        wait_for(lambda: "worker consuming" in log.read_text(), 60, "the worker")
        wait_for(lambda: "Huey consumer started" in stderr_of(proc), 60, "run's consumer")
        handles = [jobs.enqueue("selftest", 2.0, f"m{i}") for i in range(JOBS)]
        markers = [StatePaths(state).jobs / f"m{i}" for i in range(JOBS)]
        wait_for(lambda: all(m.exists() for m in markers), 90, "the selftest jobs")
        assert all(len(m.read_text().split()) == 1 for m in markers)  # each exactly once
        by_worker, by_run = executed(log, "selftest"), selftests_run(stderr_of(proc))
        assert sorted(by_worker + by_run) == sorted(h.id for h in handles)
        assert by_worker and by_run, (by_worker, by_run)  # one queue, two consumers

        redis_server.stop()  # Redis goes away under both
        wait_for(lambda: "job queue unreachable" in stderr_of(proc), 30, "run to notice")
        time.sleep(3.0)
        assert proc.poll() is None and worker.poll() is None  # degraded, not crashed
    finally:
        stop(worker)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0, stderr_of(proc)[-3000:]
    store = Store(StatePaths(state).duckdb, read_only=True)
    try:
        incidents = [i for i in store.incidents(200) if i["kind"] == "job_queue"]
    finally:
        store.close()
    assert [i["service"] for i in incidents if i["service"] == "training"] == ["training"]
    assert "unreachable" in incidents[0]["message"]

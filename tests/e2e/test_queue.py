"""The job queue under ``run``: a job interrupted by a stop is re-queued, never lost."""

from __future__ import annotations

import signal
import time

import pytest

from appliance.jobs import Jobs
from tests.e2e.test_run import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_job_interrupted_by_sigterm_is_requeued_and_runs_exactly_once(tmp_path, run_proc):
    state = tmp_path / "state"
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0")
    wait_for(lambda: (state / "queue.db").exists(), 20, "the queue")
    jobs = Jobs(state)
    try:
        jobs.enqueue("selftest", 5, "once")
        wait_for(lambda: jobs.running(), 20, "the job to start")
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5.0  # stop stays bounded with a job running
        assert not (state / "jobs" / "once").exists()  # it was cut short...
        assert [j["name"] for j in jobs.running()] == ["selftest"]  # ...and noted

        again = run_proc(state, "--for", "10s", "--speed", "60", "--metrics-port", "0")
        wait_for(lambda: (state / "jobs" / "once").exists(), 30, "the re-queued job")
        assert again.wait(timeout=30) == 0
        assert len((state / "jobs" / "once").read_text().split()) == 1  # exactly once
        assert not any(j["name"] == "selftest" for j in jobs.running())
        assert not any("selftest" in t.name for t in jobs.huey.pending())
    finally:
        jobs.close()

"""No process outlives ``run`` (finding 9): a SIGKILL of ``run`` or of the job consumer leaves no
worker behind to finish a job that the next consumer runs again."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from appliance.jobs import Jobs
from tests.e2e.test_run import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

QUIET = {"METHTRADER__DATASETS__DAYS": "1", "METHTRADER__TRAINING__KINDS": "rf"}


def processes_naming(state: Path) -> list[str]:
    """``pid args`` of every live process whose command line names the state dir."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,stat,args"], capture_output=True, text=True,
                         check=True).stdout.splitlines()[1:]
    rows = [line.split(None, 2) for line in out]
    return [" ".join(r) for r in rows if len(r) == 3 and not r[1].startswith("Z")
            and str(state) in r[2]]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_sigkill_of_run_leaves_no_process_behind(tmp_path, run_proc):
    state = tmp_path / "state"
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0", env=QUIET)
    wait_for(lambda: (state / "queue.db").exists(), 30, "the queue")
    jobs = Jobs(state)
    try:
        jobs.enqueue("selftest", 60, "long")
        worker = wait_for(lambda: next((j["pid"] for j in jobs.running()
                                        if j["name"] == "selftest"), None), 30,
                          "the job to start")
        assert worker != proc.pid and len(processes_naming(state)) >= 2  # run, consumer, worker
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not processes_naming(state), 10,
                 "every process of the state dir to be gone")
        assert not alive(worker)
        assert not (state / "jobs" / "long").exists()
    finally:
        jobs.close()


def test_sigkill_of_the_consumer_kills_its_worker_and_the_job_runs_exactly_once(
        tmp_path, run_proc):
    state = tmp_path / "state"
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0", env=QUIET)
    wait_for(lambda: (state / "queue.db").exists(), 30, "the queue")
    jobs = Jobs(state)
    try:
        jobs.enqueue("selftest", 6, "once")
        worker = wait_for(lambda: next((j["pid"] for j in jobs.running()
                                        if j["name"] == "selftest"), None), 30,
                          "the job to start")
        consumer = parent_of(worker)
        assert consumer != proc.pid and parent_of(consumer) == proc.pid
        os.kill(consumer, signal.SIGKILL)
        wait_for(lambda: not alive(worker), 5, "the worker to die with its consumer")

        marker = state / "jobs" / "once"
        wait_for(marker.exists, 60, "the re-queued job to complete")
        # the killed worker would have written by now (it started before the re-queued run)
        time.sleep(1.0)
        pids = marker.read_text().split()
        assert len(pids) == 1 and int(pids[0]) != worker  # exactly once, by a new worker
        assert proc.poll() is None  # run itself carried on and restarted the consumer
        wait_for(lambda: not any(j["name"] == "selftest" for j in jobs.running()), 10,
                 "the job's journal note to clear")
    finally:
        jobs.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    wait_for(lambda: not processes_naming(state), 10, "every process to be gone after stop")

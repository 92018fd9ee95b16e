"""Heavy jobs run in a short-lived process of their own (appliance.job_process): with a real
huey consumer, two jobs run in two different processes, neither the worker, and both are gone
when their jobs are done, so the memory a job used does not stay resident in the worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.job_process import JobProcessError, run_in_child
from appliance.jobs import Jobs, process_alive
from benchmarks._proctree import read_proc, tree_usage

CONSUMER = """
import sys
from pathlib import Path
from appliance import jobs as J
from appliance.job_process import in_child, set_nice

set_nice(7)  # as `--job-nice 7` (training.job_nice) does
jobs = J.Jobs(Path(sys.argv[1]), defaults=False)
jobs.register("selftest", in_child("appliance.jobs:selftest"))
J.run_consumer(jobs, workers=1)
"""


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _job_processes(root: int) -> list[int]:
    """The pids two levels below ``root`` (the consumer → a worker → a job process)."""
    rows = read_proc(with_pss=False)
    workers = {p for p, r in rows.items() if r.ppid == root}
    return [p for p, r in rows.items() if r.ppid in workers]


@pytest.mark.timeout(120)
def test_each_job_runs_in_its_own_process_that_exits_after_the_job(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    jobs = Jobs(state, defaults=False)
    jobs.register("selftest", lambda *a, **k: None)
    consumer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(CONSUMER), str(state)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = state / "jobs" / "ran"
    try:
        jobs.enqueue("selftest", 1.5, "ran")
        # while the job sleeps: the job process is in the consumer's tree, below a worker
        assert _wait_for(lambda: _job_processes(consumer.pid), 60)
        tree_during = set(tree_usage(read_proc(), consumer.pid).pids)
        (job_pid,) = _job_processes(consumer.pid)
        # forked from its worker: its command line names the state dir as the consumer's
        # does (`ps` finds every process of one appliance)
        assert str(state).encode() in Path(f"/proc/{job_pid}/cmdline").read_bytes()
        # below `run` in priority: the job process is niced, its worker is not
        assert _nice(job_pid) == 7 and _nice(read_proc(with_pss=False)[job_pid].ppid) == 0
        assert _wait_for(lambda: marker.exists() and len(marker.read_text().split()) == 1, 60)
        jobs.enqueue("selftest", 0.2, "ran")
        assert _wait_for(lambda: len(marker.read_text().split()) == 2, 60)
        first, second = (int(p) for p in marker.read_text().split())
        assert first != second  # a fresh process per job
        assert first == job_pid  # the job ran in the process below the worker
        # both exited with their jobs: what they held went back to the system
        assert _wait_for(lambda: not process_alive(first) and not process_alive(second), 10)
        after = set(tree_usage(read_proc(), consumer.pid).pids)
        assert consumer.pid in after and not {first, second} & after
        assert after - {first} <= tree_during  # the workers stay; no job process lingers
    finally:
        consumer.send_signal(2)
        consumer.wait(timeout=30)
        jobs.close()


def test_a_result_comes_back_and_an_error_is_raised_with_the_childs_message(tmp_path):
    assert run_in_child("os.path:join", "a", "b") == "a/b"
    with pytest.raises(JobProcessError, match=r"json:loads: JSONDecodeError: Expecting value"):
        run_in_child("json:loads", "not json")
    with pytest.raises(JobProcessError, match="killed by signal 9 before it finished"):
        run_in_child("signal:raise_signal", 9)  # dies without a word, as by the OOM killer
    with pytest.raises(JobProcessError, match="exited with code 3 before it finished"):
        run_in_child("os:_exit", 3)

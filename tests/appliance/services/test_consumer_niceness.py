"""Training yields the cores to `run`: the ``huey`` service starts the real job consumer at a
higher OS niceness (``jobs.niceness``), and its worker processes inherit it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from appliance.jobs import Jobs
from appliance.services import consumer


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_the_job_consumer_and_its_workers_run_at_a_lower_priority(make_ctx, state_dir):
    ctx = make_ctx()
    jobs = Jobs(state_dir)
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    niceness = 7
    seen: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer.run, ctx, jobs, 1, 2.0, niceness)
        with trio.fail_after(60):
            while "worker" not in seen:
                await trio.sleep(0.2)
                for pid in children(os.getpid()):
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:
                        continue
                    if b"appliance.jobs" in cmd:
                        # the consumer sets its niceness first thing: wait for it
                        if os.getpriority(os.PRIO_PROCESS, pid) != mine:
                            seen["consumer"] = os.getpriority(os.PRIO_PROCESS, pid)
                            workers = children(pid)
                            if workers:
                                seen["worker"] = os.getpriority(os.PRIO_PROCESS, workers[0])
        nursery.cancel_scope.cancel()
    jobs.close()
    assert seen["consumer"] == min(19, mine + niceness) > mine
    assert seen["worker"] == seen["consumer"]

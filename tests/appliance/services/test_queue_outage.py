"""Redis goes away (``jobs.backend = "redis"``): jobs degrade with an incident, nothing
crashes. The training service records one incident per outage and keeps its loop going; the
job consumer keeps retrying with one short warning instead of a traceback per attempt."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest
import trio

from appliance.jobs import QUEUE_URL_ENV, Jobs
from appliance.lifecycle import Lifecycle
from appliance.notify import Notifier
from appliance.services import training
from tests.appliance.services.test_training import ROOMY, SATURDAY_0130, SYMBOLS, fill_lake
from tests.conftest import free_port

pytest.importorskip("redis", reason="the redis extra is not installed (pip install -e '.[redis]')")


def dead_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


@pytest.mark.trio
async def test_training_records_one_incident_per_outage_and_keeps_running(make_ctx, state_dir,
                                                                          autojump_clock,
                                                                          caplog):
    ctx = make_ctx(speed=60, start=SATURDAY_0130)
    ctx.bus.set_tradable_pairs(SYMBOLS)
    await fill_lake(ctx, days=5)
    life = Lifecycle(ctx.store, ctx.bus, Notifier(ctx.bus, None), state_dir)
    jobs = Jobs(state_dir, redis_url=dead_url())
    caplog.set_level(logging.DEBUG, logger="methtrader.training")
    try:
        with trio.move_on_after(3 * ctx.cfg.training.check_interval_s / 60 + 1):
            await training.run(ctx, jobs, life, disk_usage=ROOMY)  # no exception escapes
        said = [r.levelname for r in caplog.records if "job queue" in r.getMessage()]
        assert said[0] == "WARNING" and said[1:] and set(said[1:]) == {"DEBUG"}  # pass on pass
        incidents = [i for i in await ctx.store.call("incidents")
                     if i["kind"] == "job_queue"]
        assert len(incidents) == 1, incidents  # several passes, one outage
        assert incidents[0]["service"] == training.NAME
        assert "unreachable" in incidents[0]["message"] and "jobs.redis_url" in \
            incidents[0]["message"]
        events = [e for e in ctx.bus.events_since(0)
                  if e["kind"] == "incident" and e["data"].get("kind") == "job_queue"]
        assert len(events) == 1
    finally:
        jobs.close()


def test_the_consumer_outlives_a_lost_redis_and_says_so_briefly(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "appliance.jobs", "--state-dir", str(state),
                             "--log-format", "text"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, QUEUE_URL_ENV: dead_url()})
    try:
        time.sleep(4.0)  # dozens of failed reads by huey's worker and scheduler
        assert proc.poll() is None  # still running, still retrying
    finally:
        proc.send_signal(2)  # SIGINT: huey's graceful stop
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-2000:]
    warnings = [line for line in err.splitlines() if "job queue unreachable" in line]
    assert 1 <= len(warnings) <= 2, err[-2000:]  # one per process (worker, scheduler)
    assert "Traceback" not in err

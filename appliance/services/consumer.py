"""The ``huey`` service: keeps the job consumer process running.

Before each start it re-queues jobs that a previous consumer left unfinished (see
:mod:`appliance.jobs`). On stop it asks the consumer to finish gracefully (SIGINT), and after
``grace_s`` interrupts it (SIGTERM, then SIGKILL): a job cut short stays in the journal and is
re-queued next time, so nothing is lost and shutdown stays within its bound. If the consumer
exits by itself, this service raises and the supervisor restarts it with backoff. While it
runs, a job whose worker process died under it (the consumer only replaces the worker) is put
back on the queue every ``WATCH_S`` (:meth:`Jobs.requeue_dead`).

With ``jobs.backend = "redis"`` the consumer shares the Redis queue with ``methtrader worker``
processes elsewhere; while Redis is away it keeps retrying (one warning a minute, no crash) and
the training service records the outage as an incident.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import sys
from pathlib import Path

import trio

from appliance import remote_jobs
from appliance.context import ServiceContext
from appliance.contracts import Event
from appliance.jobs import QUEUE_URL_ENV, Jobs, JobsUnavailable
from appliance.logs import service_logger, stderr_format

NAME = "huey"
WATCH_S = 1.0


def _signal_group(proc: trio.Process, sig: signal.Signals) -> None:
    """Signal the consumer and its worker processes (they share its process group)."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, sig)


async def stop_consumer(proc: trio.Process, grace_s: float) -> None:
    log = service_logger(NAME)
    _signal_group(proc, signal.SIGINT)
    with trio.move_on_after(grace_s):
        await proc.wait()
        return
    log.warning("consumer still busy; interrupting its jobs (they will be re-queued)")
    _signal_group(proc, signal.SIGKILL)
    await proc.wait()


async def run(ctx: ServiceContext, jobs: Jobs, workers: int, grace_s: float,
              niceness: int = 0) -> None:
    log = service_logger(NAME)
    try:
        requeued = await trio.to_thread.run_sync(jobs.requeue_interrupted)
    except JobsUnavailable as exc:  # Redis is away: the notes stay for the next start
        log.warning("could not re-queue interrupted jobs", reason=str(exc))
        requeued = 0
    if requeued:
        log.info("re-queued interrupted jobs", jobs=requeued)
        ctx.bus.publish(Event.JOBS_REQUEUED, {"count": requeued}, service=NAME)
    cmd = [sys.executable, "-m", "appliance.jobs", "--state-dir", str(Path(jobs.state_dir)),
           "--workers", str(workers), "--parent-pid", str(os.getpid()),
           "--log-format", stderr_format(), "--artifact-root", str(Path(jobs.root)),
           "--job-nice", str(ctx.cfg.training.job_nice), "--niceness", str(niceness)]
    env = {**os.environ, QUEUE_URL_ENV: jobs.redis_url} if jobs.redis_url else None
    ctx.beat(NAME)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_workers, ctx, jobs)
        # its own session: a terminal's Ctrl-C reaches only `run`, which stops the consumer
        proc = await trio.run_process(cmd, check=False, start_new_session=True, env=env,
                                      deliver_cancel=functools.partial(stop_consumer,
                                                                       grace_s=grace_s))
        nursery.cancel_scope.cancel()
    raise RuntimeError(f"job consumer exited with code {proc.returncode}")


async def watch_workers(ctx: ServiceContext, jobs: Jobs) -> None:
    """Re-queue the jobs of dead workers until cancelled (never raises: the consumer matters
    more than this watch)."""
    log = service_logger(NAME)
    outage = False  # Redis was away at the last look
    back_at = -math.inf  # (trio time) when it came back
    while True:
        await trio.sleep(WATCH_S)
        ctx.beat(NAME)
        try:
            requeued, dropped = await trio.to_thread.run_sync(jobs.requeue_dead)
            # methtrader worker processes elsewhere; not until their beats could be renewed
            # after an outage (every note went stale while Redis was away)
            if jobs.redis_url and trio.current_time() - back_at > remote_jobs.STALE_S:
                more, lost = await trio.to_thread.run_sync(jobs.requeue_remote)
                requeued, dropped = requeued + more, dropped + lost
        except JobsUnavailable as exc:  # the training service records the outage
            if not outage:
                log.warning("could not check the running jobs", reason=str(exc))
            outage = True
            continue
        except Exception as exc:
            log.warning("could not check the running jobs", reason=str(exc))
            continue
        if outage:
            outage, back_at = False, trio.current_time()
        if requeued:
            log.warning("a worker died mid-job: re-queued its job", jobs=requeued)
            ctx.bus.publish(Event.JOBS_REQUEUED, {"count": len(requeued), "jobs": requeued,
                                                  "reason": "worker died"}, service=NAME)
        for name in dropped:
            message = (f"job {name} dropped: its worker process died under it more than "
                       "3 times")  # (here or, with Redis, on a methtrader worker elsewhere)
            log.error(message)
            await ctx.store.call("record_incident", NAME, "job_lost", message, None)

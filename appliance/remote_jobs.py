"""Jobs running on other machines: a note in Redis per running job, kept fresh by a heartbeat,
so that the appliance puts back the job of a worker that died (SIGKILL, the OOM killer, a lost
machine) as it does for its own consumer's workers (:meth:`appliance.jobs.Jobs.requeue_dead`).

A ``methtrader worker`` has no bus and no pid the appliance could check, so while a job runs it
keeps ``running:<task id>`` in huey's result store with the job's name and arguments and a beat
in Redis's own clock (``TIME``: machines' clocks need not agree), renewed every ``BEAT_S``. The
appliance's ``huey`` service looks every second: a note whose beat is older than ``STALE_S`` is
taken (one deleter wins) and its job queued again, ahead of the rest, at most ``RETRIES + 1``
times per job. A worker cut off from Redis for longer than ``STALE_S`` while it keeps working
gets its job run a second time elsewhere: jobs are idempotent (training by run id; an AutoML
trial job runs nothing once the study's budget is spent), so that costs time, not correctness.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from appliance.jobs import Jobs

RUNNING = "running"
BEAT_S = 10.0
STALE_S = 60.0


def redis_now(jobs: "Jobs") -> float:
    """Redis's clock (seconds), the one clock every machine of the queue shares."""
    seconds, micros = jobs.huey.storage.conn.time()
    return float(seconds) + micros / 1e6


@contextlib.contextmanager
def running(jobs: "Jobs", task_id: str, name: str, args: tuple[Any, ...],
            kwargs: dict[str, Any], beat_s: float = BEAT_S) -> Iterator[None]:
    """Keep a fresh note of this job in Redis while the block runs (best effort: a job never
    fails because its note could not be written)."""
    from appliance.job_reports import queue_errors

    key = f"{RUNNING}:{task_id}"
    note = {"name": name, "args": list(args), "kwargs": kwargs, "host": socket.gethostname(),
            "pid": os.getpid()}
    lost = queue_errors(jobs)
    lock, stop = threading.Lock(), threading.Event()

    def put() -> None:
        with contextlib.suppress(*lost):
            jobs.huey.put(key, {**note, "beat": redis_now(jobs)})

    def beat() -> None:
        while not stop.wait(beat_s):
            with lock:  # never after the note was removed
                if not stop.is_set():
                    put()

    put()
    thread = threading.Thread(target=beat, name=f"beat-{task_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        with lock, contextlib.suppress(*lost):
            jobs.huey.delete(key)


def notes(jobs: "Jobs") -> dict[str, dict[str, Any]]:
    """The running-job notes in the store: task id → note."""
    out = {}
    with jobs.reachable("read the running jobs"):
        for key in jobs.huey.storage.result_items():
            if key.startswith(f"{RUNNING}:"):
                note = jobs.huey.get(key, peek=True)
                if isinstance(note, dict):
                    out[key.split(":", 1)[1]] = note
    return out


def take_stale(jobs: "Jobs", stale_s: float = STALE_S) -> list[dict[str, Any]]:
    """Remove and return the notes whose beat is older than ``stale_s`` (by Redis's clock);
    a note another appliance process took first is not returned."""
    if not jobs.redis_url:
        return []
    with jobs.reachable("check the running jobs"):
        now = redis_now(jobs)
        stale = []
        for task_id, note in notes(jobs).items():
            if now - float(note.get("beat", now)) > stale_s and \
                    jobs.huey.storage.delete_data(f"{RUNNING}:{task_id}"):
                stale.append({**note, "task_id": task_id})
        return stale

"""Worker kill: the huey worker process SIGKILLed in the middle of the first training job.

huey had already taken the job off its queue, and its consumer only replaces the dead worker;
the ``huey`` service sees the job's journal note name a dead pid and queues it again
(:meth:`appliance.jobs.Jobs.requeue_dead`).

Hypothesis: the job runs again to the end, its model is registered exactly once (one
``training_runs`` row, one ``ml_models`` row and one ``model_registered`` event for its run id),
no service fails, and the appliance is healthy with new candles.
MTTR: the kill → the job's model registered.
"""

from __future__ import annotations

import os
import random
import signal
import time

import duckdb

from appliance.contracts import Event
from appliance.consumer_process import process_alive
from appliance.jobs import Jobs
from appliance.paths import StatePaths
from chaos.experiment import Experiment, Result, Verdict
from chaos.harness import Harness, wait_until

NAME = "worker-kill"
#: enough history for a first model (two days are too few for the walk-forward folds)
ENV = {"METHTRADER__DATASETS__DAYS": "6"}


def run(h: Harness, rng: random.Random, *, recover_within_s: float = 90.0) -> Result:
    v = Verdict(NAME)
    state = h.state_dir(NAME)
    app = h.start_run(state, env=ENV)
    if not v.check(wait_until(StatePaths(state).queue.exists, recover_within_s) is not None,
                   "run never opened its job queue"):
        return v.result(None)
    jobs = Jobs(state, defaults=False)
    try:
        note = wait_until(lambda: next((j for j in jobs.running() if j and j["name"] == "train"),
                                       None), recover_within_s)
        if not v.check(note is not None, "no training job started"):
            return v.result(None)
        run_id, worker = str(note["args"][0]), int(note["pid"])
        time.sleep(rng.uniform(0.5, 3.0))  # mid-job: a first rf model takes ~10 s here
        v.check(any(j and j.get("pid") == worker for j in jobs.running()),
                "the job ended before the kill")
        os.kill(worker, signal.SIGKILL)
        killed_at = time.time()
    finally:
        jobs.close()
    v.check(wait_until(lambda: not process_alive(worker), 5) is not None,
            "the worker survived SIGKILL")

    def registered() -> list[dict]:
        bus = app.bus()
        return [e for e in (bus.events_since(0, kinds=[Event.MODEL_REGISTERED]) if bus else [])
                if e["data"].get("run_id") == run_id]

    done = wait_until(registered, recover_within_s)
    mttr = done[0]["ts"] - killed_at if done else None
    requeued = [e["data"] for e in app.bus().events_since(0, kinds=[Event.JOBS_REQUEUED])]
    v.check(any("train" in (d.get("jobs") or []) for d in requeued),
            "the killed job was not re-queued")
    v.check(app.wait_recovered(killed_at, 30) is not None,
            "not healthy with a new candle after the kill")
    failed = [n for n, st in app.services().items() if st.get("state") == "failed"]
    v.check(not failed, f"services marked failed: {failed}")
    events = len(registered())
    v.check(app.stop() == 0, "the appliance did not stop cleanly")
    con = duckdb.connect(str(StatePaths(state).duckdb), read_only=True)
    try:
        runs, models = (int(con.execute(f"SELECT count(*) FROM {t} WHERE run_id = ?",
                                        [run_id]).fetchone()[0])
                        for t in ("training_runs", "ml_models"))
    finally:
        con.close()
    v.check(runs == 1 and models == 1 and events == 1,
            f"run {run_id} registered {models} models, {runs} runs, {events} events (want 1)")
    v.lost = abs(models - 1) + abs(runs - 1)
    v.details.update(run_id=run_id, worker=worker, requeued=requeued, training_runs=runs,
                     ml_models=models, registered_events=events)
    return v.result(mttr)


EXPERIMENT = Experiment(
    NAME, "a job whose worker is SIGKILLed runs again and its model is registered exactly "
    "once", "SIGKILL of the huey worker process in the middle of the first training job",
    target_mttr_s=30.0, run=run)

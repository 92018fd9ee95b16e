"""The job queue: huey on SQLite (``<state>/queue.db``), consumed by a child process; or, with
``jobs.backend = "redis"``, huey on Redis, consumed also by ``methtrader worker`` processes on
other machines (:mod:`appliance.worker`, :mod:`appliance.job_reports`).

Heavy work (training, AutoML, distillation, heavy backfill) runs as huey jobs so that the trio
process stays responsive. The consumer cannot live inside trio (it installs signal handlers), so
``run`` starts it as ``python -m appliance.jobs --state-dir DIR`` and restarts it when it dies.

Nothing queued is lost: huey keeps pending jobs in SQLite, and every job notes itself in a
journal on the bus while it runs (``job:running:<id>``). A job interrupted by a stop or a crash
leaves its note behind, and the next start of the consumer service puts it back on the queue.
Jobs must therefore be idempotent (they are keyed by run id).

Jobs get 3 attempts with exponential backoff (huey's ``retries``/``retry_backoff``). A worker
process that dies mid-job (SIGKILL, the OOM killer) takes its job with it (huey had already taken
it off the queue, and the consumer only replaces the worker): the ``huey`` service notices the
note of a dead pid and puts the job back (:meth:`Jobs.requeue_dead`), 3 times at most.

No process outlives ``run`` (:mod:`appliance.consumer_process`).
"""

from __future__ import annotations

if __name__ == "__main__":
    # The consumer child: `run` may stop (SIGINT) before this module and huey have imported,
    # which is a stop, not an error. Until the consumer installs its own handlers, SIGINT
    # ends the start-up quietly instead of printing a KeyboardInterrupt traceback.
    import signal as _signal

    def _stop_quietly(signum: int, frame: object) -> None:
        raise SystemExit(0)

    _signal.signal(_signal.SIGINT, _stop_quietly)

import argparse
import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from huey import PriorityRedisHuey, SqliteHuey

from appliance.bus import Bus
from appliance.consumer_process import exit_with_parent, process_alive, run_consumer
from appliance.contracts import Event
from appliance import job_process
from appliance.job_process import in_child
from appliance.logs import CONSOLE_FORMATS, stderr_handler
from appliance.paths import StatePaths
from appliance.redis_support import QueueOutageFilter

RUNNING_PREFIX = "job:running:"
RETRIES = 2  # 3 attempts in all
RETRY_DELAY_S = 5
TRAIN_RETRY_DELAY_S = 30
TRAINING_PREFIX = "training:"
SKIPPED = "skipped"  # a training run's status when the group had too little history for it
KILLED_PREFIX = "job:killed:"  # how often a job's worker died under it
KILLED_TTL_S = 86400
QUEUE_URL_ENV = "METHTRADER_QUEUE_REDIS_URL"  # the consumer child's Redis URL (not in argv)
REQUEUE_PRIORITY = 10  # huey runs higher priorities first (the default is none: 0)


class JobsUnavailable(RuntimeError):
    """The queue cannot be reached (Redis is down or unreachable); the message says which."""


_current: "Jobs | None" = None  # the Jobs whose task runs in this (worker) process
_current_task: str | None = None  # and that task's id


def current() -> "Jobs | None":
    """The :class:`Jobs` running the current task, inside a task; None elsewhere."""
    return _current


def current_task_id() -> str | None:
    """The huey id of the task running in this process, inside a task; None elsewhere."""
    return _current_task


def make_huey(state_dir: Path, redis_url: str | None = None) -> Any:
    """SQLite huey in the state dir, or (with ``redis_url``) huey on Redis with priorities."""
    if redis_url:
        from appliance.redis_support import require_client

        require_client()
        return PriorityRedisHuey(name="methtrader", url=redis_url, results=True, utc=True)
    return SqliteHuey(name="methtrader", filename=str(StatePaths(state_dir).queue),
                      results=True, utc=True)


class Jobs:
    """The task registry bound to one state dir; the same object on both sides of the queue.

    ``redis_url``: the queue is on Redis (``jobs.backend = "redis"``). ``root``: the folder
    tasks work in (they read ``<root>/lake`` and write ``<root>/artifacts``), default the
    state dir (``jobs.artifact_root``). ``remote``: this is a ``methtrader worker`` on another
    machine: it has no bus (the bus is local to the appliance's disk), so running jobs are not
    noted there and failures, progress and receipts go to huey's result store instead.
    """

    def __init__(self, state_dir: Path, *, defaults: bool = True, redis_url: str | None = None,
                 root: Path | None = None, remote: bool = False) -> None:
        """``defaults=False`` leaves the registry empty (a test registers its own jobs)."""
        self.state_dir = Path(state_dir)
        self.root = Path(root) if root is not None else self.state_dir
        self.redis_url = redis_url or None
        self.remote = remote
        self.huey = make_huey(self.state_dir, self.redis_url)
        self._bus: Bus | None = None
        self.tasks: dict[str, Any] = {}
        if defaults:
            self.register("selftest", selftest)
            self.register("features", _build_features)
            # torch/sklearn/optuna work runs in a process per job (appliance.job_process)
            self.register("train", in_child("appliance.jobs:_train"),
                          retry_delay=TRAIN_RETRY_DELAY_S)
            self.register("automl_trial", in_child("appliance.jobs:_automl_trial"))
            self.register("automl_finish", in_child("appliance.jobs:_automl_finish"),
                          retry_delay=TRAIN_RETRY_DELAY_S)
            self.register("distill", in_child("appliance.jobs:_distill"),
                          retry_delay=TRAIN_RETRY_DELAY_S)

    @property
    def bus(self) -> Bus:
        if self.remote:
            raise RuntimeError("a remote worker has no bus; report through huey's result store")
        if self._bus is None:  # opened lazily: in the consumer, after the fork
            self._bus = Bus(StatePaths(self.state_dir).bus)
        elif self._bus.lost():  # the bus directory was deleted: use the one rebuilt there
            self._bus.reopen()
        return self._bus

    def register(self, name: str, fn: Callable[..., Any], *, retries: int = RETRIES,
                 retry_delay: float = RETRY_DELAY_S) -> Any:
        """Register ``fn`` as a journalled huey task called ``name``."""

        @functools.wraps(fn)
        def journalled(*args: Any, task: Any = None, **kwargs: Any) -> Any:
            global _current, _current_task
            from appliance import job_reports, remote_jobs

            key = f"{RUNNING_PREFIX}{task.id}"
            if not self.remote:
                self.bus.cache.set(key, {"name": name, "args": list(args), "kwargs": kwargs,
                                         "started": time.time(), "pid": os.getpid()})
            _current, _current_task = self, task.id
            note = (remote_jobs.running(self, task.id, name, args, kwargs) if self.remote
                    else contextlib.nullcontext())
            try:
                with note:
                    return fn(self.root, *args, **kwargs)
            except Exception as exc:
                if not task.retries:  # huey counts down: this was the last attempt
                    failure = {"job": name, "task_id": task.id, "attempts": retries + 1,
                               "args": [str(a) for a in args][:4],
                               "error": f"{type(exc).__name__}: {exc}"[:500]}
                    if self.remote:  # best effort: the job's own error matters more
                        with contextlib.suppress(JobsUnavailable):
                            job_reports.report(self, job_reports.FAILED, task.id, failure)
                    else:
                        self.bus.publish(Event.JOB_FAILED, failure, service="huey")
                raise
            finally:
                _current = _current_task = None
                if not self.remote:
                    self.bus.cache.delete(key)

        # huey names a task by module and name; pin the module so the name is the same in the
        # appliance and in the consumer (where this module runs as __main__)
        journalled.__module__ = "methtrader.jobs"
        task = self.huey.task(retries=retries, retry_delay=retry_delay, retry_backoff=2,
                              context=True, name=name)(journalled)
        self.tasks[name] = task
        return task

    def enqueue(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Queue job ``name``; :class:`JobsUnavailable` when the queue cannot be reached."""
        if name not in self.tasks:
            raise KeyError(f"unknown job {name!r}; known jobs: {', '.join(sorted(self.tasks))}")
        with self.reachable("queue job " + name):
            return self.tasks[name](*args, **kwargs)

    @contextlib.contextmanager
    def reachable(self, what: str) -> Iterator[None]:
        """Turn a lost Redis connection into :class:`JobsUnavailable` (what, where, what to
        do); SQLite errors pass through unchanged."""
        if not self.redis_url:
            yield
            return
        import redis

        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            from appliance.redis_support import mask_url

            raise JobsUnavailable(
                f"cannot {what}: Redis at {mask_url(self.redis_url)} is unreachable ({exc}); "
                "start it or fix jobs.redis_url") from None

    def running(self) -> list[dict[str, Any]]:
        cache = self.bus.cache
        return [cache.get(k) for k in cache.iterkeys() if str(k).startswith(RUNNING_PREFIX)]

    def requeue_interrupted(self) -> int:
        """Put back every job whose note outlived its consumer, ahead of the queue (it was being
        worked on); call before a consumer starts."""
        cache = self.bus.cache
        n = 0
        for key in [k for k in cache.iterkeys() if str(k).startswith(RUNNING_PREFIX)]:
            note = cache.get(key)
            if note is not None and note["name"] in self.tasks:
                self._put_back(note)
                n += 1
            cache.delete(key)
        return n

    def requeue_dead(self, alive: Callable[[int], bool] | None = None
                     ) -> tuple[list[str], list[str]]:
        """Put back every running job whose worker process is gone (while the consumer runs);
        returns the names re-queued and the names given up (a worker died under that job more
        than ``RETRIES`` times: it would kill the next one too)."""
        alive = alive or process_alive
        cache = self.bus.cache
        requeued: list[str] = []
        dropped: list[str] = []
        for key in [k for k in cache.iterkeys() if str(k).startswith(RUNNING_PREFIX)]:
            note = cache.get(key)
            if not isinstance(note, dict) or alive(int(note.get("pid") or 0)):
                continue
            if not cache.delete(key) or note.get("name") not in self.tasks:
                continue
            self._clean_up_after({**note, "task_id": str(key)[len(RUNNING_PREFIX):]})
            if self._count_kill(note) > RETRIES + 1:
                dropped.append(note["name"])
                continue
            try:
                self._put_back(note)
            except JobsUnavailable:
                cache.set(key, note)  # kept for the next watch
                cache.incr(_kills_key(note), -1)
                raise
            requeued.append(note["name"])
        return requeued, dropped

    def requeue_remote(self, stale_s: float | None = None) -> tuple[list[str], list[str]]:
        """:meth:`requeue_dead` for ``methtrader worker`` processes (:mod:`appliance.remote_jobs`):
        put back every job whose note in Redis went stale; returns the names re-queued and
        those given up (their workers died more than ``RETRIES`` times)."""
        from appliance import remote_jobs

        requeued: list[str] = []
        dropped: list[str] = []
        stale = remote_jobs.take_stale(self, remote_jobs.STALE_S if stale_s is None else stale_s)
        for note in stale:
            if note.get("name") not in self.tasks:
                continue
            self._clean_up_after(note)
            if self._count_kill(note) > RETRIES + 1:
                dropped.append(note["name"])
                continue
            self._put_back(note)
            requeued.append(note["name"])
        return requeued, dropped

    def _clean_up_after(self, note: dict[str, Any]) -> None:
        """What a job that died leaves behind: an AutoML trial stays ``RUNNING`` in its study
        for good; it is marked failed (best effort: the job is put back either way)."""
        if note.get("name") != "automl_trial" or not note.get("task_id"):
            return
        from appliance.automl import fail_trials_of_job

        try:
            fail_trials_of_job(self.root, note["args"], str(note["task_id"]), self.redis_url)
        except Exception as exc:  # noqa: BLE001  (the job matters more than the record)
            logging.getLogger("methtrader.huey").warning(
                "could not mark the lost trial failed: %s", exc)

    def _count_kill(self, note: dict[str, Any]) -> int:
        """How often a worker died under this job (name and args), kept a day on the bus."""
        kills_key = _kills_key(note)
        kills = self.bus.cache.incr(kills_key, 1, default=0)
        self.bus.cache.touch(kills_key, expire=KILLED_TTL_S)
        return kills

    def _put_back(self, note: dict[str, Any]) -> None:
        """Queue a job again ahead of the rest: it was the one being worked on."""
        with self.reachable("re-queue job " + note["name"]):
            self.huey.enqueue(self.tasks[note["name"]].s(
                *note["args"], priority=REQUEUE_PRIORITY, **note["kwargs"]))

    def pending(self) -> int:
        with self.reachable("count pending jobs"):
            return self.huey.pending_count()

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()


def _kills_key(note: dict[str, Any]) -> str:
    ident = json.dumps([note["name"], note["args"], note["kwargs"]], sort_keys=True, default=str)
    return KILLED_PREFIX + hashlib.sha256(ident.encode()).hexdigest()[:24]


def selftest(state_dir: Path, seconds: float, marker: str) -> int:
    """A queue health check: sleeps ``seconds``, then writes ``marker`` (a file name inside the
    state dir's ``jobs/``) with the worker's pid. Proves a job runs, survives interruption and
    completes exactly once."""
    time.sleep(seconds)
    out = StatePaths(state_dir).jobs / marker
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return os.getpid()


def _build_features(state_dir: Path, symbol: str) -> int:
    from data.feature_job import build_features  # heavy imports stay in the worker

    return build_features(state_dir, symbol)


def _automl_trial(state_dir: Path, *args: Any) -> str:
    from appliance.automl import trial_job  # optuna, torch and sklearn load in the worker

    return trial_job(state_dir, *args)


def _automl_finish(state_dir: Path, *args: Any) -> dict[str, Any]:
    from appliance.automl import finish_job

    return finish_job(state_dir, *args)


def _train(state_dir: Path, run_id: str, group: str, symbols: list[str], kind: str,
           params: dict[str, Any] | None = None, tags: dict[str, Any] | None = None,
           parent_run_id: str | None = None, setup: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    """The training job: progress goes to the bus (an event per epoch and the run's state), or
    from a remote worker to huey's result store (:mod:`appliance.job_reports`).
    ``setup``: the run's timeframe, walk-forward folds, sizing threshold and cost model (see
    :func:`models.training.run_setup`). A group whose history is too short for the folds is
    not a failure that retrying fixes: the run ends ``skipped``, with the reason, and the
    training service queues it again later."""
    import warnings

    from models.training import run_kwargs, train_run
    from models.walkforward import NotEnoughHistory

    # huey's worker processes are daemonic, so joblib runs forests on one core: say it once
    warnings.filterwarnings("ignore", message="Loky-backed parallel loops")

    from appliance import job_reports

    jobs = current()
    remote = jobs is not None and jobs.remote
    bus = None if remote else Bus(StatePaths(state_dir).bus)

    def progress(p: dict[str, Any]) -> None:
        note = {**p, "symbols": symbols, "ts": time.time()}
        if bus is None:
            job_reports.report(jobs, job_reports.PROGRESS, run_id, note)  # type: ignore[arg-type]
            return
        bus.cache.set(f"{TRAINING_PREFIX}{run_id}", note)
        bus.publish(Event.TRAINING_PROGRESS, p, service="huey")

    try:
        progress({"run_id": run_id, "group": group, "kind": kind, "epoch": 0, "loss": None,
                  "percent": 0.0, "status": "running"})
        receipt = train_run(state_dir, run_id, group, symbols, kind, params, tags=tags,
                            parent_run_id=parent_run_id, progress=progress,
                            **run_kwargs(setup or {}))
        job_reports.report_receipt(receipt)
        return receipt
    except NotEnoughHistory as exc:  # no retry can help: the training service tries later
        progress({"run_id": run_id, "group": group, "kind": kind, "epoch": None,
                  "loss": None, "percent": 0.0, "status": SKIPPED, "error": str(exc)})
        return {"run_id": run_id, "skipped": str(exc)}
    except Exception as exc:
        progress({"run_id": run_id, "group": group, "kind": kind, "epoch": None,
                  "loss": None, "percent": 0.0, "status": "failed",
                  "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        if bus is not None:
            bus.close()


def _distill(state_dir: Path, group: str, symbols: list[str], setup: dict[str, Any],
             teacher_run_id: str, student_run_id: str, tags: dict[str, Any]
             ) -> dict[str, Any]:
    """The weekly distillation job (:mod:`models.distill`): the teacher's and the student's
    progress go to the bus as training runs (the Training screen shows both); the training
    service registers their receipts."""
    from models.distill import distill_group

    with Bus(StatePaths(state_dir).bus) as bus:
        def progress(p: dict[str, Any]) -> None:
            run_id, teacher = p["run_id"], p["phase"] == "teacher"
            entry = {"run_id": run_id, "group": group, "kind": "lstm" if teacher else "ddqn",
                     "timeframe": "1h" if teacher else "5m", "percent": p.get("percent"),
                     "loss": p.get("loss"), "epoch": p.get("episode"),
                     "agreement": p.get("agreement"), "device": p.get("device"),
                     "symbols": symbols, "ts": time.time(),
                     "status": ("completed" if p["phase"] == "done"
                                or (teacher and (p.get("percent") or 0) >= 100)
                                else "running")}
            bus.cache.set(f"{TRAINING_PREFIX}{run_id}", entry)
            bus.publish(Event.TRAINING_PROGRESS, entry, service="huey")

        return distill_group(state_dir, group, symbols, setup, teacher_run_id=teacher_run_id,
                             student_run_id=student_run_id, tags=tags, progress=progress)


def consumer_main(argv: list[str] | None = None) -> int:
    """Entry of the consumer child process (``python -m appliance.jobs``)."""
    ap = argparse.ArgumentParser(prog="methtrader-jobs")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="the appliance's pid: the consumer exits when it is gone")
    ap.add_argument("--log-format", choices=CONSOLE_FORMATS, default="json",
                    help="stderr's format, as the appliance's own (it shares that stderr)")
    ap.add_argument("--artifact-root", default=None,
                    help="where jobs read the lake and write artifacts (default: the state dir)")
    ap.add_argument("--job-nice", type=int, default=None,
                    help="nice of the process each training/AutoML job runs in")
    ap.add_argument("--niceness", type=int, default=0,
                    help="added to this process's niceness (its workers inherit it)")
    args = ap.parse_args(argv)
    if args.niceness > 0:
        # training saturates the cores; at a lower priority it leaves them to `run`, whose
        # bar → orders path must not wait behind it
        os.nice(args.niceness)
    if args.job_nice is not None:
        job_process.set_nice(args.job_nice)
    handler = stderr_handler(args.log_format, "huey")
    handler.addFilter(QueueOutageFilter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    exit_with_parent(args.parent_pid if args.parent_pid is not None else os.getppid())
    # the Redis URL comes in the environment: a password on the command line shows in `ps`
    redis_url = os.environ.get(QUEUE_URL_ENV) or None
    run_consumer(Jobs(Path(args.state_dir), redis_url=redis_url,
                      root=Path(args.artifact_root) if args.artifact_root else None),
                 args.workers)
    return 0


def jobs_for(cfg: Any) -> Jobs:
    """The appliance's :class:`Jobs` as its config says (``[jobs]``)."""
    return Jobs(cfg.state_path,
                redis_url=cfg.jobs.redis_url if cfg.jobs.backend == "redis" else None,
                root=cfg.artifact_path)


if __name__ == "__main__":
    sys.exit(consumer_main())

"""The job queue: huey on SQLite (``<state>/queue.db``), consumed by a child process.

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

No process outlives ``run``: the consumer watches its parent and takes its process group down
when ``run`` dies, and each of its worker processes (and huey's scheduler) dies with the
consumer (Linux ``PR_SET_PDEATHSIG``, a watching thread elsewhere). An orphan would otherwise
finish a job that the next ``run`` re-queues, so it would run twice.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from huey import SqliteHuey
from huey.consumer import Consumer, ProcessEnvironment

from appliance.bus import Bus
from appliance.contracts import Event
from appliance.logs import CONSOLE_FORMATS, stderr_handler
from appliance.paths import StatePaths

RUNNING_PREFIX = "job:running:"
RETRIES = 2  # 3 attempts in all
RETRY_DELAY_S = 5
TRAIN_RETRY_DELAY_S = 30
TRAINING_PREFIX = "training:"
KILLED_PREFIX = "job:killed:"  # how often a job's worker died under it
KILLED_TTL_S = 86400
REQUEUE_PRIORITY = 10  # huey runs higher priorities first (the default is none: 0)


def make_huey(state_dir: Path) -> SqliteHuey:
    return SqliteHuey(name="methtrader", filename=str(StatePaths(state_dir).queue),
                      results=True, utc=True)


class Jobs:
    """The task registry bound to one state dir; the same object on both sides of the queue."""

    def __init__(self, state_dir: Path, *, defaults: bool = True) -> None:
        """``defaults=False`` leaves the registry empty (a test registers its own jobs)."""
        self.state_dir = Path(state_dir)
        self.huey = make_huey(self.state_dir)
        self._bus: Bus | None = None
        self.tasks: dict[str, Any] = {}
        if defaults:
            self.register("selftest", selftest)
            self.register("features", _build_features)
            self.register("train", _train, retry_delay=TRAIN_RETRY_DELAY_S)
            self.register("automl_trial", _automl_trial)
            self.register("automl_finish", _automl_finish, retry_delay=TRAIN_RETRY_DELAY_S)

    @property
    def bus(self) -> Bus:
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
            key = f"{RUNNING_PREFIX}{task.id}"
            self.bus.cache.set(key, {"name": name, "args": list(args), "kwargs": kwargs,
                                     "started": time.time(), "pid": os.getpid()})
            try:
                return fn(self.state_dir, *args, **kwargs)
            except Exception as exc:
                if not task.retries:  # huey counts down: this was the last attempt
                    self.bus.publish(Event.JOB_FAILED, {
                        "job": name, "task_id": task.id, "attempts": retries + 1,
                        "args": [str(a) for a in args][:4],
                        "error": f"{type(exc).__name__}: {exc}"[:500]}, service="huey")
                raise
            finally:
                self.bus.cache.delete(key)

        # huey names a task by module and name; pin the module so the name is the same in the
        # appliance and in the consumer (where this module runs as __main__)
        journalled.__module__ = "methtrader.jobs"
        task = self.huey.task(retries=retries, retry_delay=retry_delay, retry_backoff=2,
                              context=True, name=name)(journalled)
        self.tasks[name] = task
        return task

    def enqueue(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if name not in self.tasks:
            raise KeyError(f"unknown job {name!r}; known jobs: {', '.join(sorted(self.tasks))}")
        return self.tasks[name](*args, **kwargs)

    def running(self) -> list[dict[str, Any]]:
        cache = self.bus.cache
        return [cache.get(k) for k in cache.iterkeys() if str(k).startswith(RUNNING_PREFIX)]

    def requeue_interrupted(self) -> int:
        """Put back every job whose note outlived its consumer; call before a consumer starts."""
        cache = self.bus.cache
        n = 0
        for key in [k for k in cache.iterkeys() if str(k).startswith(RUNNING_PREFIX)]:
            note = cache.get(key)
            if note is not None and note["name"] in self.tasks:
                self.enqueue(note["name"], *note["args"], **note["kwargs"])
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
            ident = json.dumps([note["name"], note["args"], note["kwargs"]], sort_keys=True,
                               default=str)
            kills_key = KILLED_PREFIX + hashlib.sha256(ident.encode()).hexdigest()[:24]
            kills = cache.incr(kills_key, 1, default=0)
            cache.touch(kills_key, expire=KILLED_TTL_S)
            if kills > RETRIES + 1:
                dropped.append(note["name"])
                continue
            # ahead of the queue: it was the job being worked on
            self.huey.enqueue(self.tasks[note["name"]].s(*note["args"], priority=REQUEUE_PRIORITY,
                                                         **note["kwargs"]))
            requeued.append(note["name"])
        return requeued, dropped

    def pending(self) -> int:
        return self.huey.pending_count()

    def close(self) -> None:
        if self._bus is not None:
            self._bus.close()


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


PR_SET_PDEATHSIG = 1
PARENT_POLL_S = 0.2


def process_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, dead but not yet reaped, is not)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _set_parent_death_signal() -> bool:
    """Linux: have the kernel SIGKILL this process when the thread that forked it ends.
    False where that is not available (then a thread watches the parent instead)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int, on_orphaned: Callable[[], None]) -> None:
    """Call ``on_orphaned`` as soon as this process no longer has ``parent_pid`` as parent
    (at once when it already lost it: the parent may die before the watch starts)."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        on_orphaned()

    if os.getppid() != parent_pid:
        on_orphaned()
        return
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent(parent_pid: int) -> None:
    """Make this (forked) process die when ``parent_pid``, its parent, dies, even by SIGKILL."""
    if _set_parent_death_signal():
        if os.getppid() != parent_pid:  # the parent died before the signal was armed
            _kill_self()
        return
    _watch_parent(parent_pid, _kill_self)


def _exit_with_parent(parent_pid: int) -> None:
    """If ``run`` dies (even by SIGKILL), take the consumer and its workers down with it, so
    the next ``run`` re-queues their jobs instead of racing an orphan that finishes them.

    A thread watches here rather than ``PR_SET_PDEATHSIG``: trio starts the consumer from a
    worker thread, and that signal fires when the forking *thread* ends, which trio's idle
    threads do after a few seconds.
    """
    _watch_parent(parent_pid, lambda: os.killpg(os.getpgid(0), signal.SIGKILL))


class _OrphanFreeEnvironment(ProcessEnvironment):
    """huey's process environment, with every child (workers and the scheduler) bound to die
    with the consumer: a SIGKILLed consumer leaves no worker finishing its job."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.consumer_pid = os.getpid()

    def init_child(self, process: Any) -> None:
        super().init_child(process)
        die_with_parent(self.consumer_pid)


class _Consumer(Consumer):
    def get_environment(self, worker_type: str) -> Any:
        if worker_type == "process":
            return _OrphanFreeEnvironment(self._graceful_sig, self._interrupt_sig)
        return super().get_environment(worker_type)


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
    """The training job: progress goes to the bus (an event per epoch and the run's state).
    ``setup``: the run's timeframe, walk-forward folds, sizing threshold and cost model (see
    :func:`models.training.run_setup`)."""
    import warnings

    from models.training import run_kwargs, train_run

    # huey's worker processes are daemonic, so joblib runs forests on one core: say it once
    warnings.filterwarnings("ignore", message="Loky-backed parallel loops")

    with Bus(StatePaths(state_dir).bus) as bus:
        def progress(p: dict[str, Any]) -> None:
            bus.cache.set(f"{TRAINING_PREFIX}{run_id}", {**p, "symbols": symbols,
                                                         "ts": time.time()})
            bus.publish(Event.TRAINING_PROGRESS, p, service="huey")

        progress({"run_id": run_id, "group": group, "kind": kind, "epoch": 0, "loss": None,
                  "percent": 0.0, "status": "running"})
        try:
            return train_run(state_dir, run_id, group, symbols, kind, params, tags=tags,
                             parent_run_id=parent_run_id, progress=progress,
                             **run_kwargs(setup or {}))
        except Exception as exc:
            progress({"run_id": run_id, "group": group, "kind": kind, "epoch": None,
                      "loss": None, "percent": 0.0, "status": "failed",
                      "error": f"{type(exc).__name__}: {exc}"})
            raise


def consumer_main(argv: list[str] | None = None) -> int:
    """Entry of the consumer child process (``python -m appliance.jobs``)."""
    ap = argparse.ArgumentParser(prog="methtrader-jobs")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="the appliance's pid: the consumer exits when it is gone")
    ap.add_argument("--log-format", choices=CONSOLE_FORMATS, default="json",
                    help="stderr's format, as the appliance's own (it shares that stderr)")
    ap.add_argument("--niceness", type=int, default=0,
                    help="added to this process's niceness (its workers inherit it)")
    args = ap.parse_args(argv)
    if args.niceness > 0:
        # training saturates the cores; at a lower priority it leaves them to `run`, whose
        # bar → orders path must not wait behind it
        os.nice(args.niceness)
    logging.basicConfig(level=logging.INFO, handlers=[stderr_handler(args.log_format, "huey")])
    _exit_with_parent(args.parent_pid if args.parent_pid is not None else os.getppid())
    run_consumer(Jobs(Path(args.state_dir)), args.workers)
    return 0


def run_consumer(jobs: Jobs, workers: int) -> None:
    """Consume ``jobs``' queue in this process until SIGINT (graceful) or SIGTERM."""
    consumer = _Consumer(jobs.huey, workers=workers, worker_type="process", periodic=False,
                         initial_delay=0.05, max_delay=0.5, check_worker_health=True)
    consumer.run()


if __name__ == "__main__":
    sys.exit(consumer_main())

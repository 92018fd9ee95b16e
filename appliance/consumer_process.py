"""The job consumer's processes: huey's consumer with every child bound to die with it.

No process outlives ``run``: the consumer watches its parent and takes its process group down
when ``run`` dies, and each of its worker processes (and huey's scheduler) dies with the
consumer (Linux ``PR_SET_PDEATHSIG``, a watching thread elsewhere). An orphan would otherwise
finish a job that the next ``run`` re-queues, so it would run twice. ``methtrader worker`` runs
the same consumer on another machine (:mod:`appliance.worker`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from huey.consumer import Consumer, ProcessEnvironment

if TYPE_CHECKING:
    from appliance.jobs import Jobs

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


def exit_with_parent(parent_pid: int) -> None:
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


def run_consumer(jobs: "Jobs", workers: int) -> None:
    """Consume ``jobs``' queue in this process until SIGINT (graceful) or SIGTERM."""
    consumer = _Consumer(jobs.huey, workers=workers, worker_type="process", periodic=False,
                         initial_delay=0.05, max_delay=0.5, check_worker_health=True)
    consumer.run()

"""Heavy jobs in a short-lived process of their own: one forked process per job.

Training imports torch, sklearn and optuna and leaves 0.7-0.95 GB resident in whatever process
ran it: a huey worker that trained once kept that memory for good. A job wrapped with
:func:`in_child` runs in a process forked from the worker for that one job; when the job ends
the process exits and what it allocated and imported goes back to the system. The worker itself
stays a small process that waits. Forking (not a fresh interpreter) shares the modules the
worker already imported, page for page, and saves their import time per job.

* The result (or the exception's type and message) comes back pickled through a pipe; an
  exception becomes :class:`JobProcessError`, so huey's retries and the ``job_failed`` event
  work as before. A process that dies without a word (the OOM killer) is an error too.
* The process runs at a lower OS priority (``nice``, ``training.job_nice``, default 5, added to
  the consumer's own ``jobs.niceness``) than
  ``run``: bar → orders keeps its core while training saturates the machine.
* It dies with the worker that forked it (``PR_SET_PDEATHSIG``) and shares its process group,
  so a stop of the consumer's group takes it too; if the worker is interrupted while waiting,
  it kills the job process before it goes on. It ignores SIGINT, the consumer's *graceful*
  stop, so the job finishes as it did in the worker; SIGTERM and SIGKILL end it at once (the
  journal re-queues the job).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import signal
from pathlib import Path
from typing import Any, Callable

NICE = 5  # training.job_nice's default; the consumer sets the configured one


def set_nice(nice: int) -> None:
    """The nice of every job process forked from now on in this process (0..19)."""
    global NICE
    if not 0 <= nice <= 19:
        raise ValueError(f"job nice must be in 0..19, not {nice}")
    NICE = nice


class JobProcessError(RuntimeError):
    """The job failed in its process (the message names the exception there)."""


def resolve(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` → the function."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"job target {target!r}: expected 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def _child(target: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: int,
           parent: int) -> None:
    """The forked process: run the job, write its outcome to ``out``, exit (never returns)."""
    code = 1
    try:
        from appliance.consumer_process import die_with_parent

        die_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a graceful stop lets the job finish
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # huey's handler belongs to the worker
        if NICE:
            os.nice(NICE)
        try:
            outcome: tuple[bool, Any] = (True, resolve(target)(*args, **kwargs))
            data = pickle.dumps(outcome)
        except Exception as exc:  # reported to the worker, which raises it for huey
            data = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
        with os.fdopen(out, "wb") as fh:
            fh.write(data)
        code = 0
    finally:
        os._exit(code)  # no atexit, no huey cleanup: those belong to the worker


def run_in_child(target: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``target(*args, **kwargs)`` in a process forked for it; return its result."""
    read_end, write_end = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(target, args, kwargs, write_end, parent)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as fh:
            data = fh.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:  # interrupted while waiting: the job must not run on unattended
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    if not data:
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise JobProcessError(f"{target}: its job process {how} before it finished")
    ok, value = pickle.loads(data)
    if not ok:
        raise JobProcessError(f"{target}: {value}")
    return value


def in_child(target: str) -> Callable[..., Any]:
    """A job function (``fn(state_dir, *args, **kwargs)``) that runs ``target`` in a
    short-lived process. ``target`` is named, not passed, because the consumer runs
    :mod:`appliance.jobs` as ``__main__``."""
    name = target.partition(":")[2]

    def job(state_dir: Path, *args: Any, **kwargs: Any) -> Any:
        return run_in_child(target, Path(state_dir), *args, **kwargs)

    job.__name__ = job.__qualname__ = name or "job"
    job.__doc__ = f"{target}, in a process of its own (see appliance.job_process)."
    return job

"""Heavy jobs in a short-lived process of their own: one fresh interpreter per job.

Training imports torch, sklearn and optuna and leaves 0.7-0.95 GB resident in whatever process
ran it: a huey worker that trained once kept that memory for good. A job wrapped with
:func:`in_child` runs in ``python -m appliance.job_process`` instead, started by the worker for
that one job; when the job ends the process exits and its memory goes back to the system. The
worker itself stays a small process that waits.

* Arguments and the result cross the boundary as pickles in a private temp folder (huey
  pickles them anyway); an exception in the child comes back as :class:`JobProcessError` with
  the child's type and message, so huey's retries and the ``job_failed`` event work as before.
* The child runs at a lower OS priority (``nice`` :data:`NICE`) than ``run``: bar → orders
  keeps its core while training saturates the machine.
* It dies with the worker that started it (``PR_SET_PDEATHSIG``, :func:`appliance.jobs.
  die_with_parent`) and shares its process group, so a stop of the consumer's group takes it
  too. It ignores SIGINT, the consumer's *graceful* stop, so the job finishes as it did in the
  worker; SIGTERM and SIGKILL end it at once (the journal re-queues the job).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from appliance.paths import StatePaths

NICE = 10
LOG_FORMAT_ENV = "METHTRADER_JOB_LOG_FORMAT"


class JobProcessError(RuntimeError):
    """The job failed in its child process (the message names the child's exception)."""


def resolve(target: str) -> Callable[..., Any]:
    """``"package.module:function"`` → the function."""
    module, _, name = target.partition(":")
    if not module or not name:
        raise ValueError(f"job target {target!r}: expected 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def run_in_child(target: str, *args: Any, scratch: Path | None = None, **kwargs: Any) -> Any:
    """Call ``target(*args, **kwargs)`` in a fresh process and return its result. The call
    and its result pass through a temp folder under ``scratch`` (default the system's)."""
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="job-", dir=scratch) as tmp:
        call, result = Path(tmp) / "call.pickle", Path(tmp) / "result.pickle"
        call.write_bytes(pickle.dumps((target, args, kwargs)))
        proc = subprocess.run([sys.executable, "-m", "appliance.job_process",
                               "--parent-pid", str(os.getpid()), str(call), str(result)],
                              stdin=subprocess.DEVNULL, check=False)
        if not result.exists():
            how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exited with code {proc.returncode}")
            raise JobProcessError(f"{target}: its job process {how} before it finished")
        ok, value = pickle.loads(result.read_bytes())
    if not ok:
        raise JobProcessError(f"{target}: {value}")
    return value


def in_child(target: str) -> Callable[..., Any]:
    """A job function (``fn(state_dir, *args, **kwargs)``) that runs ``target`` in a
    short-lived process. ``target`` is named, not passed, because the consumer runs
    :mod:`appliance.jobs` as ``__main__``."""
    name = target.partition(":")[2]

    def job(state_dir: Path, *args: Any, **kwargs: Any) -> Any:
        # the scratch folder in the state dir names it on the child's command line, as the
        # consumer's and workers' do (so `ps` finds every process of one appliance)
        return run_in_child(target, Path(state_dir), *args,
                            scratch=StatePaths(state_dir).jobs / "calls", **kwargs)

    job.__name__ = job.__qualname__ = name or "job"
    job.__doc__ = f"{target}, in a process of its own (see appliance.job_process)."
    return job


def child_main(argv: list[str] | None = None) -> int:
    from appliance.jobs import die_with_parent
    from appliance.logs import CONSOLE_FORMATS, stderr_handler

    ap = argparse.ArgumentParser(prog="methtrader-job")
    ap.add_argument("--parent-pid", type=int, required=True)
    ap.add_argument("call")
    ap.add_argument("result")
    args = ap.parse_args(argv)
    die_with_parent(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a graceful stop lets the job finish
    os.nice(NICE)
    fmt = os.environ.get(LOG_FORMAT_ENV, "json")
    logging.basicConfig(level=logging.INFO, handlers=[
        stderr_handler(fmt if fmt in CONSOLE_FORMATS else "json", "huey")])
    target, call_args, call_kwargs = pickle.loads(Path(args.call).read_bytes())
    try:
        outcome: tuple[bool, Any] = (True, resolve(target)(*call_args, **call_kwargs))
    except Exception as exc:  # reported to the worker, which raises it for huey
        outcome = (False, f"{type(exc).__name__}: {exc}")
    tmp = Path(args.result).with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(outcome))
    tmp.rename(args.result)
    return 0


if __name__ == "__main__":
    sys.exit(child_main())

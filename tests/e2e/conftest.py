"""Helpers to drive ``methtrader`` as a user does: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

METHTRADER = [sys.executable, "-m", "appliance.cli"]


def methtrader(*args: str, timeout: float = 60, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([*METHTRADER, *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(f"methtrader {' '.join(args)} exited {out.returncode}:\n"
                             f"{out.stderr[-3000:]}")
    return out


def status_json(state_dir: Path) -> dict:
    out = methtrader("status", "--json", "--state-dir", str(state_dir))
    return json.loads(out.stdout)  # JSON alone on stdout


def start_run(state_dir: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen:
    """``methtrader run`` in the background; its stderr goes to a file (a pipe nobody reads
    could fill up and stall it): read it with :func:`stderr_of`."""
    state_dir.parent.mkdir(parents=True, exist_ok=True)
    err_path = state_dir.parent / f"run-{len(list(state_dir.parent.glob('run-*.err')))}.err"
    # training at normal priority: these tests share the machine with others, and a niced
    # job waits behind all of them, past the tests' time bounds. Both niceness settings: the
    # job consumer's own (jobs.niceness, 10 by default, which its job processes inherit) and
    # the one added for each job (training.job_nice)
    proc = subprocess.Popen([*METHTRADER, "run", "--state-dir", str(state_dir), *args],
                            stdout=subprocess.DEVNULL, stderr=open(err_path, "w"),
                            env={"METHTRADER__JOBS__NICENESS": "0",
                                 "METHTRADER__TRAINING__JOB_NICE": "0", **os.environ,
                                 **(env or {})})
    proc.err_path = err_path  # type: ignore[attr-defined]
    return proc


def stderr_of(proc: subprocess.Popen) -> str:
    return Path(proc.err_path).read_text()  # type: ignore[attr-defined]


def clock_at(state: Path, hour: int) -> Path:
    """Start ``state``'s market clock at ``hour``:00 UTC yesterday (a ``clock.json``, as a run
    leaves it). A backfill of ``datasets.days`` reaches back to a day's start and up to the
    clock, so a run started from the wall clock has up to a day more history in the evening
    than just after midnight, and a quick e2e run's small dataset failed training's fold check
    ("too little data for these folds") at some hours of the day only."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    at = time.time() // 86_400 * 86_400 - 86_400 + hour * 3_600
    clock = state / "clock.json"
    clock.write_text(json.dumps({"market_time": at}))
    clock.chmod(0o600)
    return state


@pytest.fixture
def run_proc():
    procs: list[subprocess.Popen] = []

    def start(state_dir: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen:
        p = start_run(state_dir, *args, env=env)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


@pytest.fixture
def fake_bybit(tmp_path):
    """Start ``methtrader fake-bybit`` on a free loopback port (flags as given); gives its URL."""
    def start(*flags: str) -> str:
        proc = subprocess.Popen([*METHTRADER, "fake-bybit", "--port", "0", *flags],
                                stdout=subprocess.PIPE,
                                stderr=open(tmp_path / f"fake-{len(procs)}.err", "w"),
                                text=True)
        procs.append(proc)
        line = proc.stdout.readline().strip()
        assert line.startswith("fake-bybit listening on http://127.0.0.1:"), line
        return line.rsplit(" ", 1)[1]

    procs: list[subprocess.Popen] = []
    yield start
    for p in procs:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


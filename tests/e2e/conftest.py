"""Helpers to drive ``methtrader`` as a user does: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def start_run(state_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*METHTRADER, "run", "--state-dir", str(state_dir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def run_proc():
    procs: list[subprocess.Popen] = []

    def start(state_dir: Path, *args: str) -> subprocess.Popen:
        p = start_run(state_dir, *args)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)

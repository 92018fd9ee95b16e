"""Shared by the safety and bad-input e2e tests: a state dir `run` has used, and the check
that an error is one plain line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.e2e.conftest import methtrader

QUIET = ("--metrics-port", "0")


def run_briefly(state: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``methtrader run`` for one second of real time."""
    return methtrader("run", "--state-dir", str(state), "--for", "1s", *QUIET, *args,
                      timeout=120, check=check)


def one_error_line(out: subprocess.CompletedProcess, code: int) -> str:
    """The exit code, exactly one ``methtrader: ...`` line on stderr, and no traceback
    printed outside the JSON log lines (a log line may carry one in its ``exc`` field)."""
    assert out.returncode == code, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    plain = [line for line in lines if not line.startswith("{")]
    assert not any(line.startswith("Traceback") for line in plain), out.stderr[-3000:]
    errors = [line for line in lines if line.startswith("methtrader: ")]
    assert len(errors) == 1, lines[-20:]
    return errors[0]


def copy_state(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst

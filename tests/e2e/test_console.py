"""`methtrader run` on a terminal: a startup summary and log lines for people, while the log
file (and stderr off a terminal) stays JSON lines."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import METHTRADER, stderr_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_on_a_terminal(state: Path, *args: str) -> str:
    """``run`` with stderr on a pseudo-terminal (as over ``ssh -t``); everything it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([*METHTRADER, "run", "--state-dir", str(state), "--metrics-port",
                             "0", *args], stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the last writer closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=30) == 0
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_run_on_a_terminal_prints_a_summary_then_coloured_lines(tmp_path: Path):
    state = tmp_path / "state"
    out = run_on_a_terminal(state, "--for", "6s")
    head = out.split("\n\n", 1)[0]
    assert head.startswith("methtrader run")
    for needle in (f"state dir    {state}", "sim (the simulated market", "×60",
                   "metrics      off", f"methtrader tui --state-dir {state}", "Ctrl-C",
                   "after 6 s of real time"):
        assert needle in head, head
    lines = [ANSI.sub("", line) for line in out.split("\n\n", 1)[1].splitlines() if line]
    assert lines, out
    assert "\x1b[" in out  # coloured
    readable = re.compile(r"^\d\d:\d\d:\d\d \S+ +(DEBUG|INFO|WARNING|ERROR) +\S")
    assert all(readable.match(line) or line.startswith("    ") for line in lines), lines
    assert not any(line.startswith("{") for line in lines)
    file_lines = (state / "logs" / "methtrader.jsonl").read_text().splitlines()
    assert file_lines and all("service" in json.loads(line) for line in file_lines)


def test_off_a_terminal_stderr_stays_json_lines(tmp_path: Path, run_proc):
    proc = run_proc(tmp_path / "state", "--for", "4s", "--metrics-port", "0")
    assert proc.wait(timeout=90) == 0
    lines = stderr_of(proc).splitlines()
    assert lines and all("service" in json.loads(line) for line in lines)

"""A stopped or killed ``chaos run`` leaves no scratch appliance behind: its ``run`` processes,
their job consumers and its ``fake-bybit`` servers stop with it (they would otherwise trade and
write on with nobody watching)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import METHTRADER
from tests.e2e.test_run import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) of every live, non-zombie process."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            args = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if stat[0] != "Z":
            out[int(entry.name)] = (int(stat[1]), args)
    return out


def descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid``, with its command line."""
    table, found, frontier = _table(), {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, args) in table.items():
            if ppid == parent and child not in found:
                found[child] = args
                frontier.append(child)
    return found


def alive(pids) -> list[int]:
    table = _table()
    return [p for p in pids if p in table]


def start_chaos(tmp_path: Path, *experiments: str, lanes: int) -> subprocess.Popen:
    """``chaos run`` whose scratch dirs are under ``tmp_path`` (TMPDIR)."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.Popen([*METHTRADER, "chaos", "run", *experiments, "--lanes", str(lanes)],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "chaos.err", "w"),
                            env=env)


def scratch_appliance_up(chaos: subprocess.Popen) -> dict[int, str] | None:
    """The chaos run's processes once a scratch ``run`` and a ``fake-bybit`` are up."""
    below = descendants(chaos.pid)
    runs = [a for a in below.values() if " run --state-dir " in a]
    fakes = [a for a in below.values() if " fake-bybit " in a]
    return below if runs and fakes else None


@pytest.mark.parametrize("sig, lanes", [(signal.SIGTERM, 2), (signal.SIGKILL, 1)],
                         ids=["sigterm-two-lanes", "sigkill-one-lane"])
def test_a_stopped_or_killed_chaos_run_leaves_no_process_behind(tmp_path, sig, lanes):
    chaos = start_chaos(tmp_path, "exchange-outage", "service-crash", lanes=lanes)
    below: dict[int, str] = {}
    try:
        below = wait_for(lambda: scratch_appliance_up(chaos), 120,
                         "a scratch appliance and its fake-bybit to start")
        time.sleep(1.0)  # and their children (the job consumer)
        below.update(descendants(chaos.pid))
        chaos.send_signal(sig)
        rc = chaos.wait(timeout=90)
        if sig == signal.SIGTERM:
            assert rc == 130, (tmp_path / "chaos.err").read_text()[-2000:]
        wait_for(lambda: not alive(below), 60,
                 f"every process of the chaos run to stop: {alive(below)}")
    finally:
        if chaos.poll() is None:
            chaos.kill()
            chaos.wait(timeout=10)
        for pid in alive(below):
            os.kill(pid, signal.SIGKILL)

"""The run lock (issue 11 #8, issue 9 #7): held by a process, tested by another, gone the
moment its holder dies however it dies."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.liveness import AlreadyRunning, RunLock, is_running, lock_holder

HOLD = textwrap.dedent("""
    import sys, time
    from appliance.liveness import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


def holder(state: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(state)], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_no_lock_file_means_not_running_and_nothing_is_created(tmp_path: Path) -> None:
    assert is_running(tmp_path) is False and list(tmp_path.iterdir()) == []
    assert is_running(tmp_path / "missing") is False


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_lock_is_seen_from_another_process_and_dies_with_its_holder(tmp_path: Path,
                                                                        how) -> None:
    proc = holder(tmp_path)
    try:
        assert is_running(tmp_path) and is_running(tmp_path)  # probing leaves it held
        assert lock_holder(tmp_path)["pid"] == proc.pid
        lock = tmp_path / "run.lock"
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
        with pytest.raises(AlreadyRunning, match=f"already running .*pid {proc.pid}"):
            RunLock(tmp_path).acquire(patience_s=0.2)
    finally:
        proc.send_signal(how)
        proc.wait(timeout=30)
    assert is_running(tmp_path) is False  # at once: no heartbeat age to wait out
    with RunLock(tmp_path):
        assert is_running(tmp_path)
        assert json.loads((tmp_path / "run.lock").read_text())["pid"] == os.getpid()
    assert is_running(tmp_path) is False

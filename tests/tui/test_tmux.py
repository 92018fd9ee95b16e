"""The real app in a real terminal (tmux), as an operator gets it over `ssh -t`: start it,
switch screens, pull the kill switch, quit. Skipped where tmux is not installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.bus import Bus

ROOT = Path(__file__).resolve().parents[2]
TMUX = shutil.which("tmux")
# A shell or CI runner that exports COLUMNS/LINES would size every program in the pane to
# them (Textual asks shutil, which believes the environment first), not to the pane.
TMUX_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed (install.sh --dev installs "
                                            "it; or apt-get install tmux)"),
]


class Terminal:
    """A detached 120x40 tmux session on a private server socket."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(TMUX), "-u", "-L", self.socket, *args], capture_output=True,
                              text=True, timeout=20, check=check, env=TMUX_ENV)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "tui").stdout

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", "tui", check=False).returncode == 0

    def wait_for(self, needle: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if needle in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not on screen after {timeout} s:\n{self.screen()}")

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "tui", *keys)


def test_mission_control_in_a_plain_terminal(bus_state: Path) -> None:
    term = Terminal(f"methtrader-test-{os.getpid()}")
    # Textual draws on stderr, so it is not redirected; a crash shows in the pane.
    command = f"cd {ROOT} && exec {sys.executable} -m tui.app --state-dir {bus_state}"
    term.tmux("-f", "/dev/null", "start-server", ";", "set-option", "-g", "default-size", "120x40",
              ";", "new-session", "-d", "-s", "tui", "-x", "120", "-y", "40",
              "-e", "TERM=xterm-256color", "-e", "LC_ALL=C.UTF-8", command)
    try:
        assert term.tmux("display", "-p", "-t", "tui", "#{window_width}x#{window_height}"
                         ).stdout.strip() == "120x40"
        # Each expectation is awaited on its own: a capture can land between two writes of
        # one frame.
        term.wait_for("bybit-rest")  # the first bus update has arrived
        term.wait_for("DEGRADED  pid 4242")  # drift waits in backoff
        assert "NOT RUNNING" not in term.wait_for("Portfolio value")
        term.keys("2")
        term.wait_for("Time (UTC)")
        term.wait_for("2024-06-01 12:59:00  AVAXUSDT")
        term.keys("k")
        term.wait_for("KILL SWITCH")
        term.keys("y")
        deadline = time.monotonic() + 20
        with Bus(bus_state / "bus") as bus:
            while not bus.maintenance_mode and time.monotonic() < deadline:
                time.sleep(0.1)
            assert bus.maintenance_mode, term.screen()
            assert bus.switch_meta("maintenance_mode")["source"] == "tui"
        term.wait_for("MAINTENANCE ON")
        term.keys("q")
        deadline = time.monotonic() + 20
        while term.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not term.alive(), term.screen()
    finally:
        term.tmux("kill-server", check=False)

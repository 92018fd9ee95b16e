"""Is the appliance running? One answer, from one lock, for ``status`` and the TUI.

``methtrader run`` holds an exclusive ``flock`` on ``<state>/run.lock`` for its whole life. The
kernel drops the lock the moment the process ends, cleanly or by SIGKILL, so unlike a heartbeat
age or a pid (which another process may reuse) the lock cannot outlive the appliance or be
claimed by anyone else. :func:`is_running` tests it with a non-blocking *shared* lock attempt,
which never disturbs the holder and leaves nothing behind.

The lock file also holds the holder's pid and start time, for messages and ``status``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from appliance.paths import StatePaths

ACQUIRE_PATIENCE_S = 2.0  # a reader's probe holds the lock for microseconds: wait those out


class AlreadyRunning(RuntimeError):
    """Another ``methtrader run`` holds this state dir."""


def lock_path(state_dir: Path) -> Path:
    return StatePaths(state_dir).run_lock


def is_running(state_dir: Path) -> bool:
    """True while a ``methtrader run`` holds ``state_dir``'s run lock.

    Opens the lock file read-only and tries a non-blocking shared lock: that fails only while
    the exclusive lock is held. A missing lock file means no run ever started here."""
    try:
        fd = os.open(lock_path(state_dir), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def lock_holder(state_dir: Path) -> dict[str, Any] | None:
    """The pid and start time the last holder wrote (the lock says whether it still holds)."""
    try:
        data = json.loads(lock_path(state_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class RunLock:
    """The exclusive lock ``run`` holds; release it (or exit) and it is gone at once."""

    def __init__(self, state_dir: Path) -> None:
        self.path = lock_path(state_dir)
        self._fd: int | None = None

    def acquire(self, patience_s: float = ACQUIRE_PATIENCE_S) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + patience_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    holder = lock_holder(self.path.parent) or {}
                    since = holder.get("started_at")
                    when = (time.strftime(" since %Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
                            if isinstance(since, (int, float)) else "")
                    raise AlreadyRunning(
                        f"methtrader run is already running on {self.path.parent} (pid "
                        f"{holder.get('pid', '?')}{when}); stop it first or use another "
                        "--state-dir") from None
                time.sleep(0.02)
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started_at": time.time()}).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):  # closing drops the lock whatever happens
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

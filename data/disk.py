"""Whether the disk takes writes: one :class:`DiskState` per appliance, fed by every write.

The store (DuckDB) and the lake (Parquet) pass their writes through :meth:`DiskState.write`. A
write refused for want of space (``OSError`` ENOSPC or EDQUOT, or DuckDB's I/O error saying so)
begins a *disk-full episode*; the next write that succeeds ends it.

Writes run on several threads and overlap, so "next" means next *begun*: each write takes a
ticket when it begins, and an outcome counts only against outcomes of writes begun before it. A
long write that began before the disk filled and finishes after a refusal proves nothing about
the disk now (it does not end the episode), and a refusal of a write begun before a success that
ended the episode does not begin a new one. Without this rule one full disk could be announced
as two episodes. The appliance reads the
state to stop opening positions while it cannot persist them and to say why
(:mod:`appliance.disk_full`).

:meth:`DiskState.inject` makes every write fail with ENOSPC for a bounded time, as a full disk
would (``methtrader chaos``, honoured only where no real order is at stake:
:mod:`appliance.chaos_hook`).

Synchronous and thread-safe: the store's writes run in a worker thread, the services read the
state on the event loop.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
#: how DuckDB and SQLite (the bus) say it, in errors that are not OSErrors
FULL_MESSAGES = ("no space left on device", "disk quota exceeded", "database or disk is full")
MAX_INJECT_S = 600.0  # the longest an injected full disk lasts
PROBE_NAME = ".disk-probe"
PROBE_BYTES = 4096
_MAX_CHAIN = 16  # causes and contexts followed when classifying an exception


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: an ENOSPC/EDQUOT ``OSError`` or an error whose
    message says so (DuckDB's I/O errors, SQLite's), directly or as a cause; an exception group
    when every exception in it does."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_disk_full(e) for e in exc.exceptions)
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < _MAX_CHAIN:
        if isinstance(cur, OSError) and cur.errno in FULL_ERRNOS:
            return True
        if any(m in str(cur).lower() for m in FULL_MESSAGES):
            return True
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return False


class DiskState:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._injected_until = 0.0
        self.since: float | None = None  # wall time the current episode began
        self.reason = ""  # the first refused write of the current episode
        self.episodes = 0  # disk-full episodes so far
        self.refused: Counter[str] = Counter()  # writes refused for want of space, by area
        self._tickets = itertools.count(1)  # next() is atomic: writes on any thread take one
        self._last_refused = 0  # the ticket of the latest-begun write refused
        self._last_ok = 0  # the ticket of the latest-begun write that went through

    @property
    def full(self) -> bool:
        return self.since is not None

    # -- chaos -------------------------------------------------------------------------------

    def inject(self, seconds: float) -> None:
        """Every write fails with ENOSPC for the next ``seconds`` (0 < seconds <=
        :data:`MAX_INJECT_S`), as a full disk would."""
        if not 0.0 < seconds <= MAX_INJECT_S:
            raise ValueError(f"seconds must be in (0, {MAX_INJECT_S:g}], got {seconds}")
        self._injected_until = self._monotonic() + seconds

    def lift(self) -> None:
        """End an injected full disk now."""
        self._injected_until = 0.0

    @property
    def injected_s(self) -> float:
        """Seconds an injected full disk still lasts (0 when none)."""
        return max(0.0, self._injected_until - self._monotonic())

    def check(self, area: str) -> None:
        """Raise the injected ENOSPC while an injection lasts; nothing otherwise."""
        if self._monotonic() < self._injected_until:
            raise OSError(errno.ENOSPC, f"No space left on device (chaos_disk_full: {area} "
                          "write refused)")

    # -- what the writes report --------------------------------------------------------------

    def ticket(self) -> int:
        """Taken when a write begins (before :meth:`check`); handed to :meth:`failed` or
        :meth:`ok` with its outcome."""
        return next(self._tickets)

    def failed(self, area: str, exc: BaseException, ticket: int | None = None) -> None:
        """A write to ``area`` (begun with ``ticket``; None: now) was refused for want of
        space. It begins an episode unless a write begun after it has gone through since."""
        ticket = self.ticket() if ticket is None else ticket
        with self._lock:
            self.refused[area] += 1
            self._last_refused = max(self._last_refused, ticket)
            if self.since is None and ticket > self._last_ok:
                self.since = time.time()
                self.episodes += 1
                self.reason = f"{area} write refused: {exc}"[:300]

    def ok(self, ticket: int | None = None) -> None:
        """A write (begun with ``ticket``; None: now) went through: the disk takes writes again,
        unless a write begun after it has been refused."""
        ticket = self.ticket() if ticket is None else ticket
        with self._lock:
            if ticket < self._last_refused:
                return
            self._last_ok = max(self._last_ok, ticket)
            self.since, self.reason = None, ""

    def write(self, area: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a write to ``area``: refused while an injection lasts; a disk-full
        failure is reported (and raised), a success ends an episode."""
        ticket = self.ticket()
        try:
            self.check(area)
            out = fn(*args)
        except Exception as exc:
            if is_disk_full(exc):
                self.failed(area, exc, ticket)
            raise
        self.ok(ticket)
        return out

    def probe(self, folder: Path) -> bool:
        """Whether a small file can be written, fsynced and removed in ``folder`` now (the
        state dir: the disk of the store and the lake); reported like any write."""
        path = Path(folder) / PROBE_NAME

        def write() -> None:
            try:
                with open(path, "wb") as fh:
                    fh.write(b"\0" * PROBE_BYTES)
                    fh.flush()
                    os.fsync(fh.fileno())
            finally:
                path.unlink(missing_ok=True)

        try:
            self.write("probe", write)
        except OSError:
            return False
        return True

    def snapshot(self) -> dict[str, Any]:
        """For the heartbeat: full?, since when, why, and the refused writes by area."""
        return {"full": self.full, "since": self.since, "reason": self.reason or None,
                "episodes": self.episodes, "refused": dict(self.refused),
                "injected_s": round(self.injected_s, 1)}

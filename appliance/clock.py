"""The market clock: the only source of market time for services.

Two clocks share one small interface (``now()``, ``sleep_until(t)``, ``sleep(dt)``), in seconds
since the Unix epoch:

* :class:`RealClock` follows the wall clock (bybit mode, fake Bybit).
* :class:`VirtualClock` runs ``speed`` virtual seconds per second of trio's own clock. In the
  appliance trio's clock is the normal monotonic one, so ``--speed 600`` makes ten market
  minutes pass each real second; in tests trio's ``MockClock(autojump_threshold=0)`` makes
  virtual days pass instantly and deterministically.

trio itself keeps its normal clock, so network timeouts, shutdown bounds and heartbeats stay in
wall time. The virtual clock's position is saved to the state dir (``clock.json``) and resumes
after a restart, so a 7-day shadow period survives a crash.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Protocol

import trio

from appliance.paths import StatePaths

MINUTE_MS = 60_000


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep_until(self, t: float) -> None: ...

    async def sleep(self, seconds: float) -> None: ...


def now_ms(clock: Clock) -> int:
    return int(clock.now() * 1000)


def floor_minute_ms(ms: int) -> int:
    return ms - ms % MINUTE_MS


class RealClock:
    """Market time is wall time."""

    speed = 1.0

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t: float) -> None:
        await trio.sleep(max(0.0, t - time.time()))

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(max(0.0, seconds))


class VirtualClock:
    """Market time that runs ``speed`` times faster than trio's clock.

    ``start`` is the market time at the moment the clock is anchored to trio's clock: at
    construction inside trio, else at its first use inside trio.

    The appliance may *hold* the clock (:meth:`hold` / :meth:`release`): while any holder holds
    it, market time stands still. The feed holds it when it falls behind, so that at any
    ``--speed`` the market never runs ahead of what the machine can store and trade: a run's
    outcome depends on market time, not on the CPU.
    """

    def __init__(self, start: float, speed: float) -> None:
        if speed <= 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a positive number, got {speed!r}")
        self.speed = float(speed)
        self._start = float(start)
        self._anchor: float | None = None
        self._trio_clock: trio.abc.Clock | None = None
        self._holders: set[str] = set()
        self._held_at: float | None = None  # trio time the clock stopped
        self._held_total = 0.0  # trio seconds spent held, before the current hold
        self._released: trio.Event | None = None
        with contextlib.suppress(RuntimeError):  # built outside trio: anchored on first use
            self._trio_now()

    def _trio_now(self) -> float:
        """trio's time; also from worker threads, through the clock object kept at anchoring
        (``trio.current_time()`` works only on the event loop's thread)."""
        if self._trio_clock is None:
            self._trio_clock = trio.lowlevel.current_clock()
            self._anchor = self._trio_clock.current_time()
        return self._trio_clock.current_time()

    def _running_since_anchor(self, t: float) -> float:
        held = self._held_total + (t - self._held_at if self._held_at is not None else 0.0)
        return t - self._anchor - held  # type: ignore[operator]

    def now(self) -> float:
        try:
            t = self._trio_now()
        except RuntimeError:  # outside trio: the clock has not started running
            return self._start
        return self._start + self._running_since_anchor(t) * self.speed

    @property
    def held(self) -> bool:
        return bool(self._holders)

    def hold(self, holder: str) -> None:
        """Stop market time until every holder has released it (trio thread only)."""
        t = self._trio_now()
        if not self._holders:
            self._held_at = t
            self._released = trio.Event()
        self._holders.add(holder)

    def release(self, holder: str) -> None:
        if holder not in self._holders:
            return
        self._holders.discard(holder)
        if not self._holders and self._held_at is not None:
            self._held_total += self._trio_now() - self._held_at
            self._held_at = None
            if self._released is not None:
                self._released.set()

    def advance_to(self, t: float) -> None:
        """Move market time forward to ``t``; never back (a ``t`` in the past changes nothing)."""
        now = self.now()
        if t > now:
            self._start += t - now

    async def sleep_until(self, t: float) -> None:
        while True:
            if self._holders and self._released is not None:
                await self._released.wait()
                continue
            now = self._trio_now()
            target = now + (t - self.now()) / self.speed
            if target <= now:
                await trio.lowlevel.checkpoint()
                return
            await trio.sleep_until(target)
            if self.now() >= t:
                return

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + max(0.0, seconds))


def _clock_file(state_dir: Path) -> Path:
    return StatePaths(state_dir).clock


# A saved market time outside these bounds is damage, not a date.
EARLIEST_MARKET_TIME = 0.0  # 1970-01-01 UTC
LATEST_MARKET_TIME = 7_258_118_400.0  # 2200-01-01 UTC


class ClockFileError(ValueError):
    """``clock.json`` exists but does not hold a usable market time."""


def load_virtual_clock(state_dir: Path, speed: float, default_start: float) -> VirtualClock:
    """Resume the saved virtual time, or start at ``default_start`` on a fresh state dir."""
    path = _clock_file(state_dir)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(4096)
    except FileNotFoundError:  # a fresh state dir: start at default_start
        return VirtualClock(default_start, speed)
    except OSError as exc:
        raise ClockFileError(f"{path} cannot be read ({exc.strerror})") from None
    try:
        start = json.loads(raw)["market_time"]
        if isinstance(start, bool) or not isinstance(start, (int, float)):
            raise TypeError(f"market_time is {start!r}, not a number")
        start = float(start)
        if not (math.isfinite(start) and EARLIEST_MARKET_TIME <= start <= LATEST_MARKET_TIME):
            raise ValueError(f"market_time {start!r} is not a time between 1970 and 2200")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ClockFileError(f"{path} is damaged ({exc}); delete it to restart the virtual "
                             "clock at the current time") from None
    return VirtualClock(start, speed)


def save_virtual_clock(state_dir: Path, clock: Clock) -> None:
    """Write the market time crash-safely (temp file, fsync, rename)."""
    path = _clock_file(state_dir)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        json.dump({"market_time": clock.now(), "saved_at": time.time()}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

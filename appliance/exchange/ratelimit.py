"""Client-side rate limiting for Bybit: one shared budget, four priorities, server feedback.

Three sources of limits are combined before any request leaves:

* **The shared budget** — a sliding window of permits (by default 600 per 5 s, Bybit's limit
  per IP). Each priority may only take a permit while the window is below its *ceiling*:
  ORDER 100 %, LIVE 98 %, BACKFILL 93 %, DISCOVERY 90 %. A backfill can therefore never use
  the last 7 % (42 requests per 5 s) that the trading path keeps for itself, and a lower
  priority also defers to any higher-priority task already waiting for the shared budget.
  The ceilings are high on purpose: a 90-day backfill of 50 pairs is bound by this budget,
  and each point of ceiling given away is a point of backfill time.
* **Per-endpoint server feedback** — ``X-Bapi-Limit`` / ``-Status`` / ``-Reset-Timestamp``
  give each endpoint's used fraction; the same ceilings apply to it until its reset.
* **Back-off** — ``retCode 10006`` blocks one endpoint, HTTP 403/429 pause everything, until
  the announced reset (capped at ``max_backoff_s``).

Time is trio's clock (``trio.current_time``), so tests run it on ``MockClock(autojump)``;
wall-clock reset timestamps are turned into delays by the caller's reference time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Mapping

import trio

SHARED = "shared"  # the endpoint label under which the shared budget's usage is reported


class Priority(IntEnum):
    """Lower value = more important."""

    ORDER = 0  # orders and account state
    LIVE = 1  # live market data
    BACKFILL = 2
    DISCOVERY = 3


DEFAULT_CEILINGS: Mapping[Priority, float] = {
    Priority.ORDER: 1.0, Priority.LIVE: 0.98, Priority.BACKFILL: 0.93, Priority.DISCOVERY: 0.9}

#: how long server-reported usage is assumed to hold when the reset timestamp is ~now
#: (Bybit's per-UID windows roll over 1 s)
ROLLING_WINDOW_S = 1.0


@dataclass(slots=True)
class _EndpointState:
    limit: int = 0
    remaining: int = 0
    reset_at: float = -math.inf  # trio time when the reported usage stops applying
    blocked_until: float = -math.inf  # set by a 10006


@dataclass(frozen=True, slots=True)
class LimitHeaders:
    limit: int
    remaining: int
    reset_ms: int


def parse_limit_headers(headers: Mapping[str, str]) -> LimitHeaders | None:
    """The three ``X-Bapi-Limit*`` headers, or None when absent or not integers."""
    try:
        limit = int(headers["x-bapi-limit"])
        remaining = int(headers["x-bapi-limit-status"])
        reset_ms = int(headers["x-bapi-limit-reset-timestamp"])
    except (KeyError, ValueError):
        return None
    return LimitHeaders(limit, remaining, reset_ms)


class RateLimiter:
    def __init__(self, capacity: int = 600, window_s: float = 5.0, *,
                 ceilings: Mapping[Priority, float] | None = None,
                 max_backoff_s: float = 120.0,
                 on_usage: Callable[[str, float], None] | None = None) -> None:
        if capacity < 1 or window_s <= 0:
            raise ValueError("capacity must be >= 1 and window_s > 0")
        self.capacity = capacity
        self.window_s = window_s
        self.ceilings = dict(DEFAULT_CEILINGS if ceilings is None else ceilings)
        self.max_backoff_s = max_backoff_s
        self.on_usage = on_usage
        self._permits: deque[float] = deque()
        self._endpoints: dict[str, _EndpointState] = {}
        self._paused_until = -math.inf
        self._waiting_shared = {p: 0 for p in Priority}
        self._changed = trio.Event()
        self.granted = {p: 0 for p in Priority}
        self.waited = {p: 0 for p in Priority}
        self.endpoint_backoffs = 0
        self.global_pauses = 0

    # -- pure decisions (``now`` is trio time) ----------------------------------------------

    def _allowed(self, priority: Priority) -> int:
        return max(1, math.floor(self.ceilings[priority] * self.capacity))

    def _expire(self, now: float) -> None:
        while self._permits and self._permits[0] <= now - self.window_s:
            self._permits.popleft()

    def shared_usage(self, now: float) -> float:
        self._expire(now)
        return len(self._permits) / self.capacity

    def usage(self, endpoint: str, now: float | None = None) -> float:
        """Used fraction of one endpoint's server budget (0 once its window has reset)."""
        now = trio.current_time() if now is None else now
        if endpoint == SHARED:
            return self.shared_usage(now)
        st = self._endpoints.get(endpoint)
        if st is None:
            return 0.0
        if now < st.blocked_until:
            return 1.0
        if st.limit <= 0 or now >= st.reset_at:
            return 0.0
        return min(1.0, max(0.0, (st.limit - st.remaining) / st.limit))

    def usages(self, now: float | None = None) -> dict[str, float]:
        now = trio.current_time() if now is None else now
        out = {ep: self.usage(ep, now) for ep in self._endpoints}
        out[SHARED] = self.shared_usage(now)
        return out

    def max_usage(self, now: float | None = None) -> float:
        return max(self.usages(now).values())

    def wait_time(self, priority: Priority, endpoint: str, now: float) -> tuple[float, bool]:
        """(seconds to wait, whether the wait is for the shared budget) — 0 means go."""
        waits = [0.0]
        if self._paused_until > now:
            waits.append(self._paused_until - now)
        st = self._endpoints.get(endpoint)
        if st is not None:
            if st.blocked_until > now:
                waits.append(st.blocked_until - now)
            elif st.reset_at > now and self.usage(endpoint, now) >= self.ceilings[priority]:
                waits.append(st.reset_at - now)
        endpoint_wait = max(waits)
        self._expire(now)
        allowed = self._allowed(priority)
        n = len(self._permits)
        shared_wait = self._permits[n - allowed] + self.window_s - now if n >= allowed else 0.0
        if endpoint_wait > 0 and endpoint_wait >= shared_wait:
            return endpoint_wait, False
        if shared_wait > 0:
            return shared_wait, True
        if any(self._waiting_shared[p] for p in Priority if p < priority):
            return math.inf, True  # a more important task is queued: wait for it to go first
        return 0.0, False

    # -- acquiring ------------------------------------------------------------------------------

    async def acquire(self, priority: Priority, endpoint: str) -> None:
        """Wait until ``priority`` may send one request to ``endpoint``, then take a permit.

        The loop only ends by taking a permit; each turn sleeps until the computed deadline or
        until the limiter's state changes, so it is bounded by the limits it waits for. Wrap in
        ``trio.fail_after`` for an overall deadline.
        """
        counted_shared = False
        waited = False
        try:
            while True:
                now = trio.current_time()
                wait, for_shared = self.wait_time(priority, endpoint, now)
                if wait <= 0:
                    break
                if for_shared != counted_shared:
                    self._waiting_shared[priority] += 1 if for_shared else -1
                    counted_shared = for_shared
                if not waited:
                    self.waited[priority] += 1
                    waited = True
                changed = self._changed
                with trio.move_on_at(now + wait):
                    await changed.wait()
        finally:
            if counted_shared:
                self._waiting_shared[priority] -= 1
                self._notify()
        now = trio.current_time()
        self._permits.append(now)
        self.granted[priority] += 1
        self._report(SHARED, self.shared_usage(now))

    # -- feedback ---------------------------------------------------------------------------

    def observe(self, endpoint: str, headers: LimitHeaders, reference_ms: int) -> None:
        """Record an endpoint's ``X-Bapi-Limit*`` headers; ``reference_ms`` is "now" in the
        same (server, wall-clock) time base as the reset timestamp."""
        now = trio.current_time()
        st = self._endpoints.setdefault(endpoint, _EndpointState())
        st.limit, st.remaining = headers.limit, headers.remaining
        delay = (headers.reset_ms - reference_ms) / 1000.0
        if delay <= 0.001:
            delay = ROLLING_WINDOW_S
        st.reset_at = now + min(delay, self.max_backoff_s)
        self._report(endpoint, self.usage(endpoint, now))
        self._notify()

    def backoff(self, endpoint: str, delay_s: float) -> float:
        """Block one endpoint (retCode 10006); returns the delay applied."""
        delay = min(max(delay_s, 0.0), self.max_backoff_s)
        now = trio.current_time()
        st = self._endpoints.setdefault(endpoint, _EndpointState())
        st.blocked_until = max(st.blocked_until, now + delay)
        st.remaining = 0
        self.endpoint_backoffs += 1
        self._report(endpoint, 1.0)
        self._notify()
        return delay

    def pause_all(self, delay_s: float) -> float:
        """Pause every request (HTTP 403 IP limit or 429); returns the delay applied."""
        delay = min(max(delay_s, 0.0), self.max_backoff_s)
        self._paused_until = max(self._paused_until, trio.current_time() + delay)
        self.global_pauses += 1
        self._notify()
        return delay

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _report(self, endpoint: str, fraction: float) -> None:
        if self.on_usage is not None:
            self.on_usage(endpoint, fraction)

"""Restarting crashed services: the loop trio does not ship.

A service is an async function that runs until cancelled. When it raises, the supervisor
records the crash (with the traceback) as an incident, waits an exponential backoff with jitter
(capped) and starts it again. A service that crashes ``max_crashes`` times within
``failure_window_s`` is marked *failed* and left down for a cool-down (``failed_retry_s``), so
one poisoned service cannot spin the CPU while the others keep running; then it is tried again
from a clean slate (a cause that went away heals itself). An exchange outage is not a crash at
all (:mod:`appliance.outage`), and neither is a full disk: a service whose write was refused for
want of space (:func:`data.disk.is_disk_full`) is marked *degraded*, waits (half a second,
doubling to :data:`DISK_MAX_WAIT_S`) and starts again, however often, never counted toward
failed; the appliance says once that the disk is full (:mod:`appliance.disk_full`). An error
marked ``fatal`` (a damaged DuckDB file, :class:`appliance.store.StoreDamaged`) is not
restarted at all: restarting cannot mend it, so it is recorded and raised, and ``run`` stops.

All waiting here uses trio's clock (wall time in the appliance), never the market clock:
recovery time is a real-time promise (a crashed service is healthy again in < 2 s).
"""

from __future__ import annotations

import random
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import trio

from appliance.config import SupervisorConfig
from appliance.logs import service_logger
from data.disk import is_disk_full

ServiceFn = Callable[[], Awaitable[None]]

STARTING, RUNNING, BACKOFF, FAILED, STOPPED = "starting", "running", "backoff", "failed", "stopped"
DEGRADED = "degraded"  # waiting for disk space to start again

DISK_FIRST_WAIT_S = 0.5
DISK_MAX_WAIT_S = 2.0  # a service waiting for disk space tries again at least this often
DISK_CALM_S = 30.0  # a run this long without a full disk starts the waits from the first again


def disk_wait(waits: int) -> float:
    """Seconds before the ``waits``-th consecutive try (1-based) of a service whose write was
    refused for want of space."""
    return min(DISK_MAX_WAIT_S, DISK_FIRST_WAIT_S * 2.0 ** max(0, waits - 1))


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float,
                  u: float) -> float:
    """Delay before restart number ``attempt + 1`` (attempt 0 = the first restart).

    ``initial * 2**attempt`` plus up to ``jitter`` of it at random (``u`` in [0, 1)), never more
    than ``maximum``. Jitter keeps services that crashed together from restarting in lockstep.
    """
    base = initial * (2.0 ** min(attempt, 60))
    return min(maximum, base * (1.0 + jitter * u))


@dataclass
class ServiceState:
    name: str
    state: str = STARTING
    restarts: int = 0
    last_error: str | None = None
    crash_times: deque[float] = field(default_factory=deque)
    last_crash_at: float | None = None
    recovered_in_s: float | None = None  # last crash → running again, trio time
    scope: trio.CancelScope | None = None  # the running instance's, for an injected crash
    crash_requested: str | None = None  # why a chaos crash was injected, until it lands
    disk_waits: int = 0  # consecutive runs that ended on a full disk

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "restarts": self.restarts, "last_error": self.last_error,
                "recovered_in_s": self.recovered_in_s}


IncidentFn = Callable[[str, str, str, str | None], Awaitable[None]]


class ChaosCrash(RuntimeError):
    """A crash injected on purpose (``methtrader chaos``), recorded as any other crash."""


class Supervisor:
    def __init__(self, cfg: SupervisorConfig, *, on_incident: IncidentFn | None = None,
                 on_restart: Callable[[str], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.states: dict[str, ServiceState] = {}
        self._on_incident = on_incident
        self._on_restart = on_restart
        self._rng = rng or random.Random()
        self._log = service_logger("supervisor")

    def snapshot(self) -> dict[str, dict[str, object]]:
        return {name: st.as_dict() for name, st in self.states.items()}

    def inject_crash(self, name: str, why: str = "chaos experiment") -> bool:
        """Crash service ``name`` now: its running instance is cancelled at its next checkpoint
        (its ``finally`` blocks run, as for a real exception) and the supervisor then treats it
        exactly as an exception escaping the service. False when it is not running."""
        st = self.states.get(name)
        if st is None or st.state != RUNNING or st.scope is None:
            return False
        st.crash_requested = why
        st.scope.cancel()
        return True

    async def _incident(self, service: str, kind: str, message: str, tb: str | None) -> None:
        if self._on_incident is None:
            return
        try:
            await self._on_incident(service, kind, message, tb)
        except Exception:  # recording must never take the supervisor down
            self._log.exception("could not record incident", service_name=service)

    async def _restarting(self, st: ServiceState, what: str, after: str) -> None:
        """Count the restart of ``st``'s service that follows now and announce it: the
        ``on_restart`` callback and a restart incident, "``what`` #n after ``after``"."""
        st.restarts += 1
        if self._on_restart is not None:
            self._on_restart(st.name)
        await self._incident(st.name, "restart", f"{what} #{st.restarts} after {after}", None)

    async def _wait_for_disk(self, st: ServiceState, exc: Exception, ran_s: float) -> None:
        """``st``'s service ended on a write refused for want of space: no crash (nothing is
        recorded against it); it is degraded until it starts again after :func:`disk_wait`."""
        if ran_s >= DISK_CALM_S:
            st.disk_waits = 0
        st.disk_waits += 1
        st.state = DEGRADED
        st.last_error = f"disk full: {exc}"[:300]
        if st.disk_waits == 1:
            self._log.warning("disk full: the service waits for space and starts again",
                              service_name=st.name, error=str(exc)[:300])
        await trio.sleep(disk_wait(st.disk_waits))

    async def supervise(self, name: str, fn: ServiceFn,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run ``fn`` until it returns or is cancelled, restarting it after crashes."""
        st = self.states.setdefault(name, ServiceState(name))
        task_status.started()
        while True:
            st.state = RUNNING
            began = trio.current_time()
            if st.last_crash_at is not None:
                st.recovered_in_s = began - st.last_crash_at
            try:
                with trio.CancelScope() as st.scope:
                    await fn()
                if st.crash_requested is not None:  # cancelled by inject_crash
                    why, st.crash_requested = st.crash_requested, None
                    raise ChaosCrash(f"injected crash in {name}: {why}")
            except Exception as exc:  # Cancelled is a BaseException and passes through
                if getattr(exc, "fatal", False):
                    st.state = FAILED
                    st.last_error = f"{type(exc).__name__}: {exc}"
                    self._log.critical("fatal error: the appliance stops", service_name=name,
                                       error=st.last_error)
                    await self._incident(name, "fatal", st.last_error,
                                         "".join(traceback.format_exception(exc)))
                    raise
                if is_disk_full(exc):
                    await self._wait_for_disk(st, exc, trio.current_time() - began)
                    continue
                st.disk_waits = 0
                now = trio.current_time()
                tb = "".join(traceback.format_exception(exc))
                st.last_error = f"{type(exc).__name__}: {exc}"
                st.last_crash_at = now
                st.crash_times.append(now)
                while st.crash_times and st.crash_times[0] < now - self.cfg.failure_window_s:
                    st.crash_times.popleft()
                self._log.error("service crashed", service_name=name, error=st.last_error)
                await self._incident(name, "crash", st.last_error, tb)
                if len(st.crash_times) >= self.cfg.max_crashes:
                    st.state = FAILED
                    msg = (f"{name} crashed {len(st.crash_times)} times within "
                           f"{self.cfg.failure_window_s:g}s; marked failed, tried again in "
                           f"{self.cfg.failed_retry_s:g}s")
                    self._log.error(msg, service_name=name)
                    await self._incident(name, "failed", msg, None)
                    await trio.sleep(self.cfg.failed_retry_s)
                    st.crash_times.clear()
                    await self._restarting(st, "retry", f"a {self.cfg.failed_retry_s:g}s "
                                           "cool-down")
                    continue
                st.state = BACKOFF
                delay = backoff_delay(len(st.crash_times) - 1, self.cfg.backoff_initial_s,
                                      self.cfg.backoff_max_s, self.cfg.backoff_jitter,
                                      self._rng.random())
                await trio.sleep(delay)
                await self._restarting(st, "restart", f"{delay:.2f}s backoff")
                continue
            except BaseException:
                st.state = STOPPED
                raise
            st.state = STOPPED
            return

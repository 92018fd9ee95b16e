"""A full disk is a state of the appliance, not a crash.

Every write of the store (DuckDB) and the lake (Parquet) reports to the appliance's one
:class:`~data.disk.DiskState` (``ctx.disk``): a write refused for want of space begins a
*disk-full episode*, the next write that goes through ends it. Meanwhile:

* a service whose write was refused is not crashed: the supervisor marks it *degraded*, waits
  at most 2 s and starts it again, never counting it toward failed
  (:mod:`appliance.supervision`); the feed's pass that could not be stored is fetched again
  whole, so no minute is lost or stored twice;
* the trading engine is REDUCING (:func:`appliance.risk.trading_state`): it refuses every order
  that would open or increase a position (reason ``disk_full``) and lets reducing and closing
  orders through; what its bars produced waits in memory and is written once the disk is back;
* the heartbeat shows the trading service degraded with the reason (:func:`reducing_why`) and
  the disk's state (``disk`` in the heartbeat);
* :class:`DiskWatch` (run by the heartbeat service) says so once per episode: an ``outage``
  incident of service ``disk`` on the bus at once (it reaches DuckDB once DuckDB can be
  written) and a log line. While the disk is full it probes it (a small file written, fsynced
  and removed in the state dir) every :data:`PROBE_EVERY_S`, so the episode ends within a
  second of space returning even when no service writes; the end is a ``recovered`` incident
  with the episode's length.
"""

from __future__ import annotations

import time

import trio

from appliance.context import ServiceContext
from appliance.contracts import Event
from appliance.logs import service_logger
from data.disk import is_disk_full

NAME = "disk"
PROBE_EVERY_S = 1.0
REDUCING_WHY = ("disk full: no new or larger positions (only reducing orders) until writes "
                "succeed again")


def reducing_why(ctx: ServiceContext) -> str | None:
    """Why the trading engine only reduces positions because of the disk, or None."""
    return REDUCING_WHY if ctx.disk.full else None


class DiskWatch:
    """Announces the disk-full episodes of ``ctx.disk``; :meth:`tick` at every heartbeat."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.log = service_logger(NAME)
        self.announced = 0  # the episode announced last
        self.began: float | None = None  # wall time of the episode in progress, announced
        self.probed_at = -PROBE_EVERY_S  # trio time of the last probe
        self.unrecorded: list[tuple[str, str, float]] = []  # (kind, message, ts) for DuckDB

    async def tick(self) -> None:
        ctx, disk = self.ctx, self.ctx.disk
        if disk.full and trio.current_time() - self.probed_at >= PROBE_EVERY_S:
            self.probed_at = trio.current_time()
            await ctx.io(disk.probe, ctx.cfg.state_path)
        if disk.full and disk.episodes != self.announced:
            self.announced, self.began = disk.episodes, disk.since or time.time()
            message = f"disk full: {disk.reason}; {REDUCING_WHY}"
            self.log.error("disk full: writes refused; trading only reduces positions",
                           reason=disk.reason)
            self._incident("outage", message, self.began)
        elif not disk.full and self.began is not None:
            lasted = time.time() - self.began
            self.began = None
            message = f"disk takes writes again after {lasted:.1f}s"
            self.log.info(message)
            self._incident("recovered", message, time.time())
        if self.unrecorded and not disk.full:
            await self._record()

    def _incident(self, kind: str, message: str, ts: float) -> None:
        self.ctx.bus.publish(Event.INCIDENT, {"service": NAME, "kind": kind, "message": message},
                             service=NAME, market_ts=self.ctx.clock.now())
        self.unrecorded.append((kind, message, ts))

    async def _record(self) -> None:
        """Copy the announced incidents into DuckDB (kept for later when it refuses them)."""
        while self.unrecorded:
            kind, message, ts = self.unrecorded[0]
            try:
                await self.ctx.store.call("record_incident", NAME, kind, message, None, ts)
            except Exception as exc:
                if is_disk_full(exc):
                    return
                raise
            self.unrecorded.pop(0)

"""An exchange outage is a state of a service, not a crash.

A service that talks to the exchange (the feed, discovery) meets errors that are the venue's,
not its own: 5xx, dropped sockets, a rate-limit storm. Letting them escape made the supervisor
count them as crashes, and five of them in five minutes left the feed down for good. Instead the
service keeps running *degraded*: :meth:`Outage.failed` records the outage once (an incident and
an event when it begins), marks the service degraded (``status`` and the TUI say DEGRADED), and
waits a backoff that doubles from half a second up to :data:`MAX_WAIT_S` of wall time, so the
service notices the venue's return within seconds; :meth:`Outage.ok` ends it (an incident with
its duration). Waiting is on trio's clock (wall time in the appliance), never the market clock:
an outage is a real-time event.
"""

from __future__ import annotations

import trio

from appliance.context import ServiceContext
from appliance.contracts import Event
from appliance.logs import service_logger

FIRST_WAIT_S = 0.5
#: the longest a service waits between two tries at a venue that is down: short enough that
#: data flows again within 10 s of the venue's return even after a long outage
MAX_WAIT_S = 5.0


def outage_wait(failures: int) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
    return min(MAX_WAIT_S, FIRST_WAIT_S * 2.0 ** max(0, failures - 1))


class Outage:
    def __init__(self, ctx: ServiceContext, service: str) -> None:
        self.ctx = ctx
        self.service = service
        self.failures = 0
        self.since: float | None = None  # trio time the outage began
        self.log = service_logger(service)

    @property
    def active(self) -> bool:
        return self.since is not None

    async def failed(self, exc: Exception) -> None:
        """The venue failed a call: record the outage when it begins, then wait the backoff.
        An error marked ``fatal`` (Bybit refused the API key) is no outage: it is raised, and
        the supervisor stops ``run`` with maintenance mode ON."""
        if getattr(exc, "fatal", False):
            raise exc
        self.failures += 1
        reason = f"exchange outage: {type(exc).__name__}: {exc}"
        self.ctx.degraded[self.service] = reason
        if self.since is None:
            self.since = trio.current_time()
            self.log.warning("exchange outage: degraded, retrying", error=str(exc))
            await self.ctx.store.call("record_incident", self.service, "outage", reason, None)
            self.ctx.bus.publish(Event.INCIDENT, {"service": self.service, "kind": "outage",
                                              "message": reason}, service=self.service)
        self.ctx.beat(self.service)
        await trio.sleep(outage_wait(self.failures))

    async def ok(self) -> None:
        """A call went through: an outage in progress is over (and a mark left by an earlier
        run of the service, which died degraded, goes too)."""
        if self.since is None:
            self.ctx.degraded.pop(self.service, None)
            return
        lasted = trio.current_time() - self.since
        self.since, self.failures = None, 0
        self.ctx.degraded.pop(self.service, None)
        msg = f"exchange back after {lasted:.1f}s"
        self.log.info(msg)
        await self.ctx.store.call("record_incident", self.service, "recovered", msg, None)
        self.ctx.bus.publish(Event.INCIDENT, {"service": self.service, "kind": "recovered",
                                          "message": msg}, service=self.service)

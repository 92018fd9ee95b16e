"""The ``alerts`` service: pages the on-call person, through the notifier, for what the bus
records — kill switch changes (who, why), crashing or failed services, incidents, jobs that failed
their last attempt (:mod:`appliance.alert_rules` decides which) — and sends a daily summary at
``notify.daily_at`` (market time, UTC).

It reads the bus from a cursor kept on the bus (``alerts:seq``), so an incident raised while it
restarts is still sent, and a fresh state dir does not page its past. The summary's day is kept
there too (``alerts:daily``), so a restart around the hour sends it once.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from appliance.alert_rules import WATCHED, alert_for
from appliance.context import ServiceContext
from appliance.contracts import Event
from appliance.logs import service_logger
from appliance.notify import Notifier
from appliance.schedule import DAY_S, day_tag, next_daily, parse_hhmm

NAME = "alerts"
CURSOR = "alerts:seq"
DAILY = "alerts:daily"  # {"end": market time the last summary covered to, "incident": last id}
POLL_S = 0.5


def summary_text(day: str, f: dict[str, Any]) -> str:
    """One message a day: equity and its change, trades, models changed, incidents."""
    start, end = f.get("equity_start"), f.get("equity_end")
    if end is None:
        equity = "no equity recorded yet"
    elif start is None or start == 0:
        equity = f"equity {end:,.2f} USD"
    else:
        equity = f"equity {end:,.2f} USD, P&L {end - start:+,.2f} ({(end - start) / start:+.2%})"
    changes = ", ".join(f"{n} → {mode}" for mode, n in f["model_changes"].items()) or "none"
    incidents = ", ".join(f"{n} {kind}" for kind, n in f["incidents"].items()) or "none"
    return (f"{day}: {equity}; {f['trades']} trades ({f['fills']} fills); models changed: "
            f"{changes}; incidents: {incidents}")


class Alerts:
    def __init__(self, ctx: ServiceContext, notifier: Notifier) -> None:
        self.ctx, self.notifier = ctx, notifier
        self.log = service_logger(NAME)
        cursor = ctx.bus.cache.get(CURSOR)
        self.seq = int(cursor) if isinstance(cursor, int) else ctx.bus.last_event_seq()
        at = ctx.cfg.notify.daily_at
        self.daily_at = parse_hhmm(at) if at else None

    def tick(self) -> int:
        """Page for the bus events since the cursor (and count incidents and promotions for
        Prometheus); the number of alerts raised."""
        events = self.ctx.bus.events_since(self.seq, kinds=[*WATCHED, Event.MODEL_TRANSITION])
        raised = 0
        for event in events:
            self.count(event)
            alert = alert_for(event)
            if alert is not None:
                self.notifier.notify(alert.kind, alert.text, alert.data, key=alert.key)
                raised += 1
        if events:
            self.seq = max(int(e["seq"]) for e in events)
        last = self.ctx.bus.last_event_seq()
        if last > self.seq and not events:
            self.seq = last  # only unwatched events came: move on
        self.ctx.bus.cache.set(CURSOR, self.seq)
        return raised

    def count(self, event: dict[str, Any]) -> None:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        if event["kind"] == Event.INCIDENT:
            self.ctx.metrics.incidents_total.labels(str(data.get("kind", "?"))).inc()
        elif event["kind"] == Event.MODEL_TRANSITION and data.get("to_mode") == "prod":
            self.ctx.metrics.promotions_total.inc()

    async def daily(self) -> bool:
        """Send the summary of the market day that ended at the last ``daily_at``, once."""
        if self.daily_at is None:
            return False
        now = self.ctx.clock.now()
        end = next_daily(now, self.daily_at) - DAY_S  # the latest daily_at at or before now
        state = self.ctx.bus.cache.get(DAILY)
        if not isinstance(state, dict):  # a fresh appliance counts from now, not its past
            self.ctx.bus.cache.set(DAILY, {"end": end, "incident": await self._last_incident()})
            return False
        if state.get("end", 0) >= end:
            return False
        tag = day_tag(end)
        figures = await self.ctx.store.call("day_summary", int((end - DAY_S) * 1000),
                                            int(end * 1000), int(state.get("incident", 0)))
        text = summary_text(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(end)), figures)
        self.notifier.notify("daily_summary", text, figures, key=tag)
        self.ctx.bus.cache.set(DAILY, {"end": end, "incident": figures["last_incident_id"]})
        self.log.info("daily summary sent", day=tag)
        return True

    async def _last_incident(self) -> int:
        rows = await self.ctx.store.call("sql", "SELECT coalesce(max(id), 0) FROM incidents")
        return int(rows[0][0])


async def run(ctx: ServiceContext, notifier: Notifier) -> None:
    alerts = Alerts(ctx, notifier)
    while True:
        ctx.beat(NAME)
        alerts.tick()
        await alerts.daily()
        await trio.sleep(POLL_S)

"""Which bus events page a person, and how they read: a pure function from one event to at most
one :class:`Alert`.

The bus already carries every incident, switch change and job outcome; this is the one place
that decides which of them reach the webhook. Kinds a service already notifies itself (the
chaos service's results, the disk guard's lake trim, the risk service's freezes) are left out
here so that nothing is sent twice. ``key`` names the alert's subject within its kind, so that
the notifier folds repeats (a crash loop is one message); ``None`` is never folded (each kill
switch change is its own message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.contracts import Event

#: incident kinds another service notifies itself, or that only accompany another incident
NOTIFIED_ELSEWHERE = frozenset({"chaos", "disk", "restart"})
#: the risk service's own switch changes (it notifies them with the drawdown figures)
RISK_ACTOR = "risk"


@dataclass(frozen=True)
class Alert:
    kind: str
    text: str
    key: str | None
    data: dict[str, Any]


def _who(data: dict[str, Any]) -> str:
    reason = data.get("reason") or "no reason given"
    return f"by {data.get('actor') or 'unknown'}: {reason}"


def _switch(data: dict[str, Any]) -> Alert | None:
    name, on = data.get("name"), bool(data.get("value"))
    if name == "maintenance_mode":
        what = ("kill switch ON: no new orders" if on
                else "kill switch OFF: trading resumes")
        return Alert("kill_switch", f"{what} ({_who(data)})", None, data)
    if name == "deploys_frozen" and data.get("actor") != RISK_ACTOR:
        what = "deploys frozen" if on else "deploys unfrozen"
        return Alert("deploys_frozen" if on else "deploys_unfrozen", f"{what} ({_who(data)})",
                     None, data)
    return None


def _incident(data: dict[str, Any]) -> Alert | None:
    kind, service = str(data.get("kind", "")), str(data.get("service", "?"))
    message = str(data.get("message", ""))
    if kind in NOTIFIED_ELSEWHERE:
        return None
    if kind == "crash":
        return Alert("service_crash", f"{service} crashed: {message}", service, data)
    if kind == "failed":
        return Alert("service_failed", f"{service} failed and is stopped until its retry: "
                     f"{message}", service, data)
    if kind == "outage":
        return Alert("outage", f"{service}: {message}", service, data)
    if kind == "recovered":
        return Alert("recovered", f"{service}: {message}", service, data)
    return Alert(f"incident:{kind}", f"{service}: {message}", f"{service}:{kind}", data)


def _job_failed(data: dict[str, Any]) -> Alert:
    args = data.get("args") or []
    subject = f"{data.get('job')} {args[0]}" if args else str(data.get("job"))
    return Alert("job_failed", f"{subject} failed after {data.get('attempts')} attempts: "
                 f"{data.get('error')}", subject, data)


def alert_for(event: dict[str, Any]) -> Alert | None:
    """The alert for one bus event (``{"kind", "data", ...}`` as ``Bus.events_since`` gives
    it), or None when it does not page anyone."""
    data = event.get("data") or {}
    if not isinstance(data, dict):
        return None
    kind = event.get("kind")
    if kind == Event.SWITCH:
        return _switch(data)
    if kind == Event.INCIDENT:
        return _incident(data)
    if kind == Event.JOB_FAILED:
        return _job_failed(data)
    return None


WATCHED = (Event.SWITCH, Event.INCIDENT, Event.JOB_FAILED)

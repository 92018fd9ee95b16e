"""Keeping the two switches honest: settled at start, watched while ``run`` runs.

The bus reads a missing or malformed switch as ON (:mod:`appliance.bus`); this module is how
``run`` gets from there to a known state and keeps it known:

* **At start** (:func:`settle_at_start`): a fresh state dir starts with both switches off; a
  switch the bus lost is restored from DuckDB's ``audit_log`` (the newest ``name=on/off`` row
  wins); when the bus and ``audit_log`` disagree, or neither knows, the switch goes ON. A kill
  file left by ``kill`` while the bus was broken turns into an audited ON.
* **While running** (:class:`SwitchWatch`, polled by the operator service): a switch whose
  record has no journal entry behind it (a direct diskcache write, say) is an "unaudited change":
  an audit row, an incident, and the switch set ON, since nothing proves the change was meant.

Every change made here is a journalled ``set_switch`` (so it reaches ``audit_log``) with the
reason spelled out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from appliance.bus import SWITCHES, Bus, switch_action, switch_value
from appliance.safety import read_kill_file, remove_kill_file
from appliance.store import Store

ACTOR = "appliance"
Incident = Callable[[str, str], Awaitable[None]]  # (kind, message)


@dataclass(frozen=True)
class Entry:
    """One switch change as ``audit_log`` (or the bus journal) recorded it."""

    value: bool
    ts: float
    seq: int | None
    actor: str
    reason: str


def _parse(action: str) -> tuple[str, bool] | None:
    name, _, word = action.partition("=")
    if name in SWITCHES and word in ("on", "off"):
        return name, word == "on"
    return None


def audit_log_switches(store: Store) -> tuple[dict[str, Entry], dict[int, str]]:
    """From DuckDB: the newest entry per switch, and every switch action by bus sequence
    number (runs in the store's thread)."""
    actions = [switch_action(n, v) for n in SWITCHES for v in (True, False)]
    rows = store.sql("SELECT action, ts, bus_seq, actor, reason FROM audit_log "
                     f"WHERE action IN ({', '.join('?' * len(actions))}) ORDER BY ts, id",
                     actions)
    latest: dict[str, Entry] = {}
    by_seq: dict[int, str] = {}
    for action, ts, seq, actor, reason in rows:
        name, value = _parse(action)  # type: ignore[misc]
        latest[name] = Entry(value, float(ts), seq, actor, reason)
        if seq is not None:
            by_seq[int(seq)] = action
    return latest, by_seq


def journal_switches(entries: list[dict[str, Any]]) -> dict[int, str]:
    return {int(e["seq"]): e["action"] for e in entries if _parse(str(e.get("action", "")))}


def _read(bus: Bus, name: str) -> Any:
    try:
        return bus.switch_record(name)
    except Exception:  # unreadable counts as malformed: it fails closed
        return None


def is_journalled(record: Any, name: str, known: dict[int, str]) -> bool:
    value = switch_value(record)
    return value is not None and known.get(record.get("seq")) == switch_action(name, value)


async def settle_at_start(bus: Bus, store_call: Callable[..., Awaitable[Any]], *, fresh: bool,
                          incident: Incident) -> dict[str, bool]:
    """Bring both switches to a journalled state before any service starts; returns them.

    ``store_call(fn, *args)`` runs ``fn(store, *args)`` in the store's thread."""
    await honour_kill_file(bus, incident)  # first: an ON from it is the newest word
    latest, known = await store_call(audit_log_switches)
    known.update(journal_switches(bus.audit_entries(0)))
    for name in SWITCHES:
        record = _read(bus, name)
        value = switch_value(record)
        last = latest.get(name)
        if is_journalled(record, name, known):
            if (last is not None and last.value != value and last.seq != record.get("seq")
                    and last.ts > float(record.get("ts") or 0)):
                why = (f"the bus says {name} is {'on' if value else 'off'} but audit_log's "
                       f"newer entry says {'on' if last.value else 'off'}: fail closed, ON")
                bus.set_switch(name, True, actor=ACTOR, reason=why, source=ACTOR)
                await incident("switch_disagreement", why)
            continue
        if record is None and last is not None:
            when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last.ts))
            why = (f"restored from audit_log: the bus had lost {name}; the last entry there "
                   f"(by {last.actor} at {when}) says {'on' if last.value else 'off'}")
            bus.set_switch(name, last.value, actor=ACTOR, reason=why, source=ACTOR,
                           details={"restored_from_seq": last.seq})
            await incident("switch_restored", f"{name} {why}")
        elif record is None and fresh:
            bus.set_switch(name, False, actor=ACTOR, reason="initialised on a fresh state dir",
                           source=ACTOR)
        elif record is None:
            why = (f"{name} is missing from the bus and audit_log has no entry for it: "
                   "fail closed, ON until an operator turns it off")
            bus.set_switch(name, True, actor=ACTOR, reason=why, source=ACTOR)
            await incident("switch_restored", why)
        elif isinstance(record, bool) and last is not None and last.value == record:
            bus.set_switch(name, record, actor=ACTOR, reason="switch record rewritten in the "
                           "journalled format (unchanged)", source=ACTOR)
        else:
            await unaudited_change(bus, name, record, incident)
    return {name: bus.switch(name) for name in SWITCHES}


async def unaudited_change(bus: Bus, name: str, record: Any, incident: Incident) -> None:
    found = switch_value(record)
    shown = "off" if found is False else "on" if found else f"{type(record).__name__} {record!r}"
    why = (f"unaudited change: {name} became {shown[:80]} on the bus with no journal entry "
           "behind it; set ON (fail closed)")
    bus.audit(actor=ACTOR, action=f"{name} unaudited change", reason=why,
              details={"found": repr(record)[:200]})
    bus.set_switch(name, True, actor=ACTOR, reason=why, source=ACTOR)
    await incident("unaudited_switch_change", why)


async def honour_kill_file(bus: Bus, incident: Incident) -> bool:
    """A kill file (written by ``kill`` when the bus was broken) becomes an audited ON."""
    entry = read_kill_file(bus.path.parent)
    if entry is None:
        return False
    reason = f"kill file: {entry.get('reason', '')}"
    bus.set_switch(SWITCHES[0], True, actor=str(entry.get("actor", "unknown")), reason=reason,
                   source="kill-file", details={"kill_file": entry})
    remove_kill_file(bus.path.parent)
    earlier = entry.get("earlier") if isinstance(entry.get("earlier"), list) else []
    await incident("kill_file", f"maintenance_mode ON from a kill file by "
                   f"{entry.get('actor', 'unknown')}: {entry.get('reason', '')}"
                   + (f" (and {len(earlier)} earlier kill(s) in the audit log's details)"
                      if earlier else ""))
    return True


class SwitchWatch:
    """Watches the switches on the bus between ticks (the operator service's loop)."""

    def __init__(self, bus: Bus, known: dict[int, str] | None = None) -> None:
        """``known``: switch actions by sequence number already in ``audit_log`` (a record may
        name an entry that only DuckDB still has, e.g. after the bus journal was lost)."""
        self.bus = bus
        self._known: dict[int, str] = dict(known or {})
        self._after = 0
        self._seen: dict[str, Any] = {}

    async def tick(self, incident: Incident) -> None:
        await honour_kill_file(self.bus, incident)
        for name in SWITCHES:
            record = _read(self.bus, name)
            if name in self._seen and record == self._seen[name]:
                continue
            self._refresh()
            if not is_journalled(record, name, self._known):
                await unaudited_change(self.bus, name, record, incident)
                self._refresh()
                record = _read(self.bus, name)
            self._seen[name] = record

    def _refresh(self) -> None:
        entries = self.bus.audit_entries(self._after)
        self._known.update(journal_switches(entries))
        if entries:
            self._after = max(int(e["seq"]) for e in entries)

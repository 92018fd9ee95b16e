"""The bus: a diskcache directory shared by the appliance, the CLI and the TUI.

It is multi-process safe and survives restarts, so the kill switch works even when the
appliance (or one of its services) is down: ``methtrader kill`` writes the switch here, and the
trading path reads it before every order.

Layout under ``<state>/bus``:

* the main cache: switches (``switch:maintenance_mode``, ``switch:deploys_frozen``),
  ``tradable_pairs``, heartbeats, snapshots for the dashboard and ``status``;
* ``events/``: a bounded deque of events, each with a sequence number (trade,
  training_progress, data_source_update, incident, ...);
* ``commands/``: a deque of operator commands (tui/cli → appliance);
* ``audit/``: the operator's audit journal, copied by ``run`` into DuckDB's ``audit_log``.

The cache is opened with ``eviction_policy="none"``: a size limit must never evict the kill
switch.
"""

from __future__ import annotations

import getpass
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

import diskcache

MAINTENANCE_MODE = "maintenance_mode"
DEPLOYS_FROZEN = "deploys_frozen"
SWITCHES = (MAINTENANCE_MODE, DEPLOYS_FROZEN)


def operator_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return f"uid{os.getuid()}"


class Bus:
    def __init__(self, path: Path | str, events_maxlen: int = 10_000) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        opts = dict(eviction_policy="none", size_limit=2**40, timeout=30)
        self.cache = diskcache.Cache(str(self.path), **opts)
        self._events = diskcache.Deque(directory=str(self.path / "events"), maxlen=events_maxlen)
        self._commands = diskcache.Deque(directory=str(self.path / "commands"))
        self._audit = diskcache.Deque(directory=str(self.path / "audit"))

    def close(self) -> None:
        for store in (self.cache, self._events._cache, self._commands._cache, self._audit._cache):
            store.close()

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- switches ----------------------------------------------------------------------------

    def switch(self, name: str) -> bool:
        if name not in SWITCHES:
            raise KeyError(f"unknown switch {name!r}; switches: {', '.join(SWITCHES)}")
        return bool(self.cache.get(f"switch:{name}", False))

    @property
    def maintenance_mode(self) -> bool:
        return self.switch(MAINTENANCE_MODE)

    @property
    def deploys_frozen(self) -> bool:
        return self.switch(DEPLOYS_FROZEN)

    def set_switch(self, name: str, value: bool, *, actor: str, reason: str,
                   source: str = "cli") -> dict[str, Any]:
        """Flip a switch and journal who, when and why (one audit entry per change)."""
        self.switch(name)
        self.cache.set(f"switch:{name}", bool(value))
        self.cache.set(f"switch:{name}:meta", {"actor": actor, "reason": reason,
                                                "ts": time.time(), "source": source})
        entry = self.audit(actor=actor, action=f"{name}={'on' if value else 'off'}",
                           reason=reason, details={"source": source})
        self.publish("switch", {"name": name, "value": bool(value), "actor": actor,
                                "reason": reason}, service=source)
        return entry

    def switch_meta(self, name: str) -> dict[str, Any] | None:
        return self.cache.get(f"switch:{name}:meta")

    # -- shared state ------------------------------------------------------------------------

    def set_tradable_pairs(self, symbols: Iterable[str]) -> None:
        self.cache.set("tradable_pairs", sorted(symbols))

    def tradable_pairs(self) -> list[str] | None:
        return self.cache.get("tradable_pairs")

    def put_snapshot(self, name: str, data: Any) -> None:
        self.cache.set(f"snapshot:{name}", {"ts": time.time(), "data": data})

    def snapshot(self, name: str) -> Any:
        entry = self.cache.get(f"snapshot:{name}")
        return None if entry is None else entry["data"]

    def snapshot_with_age(self, name: str) -> tuple[Any, float | None]:
        """A snapshot and its age in seconds, read together (None, None when absent)."""
        entry = self.cache.get(f"snapshot:{name}")
        if entry is None:
            return None, None
        return entry["data"], time.time() - entry["ts"]

    def snapshot_age(self, name: str) -> float | None:
        entry = self.cache.get(f"snapshot:{name}")
        return None if entry is None else time.time() - entry["ts"]

    def beat(self, data: dict[str, Any]) -> None:
        """The appliance's heartbeat (wall-clock time) with per-service states."""
        self.cache.set("heartbeat", {**data, "wall_ts": time.time()})

    def heartbeat(self) -> dict[str, Any] | None:
        return self.cache.get("heartbeat")

    def heartbeat_age(self) -> float | None:
        hb = self.heartbeat()
        return None if hb is None else max(0.0, time.time() - hb["wall_ts"])

    def counter_incr(self, name: str, delta: int = 1) -> int:
        return self.cache.incr(f"counter:{name}", delta)

    def counter(self, name: str) -> int:
        return int(self.cache.get(f"counter:{name}", 0))

    # -- events ------------------------------------------------------------------------------

    def publish(self, kind: str, data: dict[str, Any], *, service: str = "appliance",
                market_ts: float | None = None) -> int:
        """Append an event; its sequence number is unique and increasing across processes."""
        with self._events.transact():
            seq = self.cache.incr("events_seq")
            self._events.append({"seq": seq, "ts": time.time(), "market_ts": market_ts,
                                 "kind": kind, "service": service, "data": data})
        return seq

    def publish_many(self, kind: str, items: list[dict[str, Any]], *,
                     service: str = "appliance", market_ts: float | None = None) -> None:
        """Append several events of one kind in one transaction (a bar's trades)."""
        if not items:
            return
        with self._events.transact():
            last = self.cache.incr("events_seq", len(items))
            now = time.time()
            for i, data in enumerate(items):
                self._events.append({"seq": last - len(items) + 1 + i, "ts": now,
                                     "market_ts": market_ts, "kind": kind,
                                     "service": service, "data": data})

    def last_event_seq(self) -> int:
        return int(self.cache.get("events_seq", 0))

    def events_since(self, seq: int = 0, kinds: Iterable[str] | None = None,
                     limit: int | None = None) -> list[dict[str, Any]]:
        """Events with a sequence number above ``seq``, oldest first (newest ``limit``)."""
        wanted = set(kinds) if kinds else None
        out: list[dict[str, Any]] = []
        for event in reversed(self._events):
            if event["seq"] <= seq:
                break
            if wanted is None or event["kind"] in wanted:
                out.append(event)
                if limit is not None and len(out) >= limit:
                    break
        out.reverse()
        return out

    # -- commands ----------------------------------------------------------------------------

    def send_command(self, command: str, args: dict[str, Any] | None = None, *,
                     actor: str | None = None, source: str = "cli") -> str:
        cid = uuid.uuid4().hex[:12]
        self._commands.append({"id": cid, "command": command, "args": args or {},
                               "actor": actor or operator_name(), "source": source,
                               "ts": time.time()})
        return cid

    def pop_command(self) -> dict[str, Any] | None:
        try:
            return self._commands.popleft()
        except IndexError:
            return None

    def pending_commands(self) -> list[dict[str, Any]]:
        return list(self._commands)

    def set_command_result(self, cid: str, result: dict[str, Any]) -> None:
        self.cache.set(f"command_result:{cid}", {**result, "ts": time.time()}, expire=86400)

    def command_result(self, cid: str) -> dict[str, Any] | None:
        return self.cache.get(f"command_result:{cid}")

    # -- audit journal -----------------------------------------------------------------------

    def audit(self, *, actor: str, action: str, reason: str = "",
              details: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._audit.transact():
            seq = self.cache.incr("audit_seq")
            entry = {"seq": seq, "ts": time.time(), "actor": actor, "action": action,
                     "reason": reason, "details": details or {}}
            self._audit.append(entry)
        return entry

    def last_audit_seq(self) -> int:
        return int(self.cache.get("audit_seq", 0))

    def audit_entries(self, after_seq: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._audit if e["seq"] > after_seq]

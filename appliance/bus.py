"""The bus: a diskcache directory shared by the appliance, the CLI and the TUI.

It is multi-process safe and survives restarts, so the kill switch works even when the
appliance (or one of its services) is down: ``methtrader kill`` writes the switch here, and the
trading path reads it once per bar's batch and its token (:meth:`Bus.switch_token`, the first
stamp of the ``switches.stamp`` file) before every order. The file's second stamp
(:meth:`Bus.state_token`) moves with the registry version's mirror and the tradable pairs, so
the trading engine reads those only when they changed.

Layout under ``<state>/bus``:

* the main cache: switches (``switch:maintenance_mode``, ``switch:deploys_frozen``),
  ``tradable_pairs``, heartbeats, snapshots for the dashboard and ``status``;
* ``events/``: a bounded deque of events, each with a sequence number (trade,
  training_progress, data_source_update, incident, ...); numbers keep increasing across a
  rebuilt bus, so a client follows ``events_since(last_seen)`` through a bus loss;
* ``commands/``: a deque of operator commands (tui/cli → appliance), each with the OS user that
  sent it and a wall-time deadline;
* ``audit/``: the operator's audit journal, copied by ``run`` into DuckDB's ``audit_log``.

The cache is opened with ``eviction_policy="none"``: a size limit must never evict the kill
switch.

**The switches fail closed.** A switch is a record ``{value, actor, reason, ts, source, seq}``
whose ``seq`` names its audit-journal entry. A switch that is missing, malformed or unreadable
reads as ON, and so does maintenance mode while the state dir holds a kill file
(:mod:`appliance.safety`). ``run`` initialises both switches on a fresh state dir, restores them
from DuckDB when the bus lost them, and audits any change it did not see journalled
(:mod:`appliance.switches`).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

import diskcache

from appliance.contracts import Event, command_name, event_kind, snapshot_name
from appliance.safety import (OWNER_ONLY_DIR, OWNER_ONLY_FILE, STAMP_BYTES, STAMP_FILE_BYTES,
                              STATE_STAMP_AT, SWITCH_STAMP, kill_file, operator_name,
                              remove_kill_file, stamp_state, stamp_switches)

MAINTENANCE_MODE = "maintenance_mode"
DEPLOYS_FROZEN = "deploys_frozen"
SWITCHES = (MAINTENANCE_MODE, DEPLOYS_FROZEN)
DEFAULT_COMMAND_DEADLINE_S = 60.0
COMMAND_STATE_TTL_S = 7 * 86400

__all__ = ["Bus", "BusError", "DEPLOYS_FROZEN", "MAINTENANCE_MODE", "SWITCHES",
           "operator_name", "switch_action"]


class BusError(RuntimeError):
    """The bus cannot be opened or read: its files are damaged."""


def switch_action(name: str, value: bool) -> str:
    """The audit action of a switch change, e.g. ``maintenance_mode=on``."""
    return f"{name}={'on' if value else 'off'}"


def switch_value(record: Any) -> bool | None:
    """The value of a well-formed switch record, else None (which reads as ON)."""
    if isinstance(record, dict) and isinstance(record.get("value"), bool):
        return record["value"]
    return None


class StateWatch:
    """Says whether what the bus's state token covers (:meth:`Bus.state_token`) may have
    changed since this watch last said so: a reader that polls each bar reads again only
    then. The token is taken before the reader reads, so a change after it moves the token
    again; no token, or another bus object (a rebuilt bus), always says changed."""

    def __init__(self) -> None:
        self.token: bytes | None = None
        self.bus: Any = None

    def moved(self, bus: "Bus") -> bool:
        token = bus.state_token()
        if token is not None and token == self.token and bus is self.bus:
            return False
        self.token, self.bus = token, bus
        return True


class Bus:
    def __init__(self, path: Path | str, events_maxlen: int = 10_000, *,
                 command_deadline_s: float = DEFAULT_COMMAND_DEADLINE_S) -> None:
        """Open (creating when absent, 0700) the bus at ``path``; :class:`BusError` when its
        files are damaged."""
        self.path = Path(path)
        self.command_deadline_s = command_deadline_s
        self._kill_file = kill_file(self.path.parent)
        self._stamp = str(self.path / SWITCH_STAMP)
        self._stamp_map: mmap.mmap | None = None
        self._stamp_ino: int | None = None
        self._events_maxlen = events_maxlen
        self._dir_fd: int | None = None
        self._open()

    def _open(self) -> None:
        if not self.path.exists():
            self.path.mkdir(parents=True, mode=OWNER_ONLY_DIR, exist_ok=True)
        opts = dict(eviction_policy="none", size_limit=2**40, timeout=30)
        opened: list[diskcache.Cache] = []
        try:
            self.cache = diskcache.Cache(str(self.path), **opts)
            opened.append(self.cache)
            self._events = diskcache.Deque(directory=str(self.path / "events"),
                                           maxlen=self._events_maxlen)
            opened.append(self._events._cache)
            self._commands = diskcache.Deque(directory=str(self.path / "commands"))
            opened.append(self._commands._cache)
            self._audit = diskcache.Deque(directory=str(self.path / "audit"))
            opened.append(self._audit._cache)
            # A new (or rebuilt) bus numbers its journal and its events from the wall clock in
            # microseconds, so it never reuses a sequence number DuckDB already holds from an
            # older bus, and a client that remembered an event number of a lost bus sees every
            # event of the one rebuilt in its place. ``run`` also raises both counters past
            # what it knew (:meth:`raise_sequences`): the clock may have stepped back.
            first = int(time.time() * 1_000_000)
            self.cache.add("audit_seq", first)
            self.cache.add("events_seq", first)
        except (sqlite3.DatabaseError, diskcache.Timeout) as exc:
            for cache in opened:
                with contextlib.suppress(Exception):
                    cache.close()
            raise BusError(f"the bus at {self.path} is damaged ({exc})") from None
        # held open so that a deleted directory is recognised (its inode cannot be reused)
        self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        self._map_stamp()

    def lost(self) -> bool:
        """Whether the directory this bus opened was deleted or replaced under it (its
        SQLite files then live on unlinked: nobody else can see what is written there)."""
        if self._dir_fd is None:
            return False
        try:
            mine, now = os.fstat(self._dir_fd), os.stat(self.path)
        except OSError:
            return True
        return mine.st_nlink == 0 or (mine.st_dev, mine.st_ino) != (now.st_dev, now.st_ino)

    def reopen(self) -> None:
        """Open the bus at :attr:`path` again, in place (every holder of this object sees the
        new one): after :meth:`lost`, a new, empty bus, or the one another process created."""
        with contextlib.suppress(Exception):
            self.close()
        self._open()

    def raise_sequences(self, *, events: int = 0, audit: int = 0) -> None:
        """Make the next event number higher than ``events`` and the next audit-journal
        number higher than ``audit``; a counter already past them stays as it is.

        ``run`` calls it on a rebuilt bus with the numbers the lost one (or ``audit_log``)
        reached, so numbers keep increasing across the rebuild whatever the wall clock says.
        Atomic against :meth:`publish` and :meth:`audit` in other processes."""
        with self.cache.transact():
            for key, floor in (("events_seq", events), ("audit_seq", audit)):
                if int(self.cache.get(key, 0)) < floor:
                    self.cache.set(key, int(floor))

    def close(self) -> None:
        for store in (self.cache, self._events._cache, self._commands._cache, self._audit._cache):
            store.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        if self._stamp_map is not None:
            self._stamp_map.close()
            self._stamp_map = self._stamp_ino = None

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- switches ----------------------------------------------------------------------------

    def switch(self, name: str) -> bool:
        """Whether a switch is ON. Fails closed: missing, malformed or unreadable is ON, and
        maintenance mode is ON while the state dir holds a kill file."""
        if name not in SWITCHES:
            raise KeyError(f"unknown switch {name!r}; switches: {', '.join(SWITCHES)}")
        if name == MAINTENANCE_MODE and self._kill_file.exists():
            return True
        try:
            record = self.cache.get(f"switch:{name}")
        except Exception:  # a damaged bus cannot say trading is allowed
            return True
        return switch_value(record) is not False

    def switch_token(self) -> bytes | None:
        """A token that changes whenever a switch is set through :meth:`set_switch` (by any
        process) or a kill file is written (:func:`appliance.safety.stamp_switches`): the
        switch stamp's bytes, read from this process's mapping of the file, so no system call
        (on this machine a ``stat`` costs 5-20 µs; this costs well under one). None when the
        stamp could not be mapped: then read the switch itself.

        Why: the order gateway reads the switch at the start of a batch and this token before
        every send, so a switch thrown mid-batch stops the next order
        (:class:`appliance.kill_guard.KillGuard`). A stamp file replaced under the bus (a
        rebuilt bus) is noticed by :meth:`check_stamp`, once per batch."""
        stamp = self._stamp_map
        return None if stamp is None else stamp[:STAMP_BYTES]

    def state_token(self) -> bytes | None:
        """Like :meth:`switch_token`, for what the trading engine polls each bar: it changes
        whenever a counter moves (:meth:`counter_incr`: the registry version's mirror) or the
        tradable pairs are set. A reader keeps what it read with the token it took before
        reading, and reads again only when the token moved (or is None). The stamp file's
        inode is part of it: a bus rebuilt under this one (a new file, mapped again by
        :meth:`check_stamp` or :meth:`reopen`) moves it too."""
        stamp, ino = self._stamp_map, self._stamp_ino
        if stamp is None or ino is None:
            return None
        return stamp[STATE_STAMP_AT:STATE_STAMP_AT + STAMP_BYTES] + ino.to_bytes(8, "little")

    def check_stamp(self) -> None:
        """Map the switch stamp again when the file was replaced or removed since it was
        mapped (no mapping, and so no token, when it cannot be)."""
        try:
            ino = os.stat(self._stamp).st_ino
        except OSError:
            ino = None
        if ino is None or ino != self._stamp_ino:
            self._map_stamp()

    def _map_stamp(self) -> None:
        if self._stamp_map is not None:
            self._stamp_map.close()
        self._stamp_map = self._stamp_ino = None
        try:
            fd = os.open(self._stamp, os.O_RDWR | os.O_CREAT, OWNER_ONLY_FILE)
        except OSError:
            return
        try:
            st = os.fstat(fd)
            if st.st_size < STAMP_FILE_BYTES:  # extends with zeros; never overwrites a stamp
                os.ftruncate(fd, STAMP_FILE_BYTES)
            self._stamp_map = mmap.mmap(fd, STAMP_FILE_BYTES, access=mmap.ACCESS_READ)
            self._stamp_ino = st.st_ino
        except (OSError, ValueError):
            self._stamp_map = self._stamp_ino = None
        finally:
            os.close(fd)

    @property
    def maintenance_mode(self) -> bool:
        return self.switch(MAINTENANCE_MODE)

    @property
    def deploys_frozen(self) -> bool:
        return self.switch(DEPLOYS_FROZEN)

    @property
    def kill_file_present(self) -> bool:
        return self._kill_file.exists()

    def set_switch(self, name: str, value: bool, *, actor: str, reason: str,
                   source: str = "cli", details: dict[str, Any] | None = None,
                   clear_kill_file: bool = False) -> dict[str, Any]:
        """Flip a switch and journal who, when and why (one audit entry per change).

        The journal entry is written first and the switch record names it (``seq``), so a
        record with no journal entry behind it was written by something else. An operator's
        resume passes ``clear_kill_file`` (the kill file holds maintenance ON until then)."""
        self.switch(name)
        removed = (clear_kill_file and not value and name == MAINTENANCE_MODE
                   and remove_kill_file(self.path.parent))
        entry = self.audit(actor=actor, action=switch_action(name, value), reason=reason,
                           details={"source": source, **({"kill_file_removed": True}
                                                         if removed else {}),
                                    **(details or {})})
        self.cache.set(f"switch:{name}", {"value": bool(value), "actor": actor,
                                           "reason": reason, "ts": entry["ts"],
                                           "source": source, "seq": entry["seq"]})
        stamp_switches(self.path)  # after the record: a reader that sees the stamp sees it
        self.publish(Event.SWITCH, {"name": name, "value": bool(value), "actor": actor,
                                "reason": reason}, service=source)
        return entry

    def switch_record(self, name: str) -> Any:
        """The raw stored switch (a record, or whatever else was written there)."""
        return self.cache.get(f"switch:{name}")

    def switch_meta(self, name: str) -> dict[str, Any] | None:
        record = self.cache.get(f"switch:{name}")
        return record if switch_value(record) is not None else None

    # -- shared state ------------------------------------------------------------------------

    def set_tradable_pairs(self, symbols: Iterable[str]) -> None:
        self.cache.set("tradable_pairs", sorted(symbols))
        stamp_state(self.path)  # after the write: a reader that sees the stamp sees it

    def tradable_pairs(self) -> list[str] | None:
        return self.cache.get("tradable_pairs")

    def set_held_symbols(self, symbols: Iterable[str]) -> None:
        """The symbols the account's books hold positions in (the trading engine's), so the
        feed keeps their bars coming after they left the tradable set, until they are closed."""
        self.cache.set("held_symbols", sorted(symbols))

    def held_symbols(self) -> list[str]:
        return list(self.cache.get("held_symbols") or [])

    def put_snapshot(self, name: str, data: Any) -> None:
        name = snapshot_name(name).value  # an undeclared name is a bug: refuse it here
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
        value = self.cache.incr(f"counter:{name}", delta)
        stamp_state(self.path)
        return value

    def counter(self, name: str) -> int:
        return int(self.cache.get(f"counter:{name}", 0))

    # -- events ------------------------------------------------------------------------------

    def publish(self, kind: str, data: dict[str, Any], *, service: str = "appliance",
                market_ts: float | None = None) -> int:
        """Append an event; its sequence number is unique and increasing across processes."""
        kind = event_kind(kind).value  # an undeclared kind is a bug: refuse it here
        with self._journal(self._events):
            seq = self.cache.incr("events_seq")
            self._events.append({"seq": seq, "ts": time.time(), "market_ts": market_ts,
                                 "kind": kind, "service": service, "data": data})
        return seq

    def publish_many(self, kind: str, items: list[dict[str, Any]], *,
                     service: str = "appliance", market_ts: float | None = None) -> None:
        """Append several events of one kind in one transaction (a bar's trades)."""
        kind = event_kind(kind).value
        if not items:
            return
        with self._journal(self._events):
            last = self.cache.incr("events_seq", len(items))
            now = time.time()
            for i, data in enumerate(items):
                self._events.append({"seq": last - len(items) + 1 + i, "ts": now,
                                     "market_ts": market_ts, "kind": kind,
                                     "service": service, "data": data})

    @contextlib.contextmanager
    def _journal(self, journal: diskcache.Deque) -> Iterator[None]:
        """Number and append journal entries so that a reader never sees a number before its
        entry. The counter lives in the main cache, the entries in the journal's own database:
        the counter's transaction is held open around the append and commits after it, so a
        reader that read the counter as N finds every entry up to N (and writers in other
        processes take their numbers in the order their entries land)."""
        with self.cache.transact(), journal.transact():
            yield

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
                     actor: str | None = None, source: str = "cli",
                     deadline_s: float | None | str = "default") -> str:
        """Queue a command for ``run``. The sender's uid and user name come from the OS (``run``
        refuses a uid that neither owns the state dir nor is root); ``actor`` is only a label.

        ``deadline_s`` (wall seconds, default the bus's ``command_deadline_s``): ``run`` drops
        the command unexecuted after it; None keeps it until it runs or is cancelled."""
        cid = uuid.uuid4().hex[:12]
        now = time.time()
        command = command_name(command).value  # an undeclared command is a bug: refuse it
        span = self.command_deadline_s if deadline_s == "default" else deadline_s
        user = operator_name()
        self._commands.append({"id": cid, "command": command, "args": args or {},
                               "actor": actor or user, "user": user, "uid": os.getuid(),
                               "source": source, "ts": now,
                               "deadline": None if span is None else now + float(span)})
        return cid

    def pop_command(self) -> dict[str, Any] | None:
        try:
            return self._commands.popleft()
        except IndexError:
            return None

    def pending_commands(self) -> list[dict[str, Any]]:
        return list(self._commands)

    def claim_command(self, cid: str) -> bool:
        """``run`` takes a command to execute it; False when its sender cancelled it first.

        Claim and cancel race on one atomic ``add``: exactly one of them wins."""
        return bool(self.cache.add(f"command_state:{cid}",
                                   {"state": "claimed", "ts": time.time(), "pid": os.getpid()},
                                   expire=COMMAND_STATE_TTL_S))

    def cancel_command(self, cid: str, *, reason: str) -> bool:
        """Make sure a command never runs; False when ``run`` already claimed it."""
        return bool(self.cache.add(f"command_state:{cid}",
                                   {"state": "cancelled", "ts": time.time(), "reason": reason,
                                    "by": operator_name()}, expire=COMMAND_STATE_TTL_S))

    def command_state(self, cid: str) -> dict[str, Any] | None:
        return self.cache.get(f"command_state:{cid}")

    def cancel_pending(self, command: str, *, actor: str, reason: str) -> list[str]:
        """Cancel every queued ``command`` not yet claimed (e.g. a flatten, on resume); each
        cancellation is journalled."""
        cancelled = []
        for cmd in self.pending_commands():
            if cmd.get("command") == command and self.cancel_command(cmd["id"], reason=reason):
                self.audit(actor=actor, action=f"command:{command} cancelled", reason=reason,
                           details={"command_id": cmd["id"], "queued_by": cmd.get("user"),
                                    "queued_at": cmd.get("ts")})
                cancelled.append(cmd["id"])
        return cancelled

    def set_command_result(self, cid: str, result: dict[str, Any]) -> None:
        self.cache.set(f"command_result:{cid}", {**result, "ts": time.time()}, expire=86400)

    def command_result(self, cid: str) -> dict[str, Any] | None:
        return self.cache.get(f"command_result:{cid}")

    # -- audit journal -----------------------------------------------------------------------

    def audit(self, *, actor: str, action: str, reason: str = "",
              details: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._journal(self._audit):
            seq = self.cache.incr("audit_seq")
            entry = {"seq": seq, "ts": time.time(), "actor": actor, "action": action,
                     "reason": reason, "details": details or {}}
            self._audit.append(entry)
        return entry

    def last_audit_seq(self) -> int:
        return int(self.cache.get("audit_seq", 0))

    def audit_entries(self, after_seq: int = 0) -> list[dict[str, Any]]:
        return [e for e in self._audit if e["seq"] > after_seq]

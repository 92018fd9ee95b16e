"""What ``run`` checks and repairs before any service starts.

In this order, so that bad input leaves nothing behind and two runs cannot race:

1. the state dir is a writable directory (created 0700 when new) — :mod:`appliance.safety`;
2. the run lock (:mod:`appliance.liveness`): a second ``run`` on the same dir is refused;
3. the clock and the exchange (a damaged ``clock.json`` or ``sim_account.json`` stops here);
4. the DuckDB file (a damaged one stops here, untouched);
5. the bus: a damaged one is moved aside to ``bus.corrupt-<time>/`` and rebuilt;
6. the marker that makes the directory recognisable as a state dir.

Then, inside trio, :func:`settle` records what was found (looser permissions, a rebuilt bus)
as log lines and incidents, and brings the switches to a journalled state
(:func:`appliance.switches.settle_at_start`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from appliance.bus import Bus, BusError
from appliance.clock import VirtualClock
from appliance.config import Config
from appliance.contracts import Event
from appliance.exchange.factory import StartupError
from appliance.liveness import AlreadyRunning, RunLock
from appliance.logs import service_logger
from appliance.paths import StatePaths
from appliance.safety import loose_permissions, write_marker
from appliance.store import Store, StoreError
from appliance.switches import audit_log_switches, settle_at_start

log = service_logger("supervisor")


@dataclass
class Findings:
    """What start-up found that an operator should hear about."""

    fresh: bool
    loose: list[str] = field(default_factory=list)
    bus_rebuilt: str | None = None


class ShutdownIncomplete(StartupError):
    """``run`` stopped, but a shutdown step failed (a full disk, say); the rest still ran."""


def acquire_run_lock(state_dir: Path) -> RunLock:
    try:
        return RunLock(state_dir).acquire()
    except AlreadyRunning as exc:
        raise StartupError(str(exc)) from None


def is_fresh(state_dir: Path) -> bool:
    paths = StatePaths(state_dir)
    return not paths.marker.exists() and not paths.duckdb.exists()


def open_store(state_dir: Path, patience_s: float = 10.0) -> Store:
    """The DuckDB file, read-write. With the run lock held only a short-lived reader (a
    ``status`` or ``models`` that looked before the lock was taken) can be holding it: wait
    that out, then give up with the reason."""
    path = StatePaths(state_dir).duckdb
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return Store(path)
        except StoreError as exc:
            if "another process" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
        except duckdb.Error as exc:
            raise StartupError(f"{unusable_duckdb(path, str(exc).splitlines()[0])}; "
                               f"{DUCKDB_FIX}") from None


#: what to do with a DuckDB file that cannot be opened (``run``'s refusal, ``doctor``'s fix)
DUCKDB_FIX = "move it aside (or restore a backup) and start again"


def unusable_duckdb(path: Path, why: str) -> str:
    """What is wrong with the DuckDB file, in the words ``run`` and ``doctor`` both use."""
    return f"{path} is not a usable DuckDB file ({why})"


def unusable_queue(path: Path, why: str) -> tuple[str, str]:
    """What is wrong with the SQLite job queue and what to do, in the words ``run`` and
    ``doctor`` both use."""
    return (f"{path} is not a usable SQLite file ({why})",
            f"move it (and any {path.name}-wal, {path.name}-shm) aside and start again; run "
            "creates an empty queue, queued jobs are lost")


def sqlite_damage(db: Path, *, immutable: bool = False) -> str | None:
    """Why the SQLite file ``db`` fails ``PRAGMA quick_check``, or None. Opened read-only;
    ``immutable`` also skips locking and the empty ``-wal``/``-shm`` files a read-only open of
    a WAL-mode file creates (for a file no process has open, and no ``-wal`` to read)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro" + ("&immutable=1" if immutable else ""),
                              uri=True, timeout=30)
        try:
            verdict = con.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None if verdict == "ok" else verdict


def bus_damage(path: Path) -> str | None:
    """Why the bus's SQLite files fail an integrity check, or None (also when absent)."""
    for db in sorted(path.glob("**/cache.db")):
        if (why := sqlite_damage(db)) is not None:
            return f"{db.relative_to(path.parent)}: {why}"
    return None


def open_bus(cfg: Config, findings: Findings) -> Bus:
    """The bus, rebuilt empty when damaged (the damaged one is kept aside for a post-mortem)."""
    path = StatePaths(cfg.state_path).bus
    why = bus_damage(path) if path.exists() else None
    bus = None
    if why is None:
        try:
            bus = Bus(path, events_maxlen=cfg.bus.events_maxlen,
                      command_deadline_s=cfg.bus.command_deadline_s)
        except BusError as exc:
            why = str(exc)
    if bus is None:
        aside = path.with_name(f"bus.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        os.replace(path, aside)
        findings.bus_rebuilt = (f"the bus was damaged ({why}); moved it to {aside.name} and "
                                "rebuilt it; switches restored from audit_log")
        log.error("bus damaged, rebuilt", moved_to=str(aside), reason=why)
        bus = Bus(path, events_maxlen=cfg.bus.events_maxlen,
                  command_deadline_s=cfg.bus.command_deadline_s)
    return bus


def finish_opening(cfg: Config, findings: Findings) -> None:
    write_marker(cfg.state_path)
    findings.loose = loose_permissions(cfg.state_path)
    if findings.loose:
        log.warning("state dir readable by others: run chmod -R go-rwx on it",
                    state_dir=str(cfg.state_path), paths=findings.loose[:20])


def _incident(ctx):
    async def incident(kind: str, message: str) -> None:
        await ctx.store.call("record_incident", "supervisor", kind, message, None)
        ctx.bus.publish(Event.INCIDENT, {"service": "supervisor", "kind": kind,
                                     "message": message}, service="supervisor",
                        market_ts=ctx.clock.now())
    return incident


def _store_call(ctx):
    return lambda fn, *a: ctx.store.run(fn, ctx.store.store, *a)


async def settle(ctx, findings: Findings) -> None:
    """Incidents for what start-up found, then the switches (before any service starts)."""
    incident = _incident(ctx)
    if findings.bus_rebuilt:
        await incident("bus_rebuilt", findings.bus_rebuilt)
    if findings.loose:
        shown = ", ".join(findings.loose[:5]) + (" ..." if len(findings.loose) > 5 else "")
        await incident("permissions", f"state dir readable by group or others: {shown}; run "
                       f"chmod -R go-rwx {ctx.cfg.state_path}")
    # a bus rebuilt while run was down numbers its journal from the wall clock: should the
    # clock have stepped back, audit_log (which copies only numbers above its newest) would
    # skip every new entry
    ctx.bus.raise_sequences(audit=await ctx.store.call("max_audit_seq"))
    switches = await settle_at_start(ctx.bus, _store_call(ctx), fresh=findings.fresh,
                                     incident=incident)
    log.info("switches settled", **switches)
    await keep_clock_ahead_of_store(ctx, incident)


CLOCK_BEHIND_INCIDENT_S = 3600.0
"""A virtual clock found further behind the stored candles than this is an incident (a
clock.json restored from elsewhere, edited, or deleted after a fast run); less is the lag a
SIGKILL leaves between the last save of the clock and the last candle stored."""


async def keep_clock_ahead_of_store(ctx, incident) -> None:
    """A virtual clock never starts before the close of the newest stored 1m candle.

    Behind it, the feed would wait for bars it already has, training would be dated in the
    past and a shadow period would count days already lived; so market time moves forward to
    that close (never back), with a warning, and an incident when the gap is large."""
    clock = ctx.clock
    if not isinstance(clock, VirtualClock):
        return
    newest = await ctx.store.call("latest_open_times")
    if not newest:
        return
    close = max(newest.values()) / 1000.0 + 60.0
    was = clock.now()
    gap = close - was
    if gap <= 0:
        return
    clock.advance_to(close)
    what = (f"market time moved forward {gap / 3600:.2f} h, from {_utc(was)} to {_utc(close)} "
            "(the close of the newest stored candle): clock.json was behind the stored data")
    log.warning(what)
    if gap > CLOCK_BEHIND_INCIDENT_S:
        await incident("clock_behind", what)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


async def recover_lost_bus(ctx, sync_audit) -> bool:
    """When the bus directory was deleted (or replaced) under a running ``run``: copy what its
    journal still holds into ``audit_log`` (its unlinked files stay readable while open),
    reopen the bus in place, number its events and journal past the lost one's (a client that
    remembered an event number misses nothing) and restore the switches from ``audit_log`` as
    at start (a switch that was ON stays ON). False when nothing was lost. Called by the
    heartbeat service.

    Reopening and restoring happen without yielding to another task, so no service (nor the
    operator's switch watch) ever sees the new bus without its switches."""
    if not ctx.bus.lost():
        return False
    for _ in range(3):  # until nothing more was journalled on the lost bus meanwhile
        try:
            seen = ctx.bus.last_audit_seq()
            await sync_audit(ctx)
        except Exception as exc:  # unreadable: audit_log has what it had
            log.warning("lost bus journal not copied", reason=str(exc))
            seen = None
        from_db = await _store_call(ctx)(audit_log_switches)
        if seen is None or _quiet(ctx.bus.last_audit_seq, seen):
            break
    copied = await ctx.store.call("max_audit_seq")
    events, audit = _reached(ctx.bus)
    ctx.bus.reopen()
    ctx.bus.raise_sequences(events=events, audit=max(audit, copied))
    found: list[tuple[str, str]] = []

    async def prefetched(fn, *args):  # no checkpoint: the restore below does not yield
        assert fn is audit_log_switches, fn
        return from_db

    async def collect(kind: str, message: str) -> None:
        found.append((kind, message))

    switches = await settle_at_start(ctx.bus, prefetched, fresh=False, incident=collect)
    log.error("bus directory lost under run: reopened it", bus=str(ctx.bus.path), **switches)
    incident = _incident(ctx)
    await incident("bus_lost", f"the bus directory {ctx.bus.path} was deleted or replaced "
                   "while run was running; reopened it, switches restored from audit_log")
    for kind, message in found:
        await incident(kind, message)
    return True


def _reached(bus: Bus) -> tuple[int, int]:
    """The last event and audit numbers of a lost bus; (0, 0) when its files are unreadable
    (the new bus's wall-clock numbering then stands alone)."""
    try:
        return bus.last_event_seq(), bus.last_audit_seq()
    except Exception:
        return 0, 0


def _quiet(last_seq, seen: int) -> bool:
    try:
        return last_seq() == seen
    except Exception:
        return True

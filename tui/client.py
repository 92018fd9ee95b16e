"""The TUI's only door to the appliance: one thread reads the bus and posts typed messages.

The Bus (diskcache) is opened in that thread and used only there, so the UI thread never waits
on disk. Operator actions are queued to the same thread, which runs them, reads the bus again at
once and reports the outcome: a kill switch shows as ON in the next frame. The kill switch and
resume write the switch on the bus directly, so they work while the appliance is down.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from textual.message import Message

from appliance.bus import MAINTENANCE_MODE, SWITCHES, Bus, operator_name
from appliance.contracts import Command, Event, Snapshot
from appliance.liveness import is_running
from appliance.safety import write_kill_file

POLL_INTERVAL_S = 0.5
TRADE_ROWS = 50
HISTORY_ROWS = 200
EVENTS_PER_READ = 2000
OPERATOR_REASON = "operator via tui"
ACTIONS = ("kill", "kill_flatten", "resume", "promote", "demote", "rollback")

# Which MissionState fields belong to which section (screens re-render only changed sections).
SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "heartbeat": ("running", "heartbeat", "stale_for"),
    "switches": ("maintenance_mode", "deploys_frozen", "switch_meta"),
    "status": ("status", "sources"),
    "models": ("models",),
    "training": ("training", "automl"),
    "pipeline": ("pipeline",),
    "drift": ("drift",),
    "incidents": ("incidents",),
    "history": ("switch_history",),
    "trades": ("trades",),
    "error": ("error",),
}
SECTIONS = frozenset(SECTION_FIELDS)


@dataclass(frozen=True)
class MissionState:
    """Everything the screens show, read from the bus at one moment. Lists are newest first."""

    version: int = 0
    changed: frozenset[str] = SECTIONS
    running: bool = False
    heartbeat: Mapping[str, Any] = field(default_factory=dict)
    heartbeat_age: float | None = None
    stale_for: int | None = None
    maintenance_mode: bool = False
    deploys_frozen: bool = False
    switch_meta: Mapping[str, Any] = field(default_factory=dict)
    status: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, Any] = field(default_factory=dict)
    models: tuple[Mapping[str, Any], ...] = ()
    training: tuple[Mapping[str, Any], ...] = ()
    automl: tuple[Mapping[str, Any], ...] = ()  # the weekly AutoML studies
    pipeline: Mapping[str, Any] = field(default_factory=dict)
    drift: Mapping[str, Any] = field(default_factory=dict)  # the drift snapshot
    incidents: tuple[Mapping[str, Any], ...] = ()
    switch_history: tuple[Mapping[str, Any], ...] = ()
    trades: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None


class BusUpdate(Message):
    """A new MissionState; ``state.changed`` names the sections that differ from the last one."""

    def __init__(self, state: MissionState) -> None:
        super().__init__()
        self.state = state


class ActionDone(Message):
    """An operator action ran (or failed) on the bus."""

    def __init__(self, action: str, ok: bool, detail: str, command_id: str | None = None) -> None:
        super().__init__()
        self.action = action
        self.ok = ok
        self.detail = detail
        self.command_id = command_id


@dataclass(frozen=True)
class ActionRequest:
    action: str
    model_id: str | None = None
    group: str | None = None  # rollback acts on a group


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, (list, tuple)):
        return []
    return [dict(item) for item in value if isinstance(item, Mapping)]


def _ts(item: Mapping[str, Any]) -> float:
    value = item.get("ts")
    return float(value) if isinstance(value, (int, float)) else 0.0


class BusReader:
    """Merges snapshots and the event stream into MissionStates. Owned by the client thread.

    Snapshots are the appliance's periodic summaries; events (training progress, source
    updates, incidents, pair events) newer than the last snapshot are laid over them so the
    screens move between snapshots.
    """

    def __init__(self, bus: Bus, now: Callable[[], float] = time.time,
                 running: Callable[[], bool] | None = None) -> None:
        """``running`` answers "is the appliance up?"; by default the run lock of the bus's
        state dir (:func:`appliance.liveness.is_running`, the same answer as ``status``)."""
        self._bus = bus
        self._now = now
        self._running = running or (lambda: is_running(bus.path.parent))
        self._event_seq: int | None = None
        self._audit_seq: Any = None
        self._audit_after = 0
        self._snapshots: dict[str, tuple[Any, float]] = {}
        self._trades: deque[dict[str, Any]] = deque(maxlen=TRADE_ROWS)
        self._history: deque[dict[str, Any]] = deque(maxlen=HISTORY_ROWS)
        self._runs: dict[str, tuple[float, dict[str, Any], list[tuple[Any, Any]]]] = {}
        self._sources: dict[str, tuple[float, dict[str, Any]]] = {}
        self._backfill: dict[str, tuple[float, Any]] = {}
        self._incidents: deque[dict[str, Any]] = deque(maxlen=HISTORY_ROWS)
        self._discovery: deque[dict[str, Any]] = deque(maxlen=HISTORY_ROWS)
        self._last: MissionState | None = None

    def read(self) -> MissionState | None:
        """A new state, or None when nothing the screens show has changed."""
        bus = self._bus
        hb = bus.heartbeat()
        age = None
        if isinstance(hb, Mapping) and isinstance(hb.get("wall_ts"), (int, float)):
            age = max(0.0, self._now() - hb["wall_ts"])
        running = self._running()
        for name in (Snapshot.STATUS, Snapshot.MODELS, Snapshot.TRAINING, Snapshot.PIPELINE,
                     Snapshot.INCIDENTS, Snapshot.DRIFT, Snapshot.AUTOML):
            self._read_snapshot(name)
        self._read_events()
        self._read_audit()
        status = _dict(self._snapshot(Snapshot.STATUS))
        state = MissionState(
            running=running,
            heartbeat={k: v for k, v in _dict(hb).items() if k != "wall_ts"},
            heartbeat_age=age,
            stale_for=None if running or age is None else int(age),
            maintenance_mode=bus.switch(MAINTENANCE_MODE),
            deploys_frozen=bus.deploys_frozen,
            switch_meta={name: bus.switch_meta(name) for name in SWITCHES},
            status=status,
            sources=self._merged_sources(_dict(status.get("sources"))),
            models=tuple(_dicts(self._snapshot(Snapshot.MODELS))),
            training=tuple(self._merged_runs()),
            automl=tuple(_dicts(self._snapshot(Snapshot.AUTOML))),
            pipeline=self._merged_pipeline(),
            drift=_dict(self._snapshot(Snapshot.DRIFT)),
            incidents=tuple(self._merged_list(Snapshot.INCIDENTS, self._incidents)),
            switch_history=tuple(self._history),
            trades=tuple(self._trades),
        )
        return self._diff(state)

    def with_error(self, error: str) -> MissionState | None:
        """The last state with a read error attached (shown in the banner)."""
        return self._diff(_replace(self._last or MissionState(), error=error))

    def _diff(self, state: MissionState) -> MissionState | None:
        last = self._last
        if last is None:
            changed = SECTIONS
        else:
            changed = frozenset(
                section for section, names in SECTION_FIELDS.items()
                if any(getattr(state, n) != getattr(last, n) for n in names))
            if not changed:
                return None
        version = 1 if last is None else last.version + 1
        state = _replace(state, version=version, changed=changed)
        self._last = state
        return state

    # -- snapshots ---------------------------------------------------------------------------

    def _read_snapshot(self, name: str) -> None:
        data, age = self._bus.snapshot_with_age(name)
        ts = time.time() - age if age is not None else 0.0
        previous = self._snapshots.get(name)
        if previous is None or abs(previous[1] - ts) > 0.01 or previous[0] != data:
            self._snapshots[name] = (data, ts)
            self._forget_older_than(name, ts)

    def _snapshot(self, name: str) -> Any:
        entry = self._snapshots.get(name)
        return None if entry is None else entry[0]

    def _forget_older_than(self, name: str, ts: float) -> None:
        """Drop live overlays that the new snapshot already contains."""
        if name == "training":
            self._runs = {k: v for k, v in self._runs.items() if v[0] > ts}
        elif name == "status":
            self._sources = {k: v for k, v in self._sources.items() if v[0] > ts}
        elif name == "pipeline":
            self._backfill = {k: v for k, v in self._backfill.items() if v[0] > ts}
            self._discovery = deque((e for e in self._discovery if e["_wall"] > ts),
                                    maxlen=HISTORY_ROWS)
        elif name == "incidents":
            self._incidents = deque((e for e in self._incidents if e["_wall"] > ts),
                                    maxlen=HISTORY_ROWS)

    # -- events and audit --------------------------------------------------------------------

    def _read_events(self) -> None:
        last = self._bus.last_event_seq()
        if last == self._event_seq:
            return
        if self._event_seq is not None and last < self._event_seq:
            # Numbers below what was read: the bus was replaced by an older copy (a backup put
            # back). Start over on it as a new TUI would; following the old number would show
            # nothing until the new bus passed it, and then skip what came before.
            self._forget_events()
            self._event_seq = None
        after = max(0, last - EVENTS_PER_READ) if self._event_seq is None else self._event_seq
        for event in self._bus.events_since(after, limit=EVENTS_PER_READ):
            self._apply_event(event)
            last = max(last, int(event.get("seq", 0)))  # published since last_event_seq()
        self._event_seq = last

    def _forget_events(self) -> None:
        """Drop everything laid over the snapshots from events (before reading them again)."""
        self._trades.clear()
        self._runs.clear()
        self._sources.clear()
        self._backfill.clear()
        self._incidents.clear()
        self._discovery.clear()

    def _apply_event(self, event: Mapping[str, Any]) -> None:
        kind, data, wall = event.get("kind"), _dict(event.get("data")), _ts(event)
        when = event.get("market_ts") or wall
        if kind == Event.TRADE:
            self._trades.appendleft(data)
        elif kind == Event.TRAINING_PROGRESS and data.get("run_id") is not None:
            run_id = str(data["run_id"])
            _, _, curve = self._runs.get(run_id, (0.0, {}, []))
            curve.append((data.get("epoch"), data.get("loss")))
            self._runs[run_id] = (wall, data, curve[-500:])
        elif kind == Event.DATA_SOURCE_UPDATE and data.get("source") is not None:
            self._sources[str(data["source"])] = (wall, data)
            symbols = data.get("symbols")
            if data.get("percent") is not None and isinstance(symbols, (list, tuple)):
                for symbol in symbols:
                    self._backfill[str(symbol)] = (wall, data["percent"])
        elif kind == Event.INCIDENT:
            self._incidents.appendleft({"ts": when, "mttr_s": None, **data, "_wall": wall})
        elif kind == Event.PAIR_EVENT:
            self._discovery.appendleft({"ts": when, **data, "_wall": wall})

    def _read_audit(self) -> None:
        mark = self._bus.last_audit_seq()
        if mark == self._audit_seq:
            return
        if mark < self._audit_after:  # an older copy of the bus, as for the events
            self._history.clear()
            self._audit_after = 0
        for entry in self._bus.audit_entries(self._audit_after):
            self._audit_after = max(self._audit_after, int(entry.get("seq", 0)))
            action = str(entry.get("action", ""))
            if action.split("=")[0] in SWITCHES:
                source = _dict(entry.get("details")).get("source")
                self._history.appendleft({**entry, "source": source})
        self._audit_seq = mark

    # -- merging -----------------------------------------------------------------------------

    def _merged_runs(self) -> list[dict[str, Any]]:
        runs = {str(r.get("run_id")): r for r in _dicts(self._snapshot(Snapshot.TRAINING))}
        for run_id, (_, data, curve) in self._runs.items():
            base = runs.setdefault(run_id, {"run_id": run_id, "loss_curve": []})
            last_epoch = base.get("epoch")
            points = list(base.get("loss_curve") or [])
            for epoch, loss in curve:
                newer = not isinstance(last_epoch, (int, float)) or (
                    isinstance(epoch, (int, float)) and epoch > last_epoch)
                if newer and isinstance(loss, (int, float)):
                    points.append(loss)
                    last_epoch = epoch
            base.update({k: v for k, v in data.items() if v is not None})
            base["loss_curve"] = points
        return list(runs.values())

    def _merged_sources(self, sources: dict[str, Any]) -> dict[str, Any]:
        out = {name: _dict(value) for name, value in sources.items()}
        for name, (_, data) in self._sources.items():
            row = out.setdefault(name, {})
            row.update({k: data[k] for k in ("lag_s", "percent", "candles")
                        if data.get(k) is not None})
        return out

    def _merged_pipeline(self) -> dict[str, Any]:
        pipeline = _dict(self._snapshot(Snapshot.PIPELINE))
        backfill = _dict(pipeline.get("backfill"))
        backfill.update({symbol: value for symbol, (_, value) in self._backfill.items()})
        pipeline["backfill"] = backfill
        pipeline["discovery"] = self._merged_list("pipeline", self._discovery, key="discovery")
        return pipeline

    def _merged_list(self, name: str, live: Iterable[dict[str, Any]],
                     key: str | None = None) -> list[dict[str, Any]]:
        snap = self._snapshot(name)
        items = _dicts(_dict(snap).get(key) if key else snap)
        items.sort(key=_ts, reverse=True)
        fresh = [{k: v for k, v in item.items() if k != "_wall"} for item in live]
        return (fresh + items)[:HISTORY_ROWS]


def _replace(state: MissionState, **changes: Any) -> MissionState:
    values = {f.name: getattr(state, f.name) for f in fields(state)}
    values.update(changes)
    return MissionState(**values)


def execute(bus: Bus, request: ActionRequest, actor: str) -> ActionDone:
    """Run one operator action on the bus; every action leaves an audit entry with ``actor``."""
    action, model_id = request.action, request.model_id
    if action in ("kill", "kill_flatten"):
        bus.set_switch(MAINTENANCE_MODE, True, actor=actor, reason=OPERATOR_REASON, source="tui")
        if action == "kill":
            return ActionDone(action, True, f"maintenance_mode ON by {actor}")
        cid = _command(bus, Command.FLATTEN, {}, actor)
        return ActionDone(action, True, f"maintenance_mode ON and flatten sent by {actor}", cid)
    if action == "resume":
        bus.set_switch(MAINTENANCE_MODE, False, actor=actor, reason=OPERATOR_REASON,
                       source="tui", clear_kill_file=True)
        cancelled = bus.cancel_pending(Command.FLATTEN, actor=actor,
                                       reason="resume cancels a pending flatten")
        extra = f", {len(cancelled)} pending flatten cancelled" if cancelled else ""
        return ActionDone(action, True, f"maintenance_mode OFF by {actor}{extra}")
    if action in ("promote", "demote"):
        if not model_id:
            return ActionDone(action, False, f"{action} needs a model")
        cid = _command(bus, action, {"model_id": model_id, "reason": OPERATOR_REASON}, actor)
        return ActionDone(action, True, f"{action} {model_id} sent by {actor}", cid)
    if action == "rollback":
        if not request.group:
            return ActionDone(action, False, "rollback needs a group")
        cid = _command(bus, action, {"group": request.group, "reason": OPERATOR_REASON}, actor)
        return ActionDone(action, True, f"rollback of group {request.group} sent by {actor}",
                          cid)
    return ActionDone(action, False, f"unknown action {action!r}")


def _command(bus: Bus, command: str, args: dict[str, Any], actor: str) -> str:
    cid = bus.send_command(command, args, actor=actor, source="tui")
    bus.audit(actor=actor, action=f"command {command}", reason=OPERATOR_REASON,
              details={"source": "tui", "command_id": cid, **args})
    return cid


class BusClient:
    """The thread body (``run``) plus the thread-safe ``request`` and ``stop`` for the UI."""

    def __init__(self, bus_path: Path, post: Callable[[Message], object], *,
                 now: Callable[[], float] = time.time, interval: float = POLL_INTERVAL_S,
                 actor: str | None = None, events_maxlen: int = 10_000) -> None:
        self.bus_path = Path(bus_path)
        self.actor = actor or operator_name()
        self._post = post
        self._now = now
        self._interval = interval
        self._events_maxlen = events_maxlen
        self._requests: queue.SimpleQueue[ActionRequest | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._gone = False  # the bus was lost and is not reopened yet

    def request(self, action: str, model_id: str | None = None,
                group: str | None = None) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        self._requests.put(ActionRequest(action, model_id, group))

    def stop(self) -> None:
        self._stop.set()
        self._requests.put(None)

    def run(self) -> None:
        bus: Bus | None = None
        reader: BusReader | None = None
        try:
            while not self._stop.is_set():
                usable: Bus | None = None
                try:
                    if bus is None:
                        bus = Bus(self.bus_path, events_maxlen=self._events_maxlen)
                        reader = BusReader(bus, self._now)
                    usable = self._follow(bus)
                    if reader is not None:
                        self._publish(reader.read() if usable is not None
                                      else reader.with_error(self._gone_message()))
                except Exception as exc:  # a broken bus must show in the UI, not kill it
                    self._publish(reader.with_error(repr(exc)) if reader
                                  else MissionState(version=1, error=repr(exc)))
                self._serve_requests(usable)
        finally:
            if bus is not None:
                bus.close()

    def _follow(self, bus: Bus) -> Bus | None:
        """``bus`` while its directory is the one at :attr:`bus_path`; None while a lost
        bus's directory is gone; the bus reopened in place once a directory is there again.

        After a bus loss ``run`` rebuilds the directory and restores the switches in it. The
        TUI does not create it meanwhile (it would race that rebuild), and nothing is read
        from or written to the deleted files, which nobody else sees: a kill then goes to the
        kill file (:meth:`_without_bus`)."""
        if not self._gone:
            if not bus.lost():
                return bus
            self._gone = True
            with contextlib.suppress(Exception):  # frees the deleted files
                bus.close()
        if not self.bus_path.is_dir():
            return None
        bus.reopen()
        self._gone = False
        return bus

    def _gone_message(self) -> str:
        return (f"the bus at {self.bus_path} was deleted; waiting for the appliance to rebuild "
                "it (a kill goes to the kill file meanwhile)")

    def _serve_requests(self, bus: Bus | None) -> None:
        """Wait out the poll interval, running any action that arrives meanwhile."""
        deadline = time.monotonic() + self._interval
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                request = self._requests.get(timeout=remaining)
            except queue.Empty:
                return
            if request is None:
                return
            if bus is None:
                self._post(self._without_bus(request))
                continue
            try:
                self._post(execute(bus, request, self.actor))
            except Exception as exc:
                self._post(ActionDone(request.action, False, repr(exc)))
            return

    def _without_bus(self, request: ActionRequest) -> ActionDone:
        """The bus cannot be opened (or is gone): a kill still works, through the state dir's
        kill file."""
        if request.action != "kill":
            return ActionDone(request.action, False, "the bus is unavailable")
        try:
            write_kill_file(self.bus_path.parent, OPERATOR_REASON,
                            "the tui found it damaged or deleted")
        except OSError as exc:
            return ActionDone(request.action, False, f"kill file not written: {exc.strerror}")
        return ActionDone(request.action, True,
                          f"bus unavailable: kill file written by {self.actor}; "
                          "maintenance ON")

    def _publish(self, state: MissionState | None) -> None:
        if state is not None:
            self._post(BusUpdate(state))

"""Chaos inside ``run``: once a week a service of the running appliance is crashed on purpose
and its time to recovery (MTTR) measured.

**Only where no real order can be at stake.** The service is registered when ``chaos.enabled``
is true and the run is the sim, a replay or a paper bybit run
(:func:`appliance.chaos_hook.chaos_allowed`). With real orders (``exchange = "bybit"``,
``bybit.paper = false``) it is never scheduled: ``run`` starts without it and says so at every
start (an error log line, a ``chaos:refused`` audit entry and a notification). That is the
fail-closed choice: a chaos setting can never put a fault next to real orders, and never stops
a live appliance from trading either. The crash itself goes through the ``chaos_crash``
handler, which checks the same rule again.

**Schedule.** Weekly at ``chaos.at`` (``Sun 04:00``: weekday and HH:MM UTC), on the market
clock (``ctx.clock``). The schedule survives restarts: the ``chaos`` snapshot on the bus (and,
should the bus be lost, the newest ``chaos:*`` entry of ``audit_log`` in DuckDB) keeps when it
was armed, the last slot run and the service crashed then. A restart within the week does not
run it again; a slot missed while ``run`` was down runs once at the next start (one run covers
every slot missed). Two runs are never less than half a week apart (``chaos.at`` moved). A run
is marked started before its fault is injected, so a run cut short (``run`` stopped, this
service crashed) is recorded as interrupted, never repeated.

**One run.** Wait until the appliance is steady (every service running, nothing degraded,
backing off or failed, and the feed storing candles); crash the next service of
``chaos.services`` (one per week, in turn) through :func:`appliance.chaos_hook.crash_handler`;
then measure, as ``methtrader chaos`` does on a scratch appliance (:mod:`chaos.harness`), the
time until the crash was recorded and the service restarted, the appliance is healthy again and
the feed stored a newer candle, and, when the trading engine was crashed, it decided a new bar.
The trading crash lands shortly before a bar closes, so its MTTR measures the restart, not the
wait for the next bar. Each wait is bounded by ``chaos.timeout_s``; past it the run is not held.
MTTR is wall time (trio's clock, as the supervisor's restart times): recovery is a real-time
promise, the schedule a market-time one.

**Result**, once per run: a ``chaos`` incident (``mttr=…s`` in its message: the Incidents
screen's MTTR column) in DuckDB and as a bus event, a ``chaos:finished`` audit entry (actor
``chaos``), a notification (kind ``chaos``) and the ``chaos`` snapshot.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import trio

from appliance.chaos_hook import chaos_allowed, crash_handler
from appliance.config import Config
from appliance.context import ServiceContext
from appliance.contracts import Event, Snapshot
from appliance.logs import service_logger
from appliance.notify import Notifier
from appliance.schedule import WEEK_S, next_weekly, parse_weekly
from appliance.services.heartbeat import service_states
from appliance.status import health
from appliance.store import Store
from appliance.supervision import RUNNING, Supervisor
from chaos.experiment import Result, Verdict, incident_message
from data.intervals import INTERVAL_MS, TRADING_INTERVALS

if TYPE_CHECKING:
    from appliance.services.trading import TradingEngine

NAME = "chaos"
EXPERIMENT = "service-crash"  # the on-demand experiment this one runs in-process
POLL_S = 0.1  # wall seconds between looks at the supervisor and the bus
WAKE_S = 3600.0  # market seconds between wake-ups (a beat) while waiting for the slot
BAR_LEAD_WALL_S = 2.0  # the trading crash lands about this much wall time before a bar closes,
MIN_BAR_LEAD_S = 30.0  # and at least this much market time
MIN_GAP_S = WEEK_S / 2  # never two runs closer than this (market time)
#: the audit actions that carry the schedule (``details["schedule"]``), newest wins
STATE_ACTIONS = ("chaos:armed", "chaos:started", "chaos:finished")

log = service_logger(NAME)


@dataclass(frozen=True)
class ChaosState:
    """The schedule's memory across restarts (market times, epoch seconds)."""

    since: float  # when the schedule was armed: no slot before it is owed
    slot: float | None = None  # the last slot a run started for
    service: str | None = None  # the service that run crashed
    finished: bool = True  # False from the injection until the result is recorded
    result: dict[str, Any] | None = None  # the last run's Result.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ChaosState | None:
        """The saved state, or None for anything else (absent, damaged, another writer's)."""
        try:
            since = float(data["since"])
            slot = None if data.get("slot") is None else float(data["slot"])
            service = None if data.get("service") is None else str(data["service"])
            result = data.get("result") if isinstance(data.get("result"), dict) else None
            return cls(since, slot, service, bool(data.get("finished", True)), result)
        except (TypeError, KeyError, ValueError, AttributeError):
            return None


def refusal(cfg: Config) -> str | None:
    """Why the weekly experiment is not scheduled in this run, or None when it is."""
    if not cfg.chaos.enabled:
        return "chaos.enabled is false"
    if not chaos_allowed(cfg):
        return ("orders are real here (exchange bybit, bybit.paper = false): chaos is never "
                "scheduled next to real orders; it runs in the sim, a replay or a paper run")
    return None


def due_slot(state: ChaosState, weekday: int, at_s: int) -> float:
    """The slot owed next: the first after the schedule was armed and at least half a week
    after the last one run (with ``chaos.at`` unchanged, simply the week after it; a ``chaos.at``
    moved within the week does not make a second run that week)."""
    after = state.since if state.slot is None else max(state.since, state.slot + MIN_GAP_S)
    return next_weekly(after, weekday, at_s)


def next_service(services: list[str], last: str | None) -> str:
    """The service after ``last`` in ``services``, round and round (the first to begin)."""
    if last in services:
        return services[(services.index(last) + 1) % len(services)]
    return services[0]


def utc_text(t: float) -> str:
    return time.strftime("%a %Y-%m-%d %H:%M", time.gmtime(t)) + " UTC"


def audit_log_state(store: Store) -> ChaosState | None:
    """The schedule as the newest ``chaos:*`` entry of ``audit_log`` left it (runs in the
    store's thread): the memory of a bus that was lost."""
    marks = ", ".join("?" for _ in STATE_ACTIONS)
    rows = store.sql(f"SELECT details FROM audit_log WHERE actor = ? AND action IN ({marks}) "
                     "ORDER BY id DESC LIMIT 1", [NAME, *STATE_ACTIONS])
    if not rows:
        return None
    details = rows[0][0]
    try:
        details = json.loads(details) if isinstance(details, str) else details
    except ValueError:
        return None
    return ChaosState.from_dict((details or {}).get("schedule"))


async def load_state(ctx: ServiceContext) -> ChaosState | None:
    """The schedule from the bus's ``chaos`` snapshot, else from DuckDB's audit_log."""
    state = ChaosState.from_dict(ctx.bus.snapshot(Snapshot.CHAOS))
    if state is None:
        state = await ctx.store.run(audit_log_state, ctx.store.store)
    return state


def save_state(ctx: ServiceContext, state: ChaosState, action: str, reason: str,
               details: dict[str, Any] | None = None) -> None:
    """Remember ``state`` (the ``chaos`` snapshot) and journal ``action`` with it."""
    ctx.bus.put_snapshot(Snapshot.CHAOS, state.as_dict())
    ctx.bus.audit(actor=NAME, action=action, reason=reason,
                  details={**(details or {}), "schedule": state.as_dict(),
                           "market_ts": ctx.clock.now()})


class Watch:
    """What recovery is made of, read in-process: the supervisor's service states, the bus's
    incident and candle events, and the trading engine's last decided bar."""

    def __init__(self, ctx: ServiceContext, supervisor: Supervisor,
                 engine: TradingEngine | None) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.engine = engine
        self.seq = ctx.bus.last_event_seq()
        self.newest_candle = -1  # open time (ms) of the newest candle announced since seq
        self.marked_candle = -1  # the newest at the mark: recovery needs a newer one
        self.crashes: set[str] = set()  # services with a crash incident since the mark

    def mark(self) -> None:
        """Look only at what happens from now on."""
        self.poll()
        self.crashes.clear()
        self.marked_candle = self.newest_candle

    def poll(self) -> None:
        self.ctx.beat(NAME)
        for e in self.ctx.bus.events_since(self.seq, kinds=[Event.INCIDENT,
                                                            Event.DATA_SOURCE_UPDATE]):
            self.seq = max(self.seq, int(e["seq"]))
            data = e.get("data") or {}
            if e["kind"] == Event.DATA_SOURCE_UPDATE:
                latest = int(data.get("latest_open_time") or -1)
                self.newest_candle = max(self.newest_candle, latest)
            elif data.get("kind") == "crash":
                self.crashes.add(str(data.get("service")))

    def health(self) -> str:
        return health(service_states(self.ctx, self.supervisor.snapshot()))

    def bar_ms(self) -> int | None:
        return None if self.engine is None else self.engine.bar_ms

    def steady(self) -> bool:
        """Every service running and a candle stored since the watch began."""
        self.poll()
        return self.health() == "OK" and self.newest_candle >= 0

    def missing(self, service: str, restarts: int, bar_ms: int | None) -> list[str]:
        """What recovery from the crash of ``service`` still lacks (empty: recovered)."""
        self.poll()
        st = self.supervisor.states[service]
        out: list[str] = []
        if service not in self.crashes:
            out.append(f"no crash incident of {service} was recorded")
        if st.restarts <= restarts or st.state != RUNNING:
            out.append(f"{service} was not restarted (state {st.state}, restarts "
                       f"{st.restarts})")
        if (h := self.health()) != "OK":
            out.append(f"the appliance is not healthy ({h})")
        if self.newest_candle <= self.marked_candle:
            out.append("the feed stored no newer candle")
        decided = self.bar_ms()
        if service == "trading" and self.engine is not None and (
                decided is None or (bar_ms is not None and decided <= bar_ms)):
            out.append("the trading engine decided no new bar")
        return out


async def before_bar_close(ctx: ServiceContext) -> None:
    """Sleep (market time) until shortly before the next trading bar closes."""
    step = INTERVAL_MS[TRADING_INTERVALS[0]] / 1000
    lead = min(step / 2, max(MIN_BAR_LEAD_S, BAR_LEAD_WALL_S * getattr(ctx.clock, "speed", 1.0)))
    now = ctx.clock.now()
    close = (now // step + 1) * step
    if close - now < lead:
        close += step
    await ctx.clock.sleep_until(close - lead)


async def crash_and_measure(ctx: ServiceContext, supervisor: Supervisor,
                            engine: TradingEngine | None, service: str, slot: float) -> Result:
    """One experiment: steady state, the crash of ``service``, the time to recovery."""
    timeout_s = ctx.cfg.chaos.timeout_s
    v = Verdict(EXPERIMENT)
    v.details.update(origin=f"weekly {utc_text(slot)}, {service}", service=service, slot=slot)
    watch = Watch(ctx, supervisor, engine)
    steady = False
    with trio.move_on_after(timeout_s):
        while not (steady := watch.steady()):
            await trio.sleep(POLL_S)
    if not steady:
        v.check(False, f"the appliance was not healthy ({watch.health()}) with candles "
                f"flowing within {timeout_s:g}s: nothing was crashed")
        return v.result(None)
    if service == "trading":
        await before_bar_close(ctx)
    watch.mark()
    before = supervisor.states.get(service)
    restarts, bar_ms = (before.restarts if before else 0), watch.bar_ms()
    crashed_at = trio.current_time()
    v.details["crashed_at_market"] = ctx.clock.now()
    try:
        await crash_handler(supervisor)(ctx, {
            "service": service, "reason": f"weekly chaos experiment ({utc_text(slot)})"})
    except (PermissionError, ValueError, RuntimeError) as exc:
        v.check(False, f"{service}: the crash was not injected ({exc})")
        return v.result(None)
    log.info("crash injected", crashed=service, slot=utc_text(slot))
    mttr: float | None = None
    lacking: list[str] = []
    with trio.move_on_after(timeout_s):
        while lacking := watch.missing(service, restarts, bar_ms):
            await trio.sleep(POLL_S)
        mttr = max(trio.current_time() - crashed_at, 1e-6)
    if mttr is None:
        v.check(False, f"not recovered within {timeout_s:g}s: " + "; ".join(lacking))
    st = supervisor.states[service]
    v.details.update(restarts=st.restarts, supervisor_recovered_in_s=st.recovered_in_s,
                     candle_before_ms=watch.marked_candle, candle_ms=watch.newest_candle,
                     bar_before_ms=bar_ms, bar_ms=watch.bar_ms())
    return v.result(mttr)


async def record(ctx: ServiceContext, notifier: Notifier, state: ChaosState,
                 result: Result) -> None:
    """A run's result, once: the incident (DuckDB and bus), the audit entry, the state and
    the notification."""
    msg = incident_message(result)
    await ctx.store.call("record_incident", NAME, "chaos", msg, None)
    ctx.bus.publish(Event.INCIDENT, {"service": NAME, "kind": "chaos", "message": msg,
                                     "mttr_s": result.mttr_s}, service=NAME,
                    market_ts=ctx.clock.now())
    save_state(ctx, state, "chaos:finished", msg, result.as_dict())
    notifier.notify(NAME, msg, result.as_dict())
    (log.info if result.held else log.error)("weekly chaos experiment done", held=result.held,
                                             mttr_s=result.mttr_s, failures=result.failures,
                                             crashed=state.service)


def interrupted(state: ChaosState) -> Result:
    """The result of a run cut short: started (the fault may be in) but never measured."""
    assert state.slot is not None
    return Result(EXPERIMENT, False, None, 0,
                  {"origin": f"weekly {utc_text(state.slot)}, {state.service}",
                   "service": state.service, "slot": state.slot},
                  ["interrupted: `run` stopped or the chaos service crashed before recovery "
                   "was measured"])


async def run(ctx: ServiceContext, supervisor: Supervisor, notifier: Notifier,
              engine: TradingEngine | None = None) -> None:
    """Wait for each weekly slot and run the experiment in it, until cancelled."""
    why = refusal(ctx.cfg)
    if why is not None:  # never registered so; this is the second lock on the door
        log.error("weekly chaos experiment not scheduled", reason=why)
        return
    weekday, at_s = parse_weekly(ctx.cfg.chaos.at)
    services = [s.strip() for s in ctx.cfg.chaos.services.split(",") if s.strip()]
    state = await load_state(ctx)
    if state is None:
        state = ChaosState(since=ctx.clock.now())
        save_state(ctx, state, "chaos:armed", f"weekly chaos experiment armed: {ctx.cfg.chaos.at}"
                   f" UTC, crashing {', '.join(services)} in turn")
    elif not state.finished:
        result = interrupted(state)
        state = replace(state, finished=True, result=result.as_dict())
        await record(ctx, notifier, state, result)
    while True:
        due = due_slot(state, weekday, at_s)
        log.info("next weekly chaos experiment", at=utc_text(due),
                 crashes=next_service(services, state.service))
        while ctx.clock.now() < due:
            ctx.beat(NAME)
            await ctx.clock.sleep_until(min(due, ctx.clock.now() + WAKE_S))
        ctx.beat(NAME)
        # the latest slot passed: one run covers every slot missed while `run` was down
        slot = next_weekly(ctx.clock.now() - WEEK_S, weekday, at_s)
        service = next_service(services, state.service)
        state = replace(state, slot=slot, service=service, finished=False)
        save_state(ctx, state, "chaos:started", f"weekly chaos experiment: crashing {service}",
                   {"due": due})
        result = await crash_and_measure(ctx, supervisor, engine, service, slot)
        state = replace(state, finished=True, result=result.as_dict())
        await record(ctx, notifier, state, result)


def scheduled_service(ctx: ServiceContext, supervisor: Supervisor, notifier: Notifier,
                      engine: TradingEngine | None) -> Callable[[], Awaitable[None]] | None:
    """The weekly experiment for the supervisor, or None when this run does not schedule it;
    when ``chaos.enabled`` asked for it with real orders, that is said loudly (log, audit,
    notification) at every start."""
    why = refusal(ctx.cfg)
    if why is None:
        return functools.partial(run, ctx, supervisor, notifier, engine)
    if ctx.cfg.chaos.enabled:
        log.error("chaos.enabled is set, but the weekly chaos experiment is not scheduled",
                  reason=why)
        ctx.bus.audit(actor=NAME, action="chaos:refused", reason=why,
                      details={"exchange": ctx.cfg.general.exchange,
                               "paper": ctx.cfg.bybit.paper})
        notifier.notify(NAME, f"weekly chaos experiment not scheduled: {why}", {"reason": why})
    return None

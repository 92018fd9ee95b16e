"""The composition root: builds everything once and runs the services under supervision.

Task tree of ``methtrader run``::

    run_appliance                      signals, --for / --until, clean shutdown
     └─ nursery
         ├─ metrics endpoint           prometheus-client HTTP thread on 127.0.0.1
         ├─ supervise("heartbeat")     bus heartbeat, status snapshot, virtual clock saved
         ├─ supervise("operator")      bus commands → handlers; audit journal → audit_log
         ├─ supervise("huey")          the job consumer child process (queue.db or Redis)
         ├─ supervise("discovery")     tradable pairs → bus, pairs / pair_events
         ├─ supervise("datasets")      new pair → 90-day backfill → lake + manifest → feature job
         ├─ supervise("training")      groups → nightly/Sunday jobs → receipts, reports → registry
         ├─ supervise("trading")       closed bars (from the feed, via the bar hub) → models →
         │                             books → order gateway (risk, kill switch) / paper desk
         ├─ supervise("shadow")        candidates → shadow (1%) → nightly promotion, parity
         ├─ supervise("risk")          7-day drawdown → deploys_frozen; VaR
         ├─ supervise("housekeeping")  nightly: old per-bar rows → daily aggregates
         ├─ supervise("drift")         closed bars → feature KL vs the training reference →
         │                             3σ rule → early retrain (a training job)
         ├─ supervise("notify")        webhook sender (events and audit always)
         ├─ supervise("chaos")         chaos.enabled (sim, replay, paper only): weekly, one
         │                             service crashed on purpose, MTTR → chaos incident
         └─ supervise("feed")          closed 1m candles → DuckDB; closed 5m/1h bars → bar hub

Later layers add their services to ``build_services``; each is an ``async def run(ctx, ...)``
in ``appliance/services/`` that runs until cancelled. ``run`` is the only process that opens
the DuckDB file read-write.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import signal
import sqlite3
import sys
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import trio
from prometheus_client import start_http_server

from appliance import backup, chaos_hook, report, startup
from appliance.bar_hub import BarHub
from appliance.bus import MAINTENANCE_MODE
from appliance.clock import Clock, VirtualClock, save_virtual_clock
from appliance.config import Config
from appliance.context import ServiceContext
from appliance.disk_full import DiskWatch
from appliance.contracts import Command, Event, Snapshot
from appliance.exchange.factory import StartupError, make_clock, make_exchange
from appliance.logs import service_logger
from appliance.metrics import Metrics
from appliance.jobs import Jobs, jobs_for
from appliance.notify import Notifier
from appliance.lifecycle import Lifecycle
from appliance.paths import StatePaths
from appliance.operator_commands import REGISTRY_COMMANDS, summarize
from appliance.safety import prepare_state_dir, write_kill_file
from appliance.services import (alerts, chaos, consumer, datasets, discovery, drift, feed,
                                 heartbeat, housekeeping, operator, risk, shadow, trading,
                                 training)
from appliance.store import StoreDamaged, StoreRunner
from appliance.supervision import IncidentFn, Supervisor

log = service_logger("supervisor")


@dataclass(frozen=True)
class RunLimits:
    """When to stop by itself: after ``for_s`` real seconds or ``until_s`` market seconds."""

    for_s: float | None = None
    until_s: float | None = None


def command_handlers(ctx: ServiceContext, engine: trading.TradingEngine,
                     notifier: Notifier, life: Lifecycle) -> dict[str, operator.Handler]:
    """Operator commands arriving through the bus (the operator service audits each)."""

    async def flatten(ctx: ServiceContext, args: dict) -> dict:
        result = await engine.flatten(args.get("reason", "operator"))
        notifier.notify("flatten", f"closed {len(result['closed'])} positions", result)
        return result

    async def reconcile(ctx: ServiceContext, args: dict) -> dict:
        return {"mismatched": await engine.reconcile()}

    def registry(name: str) -> operator.Handler:
        async def handler(ctx: ServiceContext, args: dict) -> dict:
            args = {"actor": "operator", "reason": "", **args,
                    "keep_retired": ctx.cfg.lifecycle.keep_retired}
            result = await life.apply(REGISTRY_COMMANDS[name], args, ctx.clock.now())
            return summarize(result)
        return handler

    return {Command.FLATTEN: flatten, Command.RECONCILE: reconcile,
            backup.COMMAND: backup.backup_command,
            report.COMMAND: report.report_command,
            **{name: registry(name) for name in REGISTRY_COMMANDS}}


def build_services(ctx: ServiceContext, supervisor: Supervisor, jobs: Jobs,
                   started_at: float) -> dict[str, Callable[[], Awaitable[None]]]:
    state_dir = ctx.cfg.state_path
    ncfg = ctx.cfg.notify
    notifier = Notifier(ctx.bus, ncfg.webhook_url or None, fmt=ncfg.format,
                        dedupe_s=ncfg.dedupe_s, max_per_hour=ncfg.max_per_hour)
    life = Lifecycle(ctx.store, ctx.bus, notifier, state_dir)
    engine = trading.TradingEngine(ctx)
    hub = BarHub()
    services: dict[str, Callable[[], Awaitable[None]]] = {
        "notify": notifier.run,
        alerts.NAME: functools.partial(alerts.run, ctx, notifier),
        consumer.NAME: functools.partial(consumer.run, ctx, jobs, ctx.cfg.jobs.workers,
                                         ctx.cfg.jobs.stop_grace_s, ctx.cfg.jobs.niceness),
        heartbeat.NAME: functools.partial(heartbeat.run, ctx, supervisor.snapshot, state_dir,
                                          started_at, DiskWatch(ctx)),
        operator.NAME: functools.partial(operator.run, ctx, {
            **command_handlers(ctx, engine, notifier, life),
            Command.CHAOS_CRASH: chaos_hook.crash_handler(supervisor),
            Command.CHAOS_STORE_FAULT: chaos_hook.store_fault_handler,
            Command.CHAOS_DISK_FULL: chaos_hook.disk_full_handler}),
        discovery.NAME: functools.partial(discovery.run, ctx),
        datasets.NAME: functools.partial(datasets.run, ctx, jobs),
        training.NAME: functools.partial(training.run, ctx, jobs, life),
        feed.NAME: functools.partial(feed.run, ctx, hub),
        trading.NAME: functools.partial(trading.run, ctx, engine, hub),
        shadow.NAME: functools.partial(shadow.run, ctx, notifier, life),
        risk.NAME: functools.partial(risk.run, ctx, notifier),
        housekeeping.NAME: functools.partial(housekeeping.run, ctx),
        drift.NAME: functools.partial(drift.run, ctx, hub, jobs, notifier),
    }
    weekly_chaos = chaos.scheduled_service(ctx, supervisor, notifier, engine)
    if weekly_chaos is not None:  # chaos.enabled, and never with real orders
        services[chaos.NAME] = weekly_chaos
    return services


def incident_recorder(ctx: ServiceContext) -> IncidentFn:
    """The supervisor's incidents (crashes, restarts, failures): a DuckDB row and a bus event."""

    async def on_incident(service: str, kind: str, message: str, tb: str | None) -> None:
        try:  # on the bus even when DuckDB cannot take it (a full disk)
            await ctx.store.call("record_incident", service, kind, message, tb)
        finally:
            ctx.bus.publish(Event.INCIDENT, {"service": service, "kind": kind,
                                             "message": message},
                            service="supervisor", market_ts=ctx.clock.now())

    return on_incident


def start_metrics_server(port: int, metrics: Metrics):
    if port == 0:
        return None
    try:
        server, _thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
    except OSError as exc:
        raise StartupError(f"cannot listen on 127.0.0.1:{port} for metrics ({exc.strerror}); "
                           "pick another --metrics-port or 0 to disable") from None
    log.info("metrics endpoint up", url=f"http://127.0.0.1:{port}/metrics")
    return server


# How long a worker thread (DuckDB's, the sim market's) may hold the GIL while the event loop
# waits for it: Python's default is 5 ms, the whole budget of a bar's orders.
GIL_SWITCH_S = 0.001


def freeze_startup_heap() -> None:
    """Move everything alive after start-up (the imported libraries: torch, scikit-learn,
    onnxruntime — some 300,000 objects) out of the garbage collector's reach. A full
    collection walks them all, ~135 ms here, and whichever bar it lands in waits for it; after
    the freeze it walks only what the appliance made since. Nothing of theirs is garbage."""
    gc.collect()
    gc.freeze()


async def _watch_stop(cancel: trio.CancelScope, clock: Clock, limits: RunLimits) -> None:
    start_market = clock.now()
    deadline = None if limits.for_s is None else trio.current_time() + limits.for_s
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async def on_signal() -> None:
            async for signum in signals:
                log.info("stopping on signal", signal=signal.Signals(signum).name)
                cancel.cancel()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(on_signal)
            while True:
                if deadline is not None and trio.current_time() >= deadline:
                    log.info("stopping: --for elapsed", seconds=limits.for_s)
                    break
                if limits.until_s is not None and clock.now() - start_market >= limits.until_s:
                    log.info("stopping: --until reached", market_seconds=limits.until_s)
                    break
                await trio.sleep(0.05)
            cancel.cancel()
            nursery.cancel_scope.cancel()


async def run_appliance(cfg: Config, limits: RunLimits = RunLimits()) -> int:
    """Start-up checks and the run lock (held until the very end), then the appliance."""
    prepare_state_dir(cfg.state_path)
    findings = startup.Findings(fresh=startup.is_fresh(cfg.state_path))
    lock = startup.acquire_run_lock(cfg.state_path)
    try:
        return await _run_locked(cfg, limits, findings)
    finally:
        lock.release()


async def _run_locked(cfg: Config, limits: RunLimits, findings: startup.Findings) -> int:
    state_dir = cfg.state_path
    clock = make_clock(cfg)
    metrics = Metrics()
    exchange = make_exchange(
        cfg, clock, lambda ep, used: metrics.exchange_rate_limit_usage.labels(ep).set(used))
    store = startup.open_store(state_dir)
    try:
        bus = startup.open_bus(cfg, findings)
    except BaseException:
        store.close()
        raise
    startup.finish_opening(cfg, findings)
    ctx = ServiceContext(cfg=cfg, clock=clock, bus=bus, store=StoreRunner(store),
                         exchange=exchange, metrics=metrics)
    started_at = time.time()
    try:
        jobs = jobs_for(cfg)
    except sqlite3.DatabaseError as exc:  # huey opens queue.db: a damaged one says so here
        for close in (store.close, bus.close):
            with contextlib.suppress(Exception):
                close()
        raise StartupError("; ".join(startup.unusable_queue(StatePaths(state_dir).queue,
                                                            str(exc)))) from None

    supervisor = Supervisor(cfg.supervisor, on_incident=incident_recorder(ctx),
                            on_restart=lambda n: metrics.service_restarts_total.labels(n).inc())
    try:
        await startup.settle(ctx, findings)
    except BaseException as exc:
        if (fatal_at_start := _fatal_cause(exc)) is not None:
            _fail_closed(ctx, fatal_at_start)
        for close in (store.close, jobs.close, bus.close):
            with contextlib.suppress(Exception):
                close()
        raise
    freeze_startup_heap()
    sys.setswitchinterval(GIL_SWITCH_S)
    server = start_metrics_server(cfg.general.metrics_port, metrics)
    bus.audit(actor="appliance", action="run:start", reason="",
              details={"pid": os.getpid(), "exchange": exchange.name,
                       "speed": cfg.general.speed, "market_time": clock.now()})
    log.info("appliance starting", state_dir=str(state_dir), exchange=exchange.name,
             speed=cfg.general.speed, market_time=clock.now())
    fatal: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            for name, fn in build_services(ctx, supervisor, jobs, started_at).items():
                await nursery.start(supervisor.supervise, name, fn)
            nursery.start_soon(_watch_stop, nursery.cancel_scope, clock, limits)
    except BaseException as exc:
        fatal = _fatal_cause(exc)
        if fatal is not None:
            _fail_closed(ctx, fatal)
        raise
    finally:
        failures: list[str] = []
        with trio.move_on_after(cfg.supervisor.shutdown_timeout_s) as scope:
            scope.shield = True
            failures = await _shutdown(ctx, supervisor, started_at)
            await _step(failures, "close the exchange", exchange.aclose)
        if fatal is None and store.damage is not None:  # first met by the final checkpoint
            fatal = StoreDamaged(store.damage)
            _fail_closed(ctx, fatal)
        closers = [("close the DuckDB file", store.close), ("close the job queue", jobs.close),
                   ("close the bus", bus.close)]
        if server is not None:
            closers.insert(0, ("stop the metrics endpoint",
                               lambda: (server.shutdown(), server.server_close())))
        for what, close in closers:  # each one, whatever the others did (a full disk...)
            await _step(failures, what, close)
    if failures:
        log.error("appliance stopped, but not everything was saved", failures=failures)
    if fatal is not None:  # found by the shutdown (else it is on its way out already)
        raise fatal
    if failures:
        raise startup.ShutdownIncomplete("stopped, but shutdown could not "
                                         + "; ".join(failures))
    log.info("appliance stopped")
    return 0


def _fatal_cause(exc: BaseException) -> BaseException | None:
    """The error marked ``fatal`` that stopped the services (it leaves them in a group)."""
    if isinstance(exc, BaseExceptionGroup):
        return next((c for e in exc.exceptions if (c := _fatal_cause(e)) is not None), None)
    return exc if getattr(exc, "fatal", False) else None


def _fail_closed(ctx: ServiceContext, cause: BaseException) -> None:
    """Maintenance mode ON (on the bus, journalled) before the appliance stops on ``cause``:
    nothing trades again until an operator has looked and resumed."""
    reason = f"fatal: {str(cause).splitlines()[0][:300]}"
    log.critical("the appliance stops with maintenance mode ON", reason=reason)
    try:
        ctx.bus.set_switch(MAINTENANCE_MODE, True, actor="appliance", reason=reason,
                           source="supervisor")
    except Exception as exc:  # the bus may be gone too; the KILL file holds the switch then
        log.exception("maintenance mode could not be set on the bus; writing the kill file")
        write_kill_file(ctx.cfg.state_path, reason, why_bus=str(exc)[:300])


async def _step(failures: list[str], what: str, fn: Callable[[], object]) -> None:
    """Run one shutdown step; a failure is recorded and the next step still runs."""
    try:
        result = fn()
        if hasattr(result, "__await__"):
            await result  # type: ignore[misc]
    except Exception as exc:
        failures.append(f"{what} ({exc})")


async def _shutdown(ctx: ServiceContext, supervisor: Supervisor, started_at: float
                    ) -> list[str]:
    """Flush what the services left: the clock, the audit journal, a final snapshot. Each
    step runs even when an earlier one failed; returns what failed."""
    failures: list[str] = []

    async def snapshot() -> None:
        ctx.bus.put_snapshot(Snapshot.STATUS, await ctx.store.run(heartbeat.status_snapshot,
                                                           ctx.store.store))

    def final_beat() -> None:
        states = supervisor.snapshot()
        for st in states.values():
            if st["state"] != "failed":
                st["state"] = "stopped"
        ctx.bus.beat(heartbeat.heartbeat_payload(ctx, states, started_at, final=True))

    if isinstance(ctx.clock, VirtualClock):
        await _step(failures, "save the virtual clock",
                    lambda: save_virtual_clock(ctx.cfg.state_path, ctx.clock))
    await _step(failures, "journal run:stop", lambda: ctx.bus.audit(
        actor="appliance", action="run:stop", reason="",
        details={"market_time": ctx.clock.now()}))
    await _step(failures, "copy the audit journal", lambda: operator.sync_audit(ctx))
    await _step(failures, "save the status snapshot", snapshot)
    await _step(failures, "checkpoint DuckDB", lambda: ctx.store.call("sql", "CHECKPOINT"))
    await _step(failures, "write the final heartbeat", final_beat)
    return failures


def run_sync(cfg: Config, limits: RunLimits) -> int:
    return trio.run(run_appliance, cfg, limits)


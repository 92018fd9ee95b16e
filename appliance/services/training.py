"""Layer 3, continuous training: the schedule, the queue and the registry.

* Groups: the tradable pairs with datasets, cut by liquidity tier and return correlation
  (:mod:`models.groups`), recomputed each market day.
* Bootstrap: a group with no model at all gets its first runs at once (on the virtual clock,
  market time waits for them, up to ``training.bootstrap_hold_s`` of real time).
* Nightly at ``training.nightly_at`` (UTC, market time): one run per group and kind. Sundays also
  refresh each group's ensemble. Run ids are ``<day>-<group>-<kind>``, so a schedule that fires
  twice (a restart around 02:00) queues nothing twice.
* Jobs run in the huey consumer (3 attempts, exponential backoff); each leaves a receipt in its
  artifacts folder, which this service registers in DuckDB as a ``candidate`` (idempotent by run
  id), counting ``models_trained_total``.
* The weekly AutoML study of each group (:mod:`appliance.services.automl_weekly`), queued
  behind the nightly runs; its winner is registered here like any run. The weekly
  distillation (:mod:`appliance.services.distill_weekly`) after it: its teacher and student
  are registered here too.
* Disk guard, once per nightly run (:mod:`appliance.disk_guard`): when the state dir's
  filesystem is fuller than ``training.disk_threshold`` it archives the worst 20% of the models
  that had their verdict (through the lifecycle), or, when the lake is what fills the disk,
  raises an incident and trims the lake's days older than ``datasets.retention_days``.

The ``training`` snapshot on the bus (run progress, loss curves, the device each run trained on)
feeds the dashboard.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import trio

from appliance import job_reports, lifecycle
from appliance.clock import VirtualClock
from appliance.context import ServiceContext
from appliance.contracts import Event, Snapshot
from appliance.disk_guard import ModelFiles, plan
from appliance.jobs import SKIPPED, TRAINING_PREFIX, Jobs
from appliance.logs import service_logger
from appliance.paths import StatePaths
from appliance.automl import storage_url, studies_snapshot
from appliance.services.automl_weekly import WeeklyStudies
from appliance.services.distill_weekly import WeeklyDistillation
from appliance.schedule import DAY_S, day_tag, is_sunday, next_daily, parse_hhmm
from appliance.store import Store
from data.lake import Lake
from models.artifacts import finished_runs
from models.groups import Group, GroupingRules, make_groups
from models.registry import list_models, model_id_of
from models.training import run_setup

NAME = "training"
CATCH_UP_S = 6 * 3600
SKIPPED_RETRY_S = 3600.0  # market time before a run skipped for want of history is queued again
DiskUsage = Callable[[Path], tuple[int, int]]


def filesystem_usage(path: Path) -> tuple[int, int]:
    """(used, total) bytes of the filesystem holding ``path``."""
    usage = shutil.disk_usage(path)
    return usage.used, usage.total


def groups_from_lake(lake_root: Path, symbols: list[str], rules: GroupingRules) -> list[Group]:
    """Groups of ``symbols`` that have a 5m dataset, with liquidity and correlation measured on
    the lake's own candles (so it needs neither DuckDB nor the exchange)."""
    from data.lake import Lake

    lake = Lake(lake_root)
    have = set(lake.symbols("5m"))
    turnovers, returns = {}, {}
    for s in symbols:
        if s not in have:
            continue
        hourly = lake.read("1h", s)
        if len(hourly) < 3:
            continue
        turnovers[s] = float(hourly[-24:, 6].sum())
        returns[s] = np.diff(np.log(hourly[-24 * 30:, 4]))
    return make_groups(turnovers, returns, rules)


def models_snapshot(store: Store, live: dict[str, dict[str, Any]] | None = None
                    ) -> list[dict[str, Any]]:
    """The Models screen's leaderboard rows: validation figures for candidates, the current
    book's own figures (``live``, from the shadow desk) for shadow and prod models, and each
    model's parent (a distilled student's teacher: its run and model ids)."""
    rows = []
    for m in list_models(store):
        metrics = m["metrics"] or {}
        current = (live or {}).get(m["model_id"])
        parent = m.get("parent_run_id")
        row = {"model_id": m["model_id"], "group": m["group"], "kind": m["kind"],
               "mode": m["mode"], "since": m.get("mode_since"), "run_id": m["run_id"],
               "timeframe": m.get("timeframe"), "parent_run_id": parent,
               "parent_model_id": model_id_of(parent) if parent else None,
               "val_sharpe": metrics.get("sharpe"), "sharpe": metrics.get("sharpe"),
               "pnl": None, "days_in_shadow": None, "trades": metrics.get("trades"),
               "fills": None, "parity": None, "pinned": bool(m.get("pinned")),
               "autogen": bool((m.get("tags") or {}).get("autogen")), "live": current}
        if current:
            row.update({k: current.get(k) for k in ("sharpe", "pnl", "trades", "fills",
                                                     "days_in_shadow", "parity")})
        rows.append(row)
    return rows


def unregistered_runs(store: Store, state_dir: Path) -> list[dict[str, Any]]:
    """Receipts of finished runs that the registry does not know yet."""
    known = {r[0] for r in store.sql("SELECT run_id FROM training_runs "
                                     "WHERE status = 'completed'")}
    return [r for r in finished_runs(state_dir) if r["run_id"] not in known]


def model_files(store: Store, state_dir: Path) -> list[ModelFiles]:
    """What each live model's files weigh (the disk guard's input)."""
    out = []
    for m in list_models(store):
        if m["mode"] == "archived" or not m.get("onnx_path"):
            continue
        path = StatePaths(state_dir).resolve_stored(m["onnx_path"])
        size = path.stat().st_size if path.exists() else 0
        out.append(ModelFiles(m["model_id"], m["mode"], (m["metrics"] or {}).get("sharpe"),
                              bool(m.get("pinned")), size))
    return out


def training_snapshot(store: Store, progress: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run for the Training screen: its progress (from the jobs) or its registry row,
    with the device it trained on as the run recorded it (None until it says)."""
    runs = {p["run_id"]: dict(p) for p in progress}
    for m in list_models(store):
        entry = runs.setdefault(m["run_id"], {"run_id": m["run_id"], "status": "completed",
                                              "percent": 100.0})
        metrics = m.get("metrics") or {}
        entry.update({"device": m.get("device") or entry.get("device"),
                      "parent_run_id": m.get("parent_run_id"), "model_id": m["model_id"], "group": m["group"], "kind": m["kind"],
                      "symbols": m["symbols"], "timeframe": m.get("timeframe"),
                      "wf_score": metrics.get("wf_score"), "wf_mean": metrics.get("wf_mean"),
                      "wf_std": metrics.get("wf_std"),
                      "folds": [{k: f.get(k) for k in ("start", "end", "sharpe", "trades")}
                                for f in metrics.get("folds") or [] if isinstance(f, dict)]})
    for run_id, loss in store.sql("SELECT run_id, loss_curve FROM training_runs"):
        if run_id in runs and loss:
            runs[run_id]["loss_curve"] = json.loads(loss)
    return sorted(runs.values(), key=lambda r: r["run_id"])[-100:]


def config_setup(ctx: ServiceContext, timeframe: str) -> dict[str, Any]:
    """A run's setup (:func:`models.training.run_setup`) from the appliance's config."""
    cfg = ctx.cfg
    return run_setup(timeframe, cfg.training.folds, cfg.trading.threshold, cfg.sim.taker_fee,
                     cfg.sim.slippage_bps / 10_000, cfg.training.device)


async def queue_incident(ctx: ServiceContext, service: str, message: str) -> None:
    """Record that the job queue could not be reached (an incident, evented): jobs degrade,
    the service goes on."""
    await ctx.store.call("record_incident", service, "job_queue", message[:500], None)
    ctx.bus.publish(Event.INCIDENT, {"service": service, "kind": "job_queue",
                                     "message": message[:500]}, service=service,
                    market_ts=ctx.clock.now())


async def enqueue_run(ctx: ServiceContext, jobs: Jobs, group: str, symbols: list[str],
                      kind: str, run_id: str, tags: dict[str, Any], timeframe: str = "5m"
                      ) -> None:
    """Queue one training job (announced on the bus first, so the Training screen shows it
    queued); its receipt is registered by the training service like any other run."""
    ctx.bus.cache.set(f"{TRAINING_PREFIX}{run_id}", {
        "run_id": run_id, "group": group, "kind": kind, "status": "queued", "percent": 0.0,
        "symbols": list(symbols), "timeframe": timeframe})
    args = (run_id, group, list(symbols), kind, {}, tags, None, config_setup(ctx, timeframe))
    await ctx.io(lambda: jobs.enqueue("train", *args))
    service_logger(NAME).info("training queued", run_id=run_id, group=group, kind=kind,
                              timeframe=timeframe, trigger=tags.get("trigger"))


class Trainer:
    """The service's state between passes (kept out of module globals for tests)."""

    def __init__(self, ctx: ServiceContext, jobs: Jobs, life: lifecycle.Lifecycle,
                 disk_usage: DiskUsage) -> None:
        self.ctx, self.jobs, self.life, self.disk_usage = ctx, jobs, life, disk_usage
        cfg = ctx.cfg.training
        self.rules = GroupingRules(max_size=cfg.max_group_size)
        self.nightly_s = parse_hhmm(cfg.nightly_at)
        self.groups: list[Group] = []
        self.groups_day = ""
        self.available: list[str] = []
        # a nightly missed by a restart within the last hours still runs (run ids are per day,
        # so one that did run is not trained twice: its job returns the receipt)
        upcoming = next_daily(ctx.clock.now(), self.nightly_s)
        missed = upcoming - DAY_S
        self.next_nightly = missed if ctx.clock.now() - missed < CATCH_UP_S else upcoming
        self.log = service_logger(NAME)
        self.kinds = [k.strip() for k in cfg.kinds.split(",") if k.strip()]
        self.timeframes = [t.strip() for t in cfg.timeframes.split(",") if t.strip()]
        self.weekly = WeeklyStudies(ctx, jobs)
        self.distill = WeeklyDistillation(ctx, jobs)
        self.lost = job_reports.queue_errors(jobs)  # what a lost Redis raises
        self.unimported: set[str] = set()  # reported runs whose artifacts are not there yet
        self.queue_down = False  # the job queue (Redis) is unreachable (an incident was made)
        self.queue_ok = True  # nothing in this pass found it unreachable
        self.held_since: float | None = None  # trio time the bootstrap hold began
        self.hold_expired = False
        self.skipped: dict[str, float] = {}  # bootstrap run id → market time it was seen skipped

    def runs(self, day: str, group: Group, kinds: list[str]) -> list[tuple[str, str, str]]:
        """(run id, kind, timeframe) of a group's runs of the day: ``<day>-<group>-<kind>``,
        suffixed with the timeframe when it is not 5m."""
        return [(f"{day}-{group.name}-{kind}" + ("" if tf == "5m" else f"-{tf}"), kind, tf)
                for tf in self.timeframes for kind in kinds]

    async def enqueue(self, group: Group, kind: str, run_id: str, tags: dict[str, Any],
                      timeframe: str = "5m") -> None:
        await enqueue_run(self.ctx, self.jobs, group.name, list(group.symbols), kind, run_id,
                          tags, timeframe)

    async def refresh_groups(self) -> None:
        """Regroup each market day, and whenever the set of pairs with datasets changes."""
        from data.lake import Lake

        day = day_tag(self.ctx.clock.now())
        tradable = set(self.ctx.bus.tradable_pairs() or [])
        lake_root = StatePaths(self.ctx.cfg.state_path).lake
        available = sorted(tradable & set(Lake(lake_root).symbols("5m")))
        if day != self.groups_day or available != self.available:
            self.groups = await self.ctx.io(groups_from_lake, lake_root, available, self.rules)
            self.groups_day, self.available = day, available

    async def bootstrap(self) -> bool:
        """Queue the first runs of every group that has no model; True while some group is
        still waiting for its first model."""
        models = await self.ctx.store.run(list_models, self.ctx.store.store)
        served = {m["group"] for m in models}
        cache = self.ctx.bus.cache
        notes = {str(k)[len(TRAINING_PREFIX):]: cache.get(k) for k in cache.iterkeys()
                 if str(k).startswith(TRAINING_PREFIX)}
        day = day_tag(self.ctx.clock.now())
        waiting = False
        for group in self.groups:
            if group.name in served:
                continue
            for run_id, kind, tf in self.runs(day, group, self.kinds):
                note = notes.get(run_id) or {}
                if not note or note.get("status") == SKIPPED and self.due_again(run_id, note):
                    await self.enqueue(group, kind, run_id, {"trigger": "bootstrap"}, tf)
                    waiting = True
                elif note.get("status") != SKIPPED:
                    waiting = True  # queued, running, or failed (huey retries those)
        return waiting

    def due_again(self, run_id: str, note: dict[str, Any]) -> bool:
        """Whether a bootstrap run skipped for want of history (too few bars for the folds)
        is queued again: ``SKIPPED_RETRY_S`` of market time after this service first saw it
        skipped (said once, at info: a new pair's first hours are not a fault). Such a group
        does not hold the market clock: only more market time brings the history it needs."""
        now = self.ctx.clock.now()
        if run_id not in self.skipped:
            self.skipped[run_id] = now
            self.log.info("not enough history to train yet; trying again later", run_id=run_id,
                          reason=note.get("error"), retry_in_s=SKIPPED_RETRY_S)
        if now - self.skipped[run_id] < SKIPPED_RETRY_S:
            return False
        del self.skipped[run_id]
        return True

    def hold_for_bootstrap(self, waiting: bool) -> bool:
        """On the virtual clock, market time stands still while a group waits for its first
        model (at most ``training.bootstrap_hold_s`` of real time): in sim a fresh appliance
        starts trading from its first market hour, however long the machine takes to train."""
        clock = self.ctx.clock
        if not isinstance(clock, VirtualClock):
            return False
        limit = self.ctx.cfg.training.bootstrap_hold_s
        if waiting and not self.hold_expired:
            self.held_since = self.held_since or trio.current_time()
            if trio.current_time() - self.held_since <= limit:
                clock.hold(NAME)
                return True
            self.hold_expired = True
            self.log.warning("bootstrap training is slow; market time runs on",
                             held_s=round(trio.current_time() - self.held_since, 1))
        clock.release(NAME)
        return False

    async def nightly(self) -> None:
        t = self.next_nightly
        day = day_tag(t)
        for group in self.groups:
            for run_id, kind, tf in self.runs(day, group, self.kinds):
                await self.enqueue(group, kind, run_id, {"trigger": "nightly"}, tf)
            if is_sunday(t):
                for run_id, kind, tf in self.runs(day, group, ["ensemble"]):
                    await self.enqueue(group, kind, run_id, {"trigger": "sunday"}, tf)
        self.next_nightly = next_daily(t, self.nightly_s)

    async def register(self) -> None:
        """Register every finished run: receipts in the state dir's artifacts folder, and
        (``jobs.backend = "redis"``) those reported through huey's result store."""
        state = self.ctx.cfg.state_path
        try:
            reported = await self.ctx.io(job_reports.take, self.jobs, state, self.ctx.bus)
        except self.lost as exc:  # the runs in the state dir's own folder still register
            await self.queue_lost(exc)
            reported = []
        for receipt, error in reported:
            if error is not None and receipt["run_id"] not in self.unimported:
                self.unimported.add(receipt["run_id"])  # said once; tried on every pass
                self.log.warning("a worker's run cannot be imported yet", reason=error)
        new = await self.ctx.store.run(unregistered_runs, self.ctx.store.store, state)
        seen = {r["run_id"] for r in new}
        new += [r for r, error in reported if error is None and r["run_id"] not in seen]
        for r in new:
            done = await self.life.apply(lifecycle.register, r, now=self.ctx.clock.now())
            if r["run_id"] in {x["run_id"] for x, _ in reported}:
                await self.ctx.io(job_reports.ack, self.jobs, job_reports.RECEIPT,
                                  str(r["run_id"]))
            if not done:
                continue
            self.ctx.metrics.models_trained_total.inc()
            self.ctx.bus.publish(Event.MODEL_REGISTERED, {
                "run_id": r["run_id"], "kind": r["kind"], "group": r["group"],
                "mode": "candidate", "sharpe": r["metrics"].get("sharpe")}, service=NAME,
                market_ts=self.ctx.clock.now())
            self.log.info("candidate registered", run_id=r["run_id"], kind=r["kind"],
                          group=r["group"], sharpe=r["metrics"].get("sharpe"))

    async def queue_lost(self, exc: BaseException) -> None:
        """The job queue (Redis) cannot be reached: one incident per outage, then the service
        carries on (nothing is queued or registered until it is back; schedules catch up)."""
        self.queue_ok = False
        if self.queue_down:  # said once per outage; each pass after that only at debug
            self.log.debug("job queue still unreachable", reason=str(exc))
            return
        self.log.warning("job queue unreachable; training and AutoML wait for it",
                         reason=str(exc))
        self.queue_down = True
        await queue_incident(self.ctx, NAME, f"job queue unreachable: {exc}")

    async def queue_back(self) -> None:
        """End of a pass: the outage is over when nothing in it found the queue away."""
        if self.queue_ok and self.queue_down:
            self.queue_down = False
            self.log.info("job queue reachable again")

    async def guard_disk(self) -> None:
        """Once per nightly run: free space by the disk guard's rule (appliance/disk_guard)."""
        cfg, state = self.ctx.cfg, self.ctx.cfg.state_path
        used_bytes, total = self.disk_usage(state)
        used = used_bytes / total
        files = await self.ctx.store.run(model_files, self.ctx.store.store, state)
        lake = Lake(StatePaths(state).lake)
        decision = plan(used, cfg.training.disk_threshold, total, files,
                        await self.ctx.io(lake.size_bytes), cfg.training.archive_fraction)
        now = self.ctx.clock.now()
        if decision.action == "archive":
            for model_id in decision.archive:
                await self.life.apply(lifecycle.archive, model_id, actor="disk_guard",
                                      reason=decision.reason, now=now)
        elif decision.action == "trim_lake":
            before = int((now - cfg.datasets.retention_days * DAY_S) * 1000)
            freed, symbols = await self.ctx.io(lake.trim_days, before)
            message = (f"{decision.reason}; trimmed lake days older than "
                       f"{cfg.datasets.retention_days} days: {freed:,} bytes freed in "
                       f"{len(symbols)} symbols")
            self.log.warning(message)
            await self.ctx.store.call("record_incident", NAME, "disk", message, None)
            self.ctx.bus.publish(Event.INCIDENT, {"service": NAME, "kind": "disk",
                                              "message": message}, service=NAME, market_ts=now)
            self.ctx.bus.audit(actor="disk_guard", action="lake_trimmed", reason=message,
                               details={"freed_bytes": freed, "symbols": symbols})
            if self.life.notifier is not None:
                self.life.notifier.notify("disk_guard", message, {"freed_bytes": freed})

    async def publish_snapshot(self) -> None:
        cache = self.ctx.bus.cache
        progress = [cache.get(k) for k in cache.iterkeys() if str(k).startswith(TRAINING_PREFIX)]
        progress = [p for p in progress if p]
        for p in progress:
            if p.get("percent") is not None:
                self.ctx.metrics.training_progress.labels(p["run_id"]).set(p["percent"] / 100)
        snap = await self.ctx.store.run(training_snapshot, self.ctx.store.store, progress)
        self.ctx.bus.put_snapshot(Snapshot.TRAINING, snap)
        self.ctx.bus.put_snapshot(Snapshot.MODELS, await self.ctx.store.run(
            models_snapshot, self.ctx.store.store, self.ctx.bus.snapshot(Snapshot.MODEL_LIVE)))
        await self.ctx.store.run(lifecycle.publish_registry, self.ctx.store.store, self.ctx.bus)
        try:
            self.ctx.bus.put_snapshot(Snapshot.AUTOML, await self.ctx.io(
                studies_snapshot, self.ctx.cfg.state_path, storage_url(self.ctx.cfg)))
        except self.lost as exc:  # studies on Redis: the screen keeps its last snapshot
            await self.queue_lost(exc)


async def run(ctx: ServiceContext, jobs: Jobs, life: lifecycle.Lifecycle,
              disk_usage: DiskUsage = filesystem_usage) -> None:
    t = Trainer(ctx, jobs, life, disk_usage)
    try:
        while True:
            ctx.beat(NAME)
            await t.refresh_groups()
            holding = False
            t.queue_ok = True
            try:
                await t.register()
                holding = t.hold_for_bootstrap(await t.bootstrap())
                if ctx.clock.now() >= t.next_nightly:
                    await t.nightly()
                    await t.guard_disk()
                await t.weekly.step(t.groups)
                await t.distill.step(t.groups)
            except t.lost as exc:  # Redis is away: jobs wait (schedules catch up), trading goes on
                await t.queue_lost(exc)
            await t.publish_snapshot()
            await t.queue_back()
            if holding:
                await trio.sleep(1.0)  # market time stands still: poll in real time
                continue
            await ctx.clock.sleep_until(min(ctx.clock.now()
                                            + ctx.cfg.training.check_interval_s, t.next_nightly))
    finally:
        if isinstance(ctx.clock, VirtualClock):
            ctx.clock.release(NAME)

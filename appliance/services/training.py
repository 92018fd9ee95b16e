"""Layer 3, continuous training: the schedule, the queue and the registry.

* Groups: the tradable pairs with datasets, cut by liquidity tier and return correlation
  (:mod:`models.groups`), recomputed each market day.
* Bootstrap: a group with no model at all gets its first runs at once.
* Nightly at ``training.nightly_at`` (UTC, market time): one run per group and kind. Sundays also
  refresh each group's ensemble. Run ids are ``<day>-<group>-<kind>``, so a schedule that fires
  twice (a restart around 02:00) queues nothing twice.
* Jobs run in the huey consumer (3 attempts, exponential backoff); each leaves a receipt in its
  artifacts folder, which this service registers in DuckDB as a ``candidate`` (idempotent by run
  id), counting ``models_trained_total``.
* Disk guard: when the state dir's filesystem is fuller than ``training.disk_threshold``, the
  worst 20% of non-prod, unpinned models by validation Sharpe are archived: their model files are
  deleted, their rows kept, each with an audit entry.

The ``training`` snapshot on the bus (run progress, loss curves, device) feeds the dashboard.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np

from appliance.context import ServiceContext
from appliance.jobs import TRAINING_PREFIX, Jobs
from appliance.logs import service_logger
from appliance.schedule import DAY_S, day_tag, is_sunday, next_daily, parse_hhmm
from appliance.store import Store
from models.artifacts import delete_model_files, finished_runs
from models.groups import Group, GroupingRules, make_groups
from models.registry import list_models, register_result, set_mode, worst_non_prod

NAME = "training"
CATCH_UP_S = 6 * 3600
DiskUsage = Callable[[Path], float]


def training_device() -> str:
    """What the training screen shows: the GPU's name when nvidia-smi sees one, else CPU.
    (Asked of nvidia-smi so that the appliance itself never loads torch.)"""
    if shutil.which("nvidia-smi") is None:
        return "CPU"
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "CPU"
    line = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout else ""
    return line.split(":", 1)[1].split("(")[0].strip() if ":" in line else "CPU"


def disk_usage_fraction(path: Path) -> float:
    usage = shutil.disk_usage(path)
    return usage.used / usage.total


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
    """The Models screen's leaderboard rows: validation figures for candidates, the books'
    own live figures (from the shadow desk) for shadow and prod models."""
    rows = []
    for m in list_models(store):
        metrics = m["metrics"] or {}
        row = {"model_id": m["model_id"], "group": m["group"], "kind": m["kind"],
               "mode": m["mode"], "sharpe": metrics.get("sharpe"), "pnl": None,
               "days_in_shadow": None, "trades": metrics.get("trades"), "parity": None,
               "pinned": bool(m.get("pinned"))}
        row.update((live or {}).get(m["model_id"], {}))
        rows.append(row)
    return rows


def register_finished(store: Store, state_dir: Path) -> list[dict[str, Any]]:
    return [r for r in finished_runs(state_dir) if register_result(store, r)]


def archive_worst(store: Store, fraction: float) -> list[dict[str, Any]]:
    victims = worst_non_prod(list_models(store), fraction)
    for m in victims:
        set_mode(store, m["model_id"], "archived")
        delete_model_files(m["onnx_path"])
    return victims


def training_snapshot(store: Store, progress: list[dict[str, Any]], device: str
                      ) -> list[dict[str, Any]]:
    runs = {p["run_id"]: {**p, "device": device} for p in progress}
    for m in list_models(store):
        entry = runs.setdefault(m["run_id"], {"run_id": m["run_id"], "status": "completed",
                                              "percent": 100.0, "device": device})
        entry.update({"model_id": m["model_id"], "group": m["group"], "kind": m["kind"],
                      "symbols": m["symbols"]})
    for run_id, loss in store.sql("SELECT run_id, loss_curve FROM training_runs"):
        if run_id in runs and loss:
            runs[run_id]["loss_curve"] = json.loads(loss)
    return sorted(runs.values(), key=lambda r: r["run_id"])[-100:]


class Trainer:
    """The service's state between passes (kept out of module globals for tests)."""

    def __init__(self, ctx: ServiceContext, jobs: Jobs, disk_usage: DiskUsage) -> None:
        self.ctx, self.jobs, self.disk_usage = ctx, jobs, disk_usage
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
        self.device = training_device()

    async def enqueue(self, group: Group, kind: str, run_id: str, tags: dict[str, Any]) -> None:
        self.ctx.bus.cache.set(f"{TRAINING_PREFIX}{run_id}", {
            "run_id": run_id, "group": group.name, "kind": kind, "status": "queued",
            "percent": 0.0, "symbols": list(group.symbols)})
        args = (run_id, group.name, list(group.symbols), kind, {}, tags)
        await self.ctx.io(lambda: self.jobs.enqueue("train", *args))
        self.log.info("training queued", run_id=run_id, group=group.name, kind=kind)

    async def refresh_groups(self) -> None:
        """Regroup each market day, and whenever the set of pairs with datasets changes."""
        from data.lake import Lake

        day = day_tag(self.ctx.clock.now())
        tradable = set(self.ctx.bus.tradable_pairs() or [])
        available = sorted(tradable & set(Lake(self.ctx.cfg.state_path / "lake").symbols("5m")))
        if day != self.groups_day or available != self.available:
            self.groups = await self.ctx.io(
                groups_from_lake, self.ctx.cfg.state_path / "lake", available, self.rules)
            self.groups_day, self.available = day, available

    async def bootstrap(self) -> None:
        models = await self.ctx.store.run(list_models, self.ctx.store.store)
        served = {m["group"] for m in models}
        pending = {str(k) for k in self.ctx.bus.cache.iterkeys()
                   if str(k).startswith(TRAINING_PREFIX)}
        day = day_tag(self.ctx.clock.now())
        for group in self.groups:
            if group.name in served:
                continue
            for kind in self.kinds:
                run_id = f"{day}-{group.name}-{kind}"
                if f"{TRAINING_PREFIX}{run_id}" not in pending:
                    await self.enqueue(group, kind, run_id, {"trigger": "bootstrap"})

    async def nightly(self) -> None:
        t = self.next_nightly
        day = day_tag(t)
        for group in self.groups:
            for kind in self.kinds:
                await self.enqueue(group, kind, f"{day}-{group.name}-{kind}",
                                   {"trigger": "nightly"})
            if is_sunday(t):
                await self.enqueue(group, "ensemble", f"{day}-{group.name}-ensemble",
                                   {"trigger": "sunday"})
        self.next_nightly = next_daily(t, self.nightly_s)

    async def register(self) -> None:
        new = await self.ctx.store.run(register_finished, self.ctx.store.store,
                                       self.ctx.cfg.state_path)
        for r in new:
            self.ctx.metrics.models_trained_total.inc()
            self.ctx.bus.publish("model_registered", {
                "run_id": r["run_id"], "kind": r["kind"], "group": r["group"],
                "mode": "candidate", "sharpe": r["metrics"].get("sharpe")}, service=NAME,
                market_ts=self.ctx.clock.now())
            self.log.info("candidate registered", run_id=r["run_id"], kind=r["kind"],
                          group=r["group"], sharpe=r["metrics"].get("sharpe"))

    async def guard_disk(self) -> None:
        cfg = self.ctx.cfg.training
        used = self.disk_usage(self.ctx.cfg.state_path)
        if used <= cfg.disk_threshold:
            return
        victims = await self.ctx.store.run(archive_worst, self.ctx.store.store,
                                           cfg.archive_fraction)
        for m in victims:
            reason = f"disk {used:.0%} > {cfg.disk_threshold:.0%}: worst validation Sharpe"
            self.ctx.bus.audit(actor="training", action=f"archive {m['model_id']}",
                               reason=reason, details={"sharpe": m["metrics"].get("sharpe")})
            self.ctx.bus.publish("model_archived", {"model_id": m["model_id"],
                                                    "reason": reason}, service=NAME)

    async def publish_snapshot(self) -> None:
        cache = self.ctx.bus.cache
        progress = [cache.get(k) for k in cache.iterkeys() if str(k).startswith(TRAINING_PREFIX)]
        progress = [p for p in progress if p]
        for p in progress:
            if p.get("percent") is not None:
                self.ctx.metrics.training_progress.labels(p["run_id"]).set(p["percent"] / 100)
        snap = await self.ctx.store.run(training_snapshot, self.ctx.store.store, progress,
                                        self.device)
        self.ctx.bus.put_snapshot("training", snap)
        self.ctx.bus.put_snapshot("models", await self.ctx.store.run(
            models_snapshot, self.ctx.store.store, self.ctx.bus.snapshot("model_live")))
        self.ctx.bus.put_snapshot("registry", await self.ctx.store.run(
            list_models, self.ctx.store.store))


async def run(ctx: ServiceContext, jobs: Jobs, disk_usage: DiskUsage = disk_usage_fraction
              ) -> None:
    t = Trainer(ctx, jobs, disk_usage)
    while True:
        ctx.beat(NAME)
        await t.refresh_groups()
        await t.register()
        await t.bootstrap()
        if ctx.clock.now() >= t.next_nightly:
            await t.nightly()
        await t.guard_disk()
        await t.publish_snapshot()
        await ctx.clock.sleep_until(min(ctx.clock.now() + ctx.cfg.training.check_interval_s,
                                        t.next_nightly))

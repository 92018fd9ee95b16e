"""The weekly AutoML study of each group, inside ``run`` (a step of the training service).

When :func:`appliance.automl.study_due` says a group's study is due (never at a first start;
the first a week after the group's first prod model; then at ``automl.weekly_at``, market time;
one missed while ``run`` was down runs at start), this queues ``automl.trials`` trial jobs on
the huey queue (behind whatever training is already queued, nightly runs included), each one
trial of the study in the journal, stopping once ``automl.timeout`` of wall time has passed
since the first began. When the search is over (or a week has passed: trial jobs lost with the
queue must not hold the group's studies for good) it queues the selection job; a winner's receipt
is then registered by the training service like any run's, as an ``autogen`` candidate.
What was queued is kept in ``<state>/automl/schedule.json``, so a restart neither loses a study
nor queues it twice.
"""

from __future__ import annotations

from typing import Any

from appliance import automl as studies
from appliance.context import ServiceContext
from appliance.jobs import Jobs
from appliance.logs import service_logger
from appliance.schedule import WEEK_S, duration_s, parse_weekly
from appliance.store import Store
from models import automl
from models.groups import Group

NAME = "training"


def first_prod_times(store: Store) -> dict[str, float]:
    """Each group's first promotion to prod (market time)."""
    rows = store._dicts("SELECT grp, min(promoted) AS t FROM ml_models "
                        "WHERE promoted IS NOT NULL GROUP BY grp")
    return {r["grp"]: float(r["t"]) for r in rows}


class WeeklyStudies:
    def __init__(self, ctx: ServiceContext, jobs: Jobs) -> None:
        self.ctx, self.jobs = ctx, jobs
        self.weekday, self.at_s = parse_weekly(ctx.cfg.automl.weekly_at)
        self.log = service_logger(NAME)

    async def step(self, groups: list[Group]) -> None:
        """Queue due studies and the selections of finished ones."""
        ctx, state = self.ctx, self.ctx.cfg.state_path
        now = ctx.clock.now()
        first = await ctx.store.run(first_prod_times, ctx.store.store)
        schedule = await ctx.io(studies.load_schedule, state)
        changed = False
        for group in groups:
            entry = schedule.get(group.name)
            if entry is not None and not entry.get("finish_queued"):
                # a week on, select from what finished: trial jobs lost with a Redis that
                # restarted without persistence must not hold the group's studies for good
                if now - entry["started"] >= WEEK_S or await ctx.io(
                        studies.search_over, state, entry["study"], entry["budget"],
                        studies.storage_url(ctx.cfg)):
                    await self.finish(group, entry, now)
                    changed = True
                continue  # one study of a group at a time
            if studies.study_due(now, first.get(group.name),
                                 None if entry is None else entry["started"],
                                 self.weekday, self.at_s):
                schedule[group.name] = await self.start(group, now)
                changed = True
        if changed:
            await ctx.io(studies.save_schedule, state, schedule)

    async def start(self, group: Group, now: float) -> dict[str, Any]:
        cfg, state = self.ctx.cfg, self.ctx.cfg.state_path
        name = studies.study_name(group.name, now)
        setup = studies.setup_to_json(studies.setup_of(cfg), cfg.automl.storage)
        # created here, before any job runs: trials a crash left running are failed now
        await self.ctx.io(lambda: automl.open_study(state, name, cfg.automl.seed,
                                                    redis_url=studies.storage_url(cfg)))
        args = (name, list(group.symbols), setup, studies.space_to_json(studies.space_of(cfg)),
                cfg.automl.trials, duration_s(cfg.automl.timeout))
        for _ in range(cfg.automl.trials):
            await self.ctx.io(lambda: self.jobs.enqueue("automl_trial", *args))
        self.log.info("automl study queued", group=group.name, study=name,
                      trials=cfg.automl.trials)
        self.ctx.bus.audit(actor="automl", action="automl_study_queued",
                           reason=f"weekly study {name}",
                           details={"group": group.name, "trials": cfg.automl.trials})
        return {"study": name, "started": now, "budget": cfg.automl.trials,
                "finish_queued": False, "setup": setup}

    async def finish(self, group: Group, entry: dict[str, Any], now: float) -> None:
        args = (entry["study"], group.name, list(group.symbols), entry["setup"],
                self.ctx.cfg.automl.dsr_threshold, now)
        await self.ctx.io(lambda: self.jobs.enqueue("automl_finish", *args))
        entry["finish_queued"] = True
        self.log.info("automl selection queued", group=group.name, study=entry["study"])

"""The weekly distillation of each group, inside ``run`` (a step of the training service).

Due by AutoML's rule (:func:`appliance.automl.study_due`): never at a first start, the first a
week after the group's first prod model, then at ``distill.weekly_at`` (default Sunday 12:00,
after AutoML's Sunday 06:00 slot), one missed while ``run`` was down at start. A due group gets
one ``distill`` job on the huey queue, behind whatever is queued (the week's AutoML trials
included); its two receipts (teacher and student) are registered by the training service like
any run's, as candidates. What was queued is kept in ``<state>/distill/schedule.json``.
"""

from __future__ import annotations

from appliance import distill
from appliance.automl import study_due
from appliance.context import ServiceContext
from appliance.jobs import TRAINING_PREFIX, Jobs
from appliance.logs import service_logger
from appliance.schedule import parse_weekly
from appliance.services.automl_weekly import first_prod_times
from models.groups import Group

NAME = "training"


class WeeklyDistillation:
    def __init__(self, ctx: ServiceContext, jobs: Jobs) -> None:
        self.ctx, self.jobs = ctx, jobs
        self.weekday, self.at_s = parse_weekly(ctx.cfg.distill.weekly_at)
        self.log = service_logger(NAME)

    async def step(self, groups: list[Group]) -> None:
        """Queue the distillation of every group that is due."""
        ctx, state = self.ctx, self.ctx.cfg.state_path
        if not ctx.cfg.distill.weekly:
            return
        now = ctx.clock.now()
        first = await ctx.store.run(first_prod_times, ctx.store.store)
        schedule = await ctx.io(distill.load_schedule, state)
        queued = False
        for group in groups:
            entry = schedule.get(group.name)
            if study_due(now, first.get(group.name), None if entry is None else entry["started"],
                         self.weekday, self.at_s):
                schedule[group.name] = await self.start(group, now)
                queued = True
        if queued:
            await ctx.io(distill.save_schedule, state, schedule)

    async def start(self, group: Group, now: float) -> dict[str, object]:
        teacher, student = distill.run_ids(distill.week_tag(now), group.name)
        for run_id, kind, tf in ((teacher, "lstm", "1h"), (student, "ddqn", "5m")):
            self.ctx.bus.cache.set(f"{TRAINING_PREFIX}{run_id}", {
                "run_id": run_id, "group": group.name, "kind": kind, "status": "queued",
                "percent": 0.0, "symbols": list(group.symbols), "timeframe": tf})
        args = (group.name, list(group.symbols), distill.setup_of(self.ctx.cfg), teacher,
                student, {"trigger": "distill"})
        await self.ctx.io(lambda: self.jobs.enqueue("distill", *args))
        self.log.info("distillation queued", group=group.name, teacher=teacher, student=student)
        self.ctx.bus.audit(actor="distill", action="distill_queued",
                           reason=f"weekly distillation of {group.name}",
                           details={"group": group.name, "teacher": teacher,
                                    "student": student})
        return {"started": now, "teacher": teacher, "student": student}

"""The weekly distillation inside `run` (a step of the training service) on the virtual clock:
nothing before a group has had a prod model for a week, then one ``distill`` job on the real
huey queue (SQLite), announced on the bus for the Training screen, audited, never queued twice
in a week, and nothing at all with ``distill.weekly = false``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from appliance import distill, lifecycle
from appliance.jobs import TRAINING_PREFIX, Jobs
from appliance.schedule import WEEK_S, utc
from appliance.services.distill_weekly import WeeklyDistillation
from models.groups import Group
from tests.builders import fake_run

GROUP = Group("t1-a", ("BTCUSDT", "ETHUSDT"))
THURSDAY = utc("2026-11-05 12:00")


@pytest.fixture
def jobs(state_dir):
    j = Jobs(state_dir)
    yield j
    j.close()


def prod_model(ctx) -> None:
    r = fake_run(ctx.cfg.state_path, "run-prod")
    lifecycle.register(ctx.store.store, r, now=ctx.clock.now())
    lifecycle.promote(ctx.store.store, "m-run-prod", actor="test", reason="test",
                      now=ctx.clock.now())


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_a_group_is_distilled_weekly_after_its_first_prod_week(make_ctx, jobs, state_dir,
                                                                     autojump_clock):
    ctx = make_ctx(speed=60, start=THURSDAY)
    weekly = WeeklyDistillation(ctx, jobs)
    await weekly.step([GROUP])  # no prod model: nothing
    prod_model(ctx)
    await weekly.step([GROUP])
    assert jobs.pending() == 0 and distill.load_schedule(state_dir) == {}

    await ctx.clock.sleep_until(THURSDAY + WEEK_S)
    await weekly.step([GROUP])
    teacher, student = distill.run_ids("2026-W46", GROUP.name)
    assert distill.load_schedule(state_dir)[GROUP.name] == {
        "started": ctx.clock.now(), "teacher": teacher, "student": student}
    assert jobs.pending() == 1
    [task] = jobs.huey.pending()
    assert task.name == "distill" and task.args[0] == GROUP.name
    assert task.args[3:5] == (teacher, student)
    assert task.args[2]["weight"] == ctx.cfg.distill.weight
    shown = ctx.bus.cache.get(f"{TRAINING_PREFIX}{student}")
    assert (shown["status"], shown["kind"], shown["timeframe"]) == ("queued", "ddqn", "5m")
    assert ctx.bus.cache.get(f"{TRAINING_PREFIX}{teacher}")["timeframe"] == "1h"

    await weekly.step([GROUP])  # the same week: nothing queued twice
    assert jobs.pending() == 1
    assert len([e for e in ctx.bus.audit_entries() if e["action"] == "distill_queued"]) == 1


@pytest.mark.trio
@pytest.mark.timeout(60)
async def test_weekly_off_queues_nothing(make_ctx, jobs, state_dir, autojump_clock):
    ctx = make_ctx(speed=60, start=THURSDAY)
    ctx.cfg = replace(ctx.cfg, distill=replace(ctx.cfg.distill, weekly=False))
    prod_model(ctx)
    await ctx.clock.sleep_until(THURSDAY + 2 * WEEK_S)
    await WeeklyDistillation(ctx, jobs).step([GROUP])
    assert jobs.pending() == 0 and distill.load_schedule(state_dir) == {}

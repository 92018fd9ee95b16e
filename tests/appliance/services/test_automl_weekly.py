"""The weekly AutoML study inside `run` (a step of the training service) on the virtual clock:
nothing before a group has had a prod model for a week, then its trials and its selection as
huey jobs (in-process: huey's immediate mode), a verdict recorded, nothing queued twice, the
next week's study at the slot, and one missed while `run` was down at start."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from appliance import lifecycle
from appliance.automl import load_schedule, studies_snapshot, verdict_path
from appliance.backfill import backfill_symbol
from appliance.jobs import Jobs
from appliance.schedule import DAY_S, WEEK_S, utc
from appliance.services.automl_weekly import WeeklyStudies
from data.lake import Lake
from models import automl
from models.groups import Group
from models.training import train_run

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
GROUP = Group("t1-a", tuple(SYMBOLS))
THURSDAY = utc("2026-11-05 12:00")


@pytest.fixture
def jobs(state_dir):
    j = Jobs(state_dir)
    j.huey.immediate = True  # enqueue runs the job at once, in this process
    yield j
    j.close()


async def prod_model(ctx) -> None:
    """A real rf on 12 days of the lake, promoted to prod now."""
    lake = Lake(ctx.cfg.state_path / "lake")
    end = int(ctx.clock.now() * 1000) // 60_000 * 60_000
    for s in SYMBOLS:
        await backfill_symbol(ctx.exchange, lake, s, end - 12 * 86_400_000, end, inline=True)
        lake.resample(s)
    small = {"n_estimators": 5, "max_depth": 3, "tree_batches": 1, "n_jobs": 1}
    r = train_run(ctx.cfg.state_path, "run-prod", GROUP.name, SYMBOLS, "rf", small, folds=2)
    lifecycle.register(ctx.store.store, r, now=ctx.clock.now())
    lifecycle.promote(ctx.store.store, "m-run-prod", actor="test", reason="test",
                      now=ctx.clock.now())


def trials_of(state_dir, study: str) -> int:
    return len(automl.finished(automl.open_study(state_dir, study, 0, fail_stale=False)))


@pytest.mark.trio
@pytest.mark.timeout(300)
async def test_weekly_studies_follow_the_first_prod_model_and_the_slot(make_ctx, jobs,
                                                                       state_dir,
                                                                       autojump_clock):
    ctx = make_ctx(speed=60, start=THURSDAY)
    ctx.cfg = replace(ctx.cfg, training=replace(ctx.cfg.training, folds=2),
                      automl=replace(ctx.cfg.automl, trials=2, kinds="rf",
                                     max_train_samples=2000))
    weekly = WeeklyStudies(ctx, jobs)
    await weekly.step([GROUP])  # first start, no prod model: nothing
    await prod_model(ctx)
    await weekly.step([GROUP])
    await ctx.clock.sleep_until(THURSDAY + WEEK_S - 60)
    await weekly.step([GROUP])
    assert load_schedule(state_dir) == {}

    await ctx.clock.sleep_until(THURSDAY + WEEK_S)
    await weekly.step([GROUP])  # due: the trial jobs run (immediate mode)
    entry = load_schedule(state_dir)[GROUP.name]
    first = entry["study"]
    assert first == "t1-a-2026-W46" and not entry["finish_queued"]
    assert trials_of(state_dir, first) == 2
    await weekly.step([GROUP])  # the search is over: the selection job
    assert load_schedule(state_dir)[GROUP.name]["finish_queued"]
    verdict = json.loads(verdict_path(state_dir, first).read_text())
    assert verdict["trials"] == 2 and verdict["reason"]
    [shown] = studies_snapshot(state_dir)  # what the Training screen shows
    assert (shown["study"], shown["done"], shown["budget"], shown["state"]) == (
        first, 2, 2, "done")
    assert shown["reason"] == verdict["reason"] and len(shown["values"]) <= 2
    await weekly.step([GROUP])
    assert trials_of(state_dir, first) == 2  # nothing queued twice
    audit = [e for e in ctx.bus.audit_entries() if e["action"] == "automl_study_queued"]
    assert len(audit) == 1

    await ctx.clock.sleep_until(utc("2026-11-15 06:00"))  # the slot, under half a week on
    await weekly.step([GROUP])
    assert load_schedule(state_dir)[GROUP.name]["study"] == first
    # `run` is down over the slot of 11-22; a fresh service at start on Tuesday runs it
    await ctx.clock.sleep_until(utc("2026-11-24 09:00"))
    await WeeklyStudies(ctx, jobs).step([GROUP])
    again = load_schedule(state_dir)[GROUP.name]
    assert again["study"] == "t1-a-2026-W48" and again["started"] == ctx.clock.now()
    assert trials_of(state_dir, again["study"]) == 2
    assert ctx.clock.now() - THURSDAY > 2 * WEEK_S - DAY_S


@pytest.mark.trio
@pytest.mark.timeout(300)
async def test_a_study_whose_trial_jobs_were_lost_is_selected_a_week_on(make_ctx, state_dir,
                                                                        autojump_clock):
    """The queue lost the trial jobs (a Redis restarted without persistence): the study does
    not hold the group for good; a week on, its selection is queued from what finished."""
    ctx = make_ctx(speed=60, start=THURSDAY)
    ctx.cfg = replace(ctx.cfg, training=replace(ctx.cfg.training, folds=2),
                      automl=replace(ctx.cfg.automl, trials=2, kinds="rf",
                                     max_train_samples=2000))
    jobs = Jobs(state_dir)  # a real queue nobody consumes
    try:
        await prod_model(ctx)
        await ctx.clock.sleep_until(THURSDAY + WEEK_S)
        weekly = WeeklyStudies(ctx, jobs)
        await weekly.step([GROUP])
        assert jobs.pending() == 2
        jobs.huey.flush()  # the queue is lost with its jobs
        await ctx.clock.sleep_until(THURSDAY + WEEK_S + 3 * DAY_S)
        await weekly.step([GROUP])
        assert not load_schedule(state_dir)[GROUP.name]["finish_queued"]  # still waiting
        await ctx.clock.sleep_until(THURSDAY + 2 * WEEK_S)
        await weekly.step([GROUP])
        assert load_schedule(state_dir)[GROUP.name]["finish_queued"]
        assert [t.name for t in jobs.huey.pending()] == ["automl_finish"]
    finally:
        jobs.close()

"""The training service on the virtual clock: bootstrap, nightly and Sunday runs, registry,
disk guard. Jobs run in-process (huey's immediate mode); the consumer path has its own test."""

from dataclasses import replace

import pytest
import trio

from appliance.backfill import backfill_symbol
from appliance.jobs import TRAINING_PREFIX, Jobs
from appliance.schedule import utc
from appliance.services import training
from data.lake import Lake
from models.registry import list_models

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
SATURDAY_0130 = utc("2026-11-28 01:30")  # a Saturday; the Sunday run comes a day later


async def fill_lake(ctx, days=20):
    lake = Lake(ctx.cfg.state_path / "lake")
    end = int(ctx.clock.now() * 1000) // 60_000 * 60_000
    for s in SYMBOLS:
        await backfill_symbol(ctx.exchange, lake, s, end - days * 86_400_000, end, inline=True)
        lake.resample(s)


@pytest.fixture
def trainer_ctx(make_ctx):
    ctx = make_ctx(speed=60, start=SATURDAY_0130)
    ctx.cfg = replace(ctx.cfg, training=replace(ctx.cfg.training, kinds="rf",
                                                check_interval_s=600))
    ctx.bus.set_tradable_pairs(SYMBOLS)
    return ctx


@pytest.fixture
def jobs(state_dir):
    j = Jobs(state_dir)
    j.huey.immediate = True  # enqueue runs the job at once, in this process
    yield j
    j.close()


@pytest.mark.trio
@pytest.mark.timeout(240)
async def test_bootstrap_nightly_and_sunday_runs_register_candidates(trainer_ctx, jobs,
                                                                     autojump_clock):
    ctx = trainer_ctx
    await fill_lake(ctx)
    with trio.move_on_after(30 * 60 / 60):  # half a market hour: bootstrap runs, registered
        await training.run(ctx, jobs, disk_usage=lambda p: 0.1)
    models = list_models(ctx.store.store)
    groups = {m["group"] for m in models}
    assert models and all(m["mode"] == "candidate" and m["kind"] == "rf" for m in models)
    assert {s for m in models for s in m["symbols"]} == set(SYMBOLS)
    first = len(models)
    assert ctx.metrics.models_trained_total._value.get() == first
    progress = ctx.bus.events_since(0, ["training_progress"])
    assert progress and progress[-1]["data"]["status"] == "completed"
    snap = ctx.bus.snapshot("training")
    assert {r["status"] for r in snap} == {"completed"} and snap[0]["device"] == "CPU"
    assert snap[0]["loss_curve"]

    with trio.move_on_after(26 * 3600 / 60):  # to Sunday 04:00: Saturday's and Sunday's 02:00
        await training.run(ctx, jobs, disk_usage=lambda p: 0.1)
    runs = {m["run_id"] for m in list_models(ctx.store.store)}
    for g in groups:
        assert f"20261128-{g}-rf" in runs  # Saturday's nightly (the same id as the bootstrap)
        assert f"20261129-{g}-rf" in runs  # Sunday's nightly
        assert f"20261129-{g}-ensemble" in runs  # and the Sunday ensemble
    assert not any(r.startswith("20261128") and "ensemble" in r for r in runs)
    ensemble = next(m for m in list_models(ctx.store.store) if m["kind"] == "ensemble")
    assert ensemble["tags"] == {"trigger": "sunday"}


@pytest.mark.trio
@pytest.mark.timeout(240)
async def test_full_disk_archives_the_worst_fifth(trainer_ctx, jobs, autojump_clock):
    ctx = trainer_ctx
    await fill_lake(ctx)
    with trio.move_on_after(30 * 60 / 60):
        await training.run(ctx, jobs, disk_usage=lambda p: 0.1)
    before = list_models(ctx.store.store)
    worst = min(before, key=lambda m: m["metrics"]["sharpe"])
    with trio.move_on_after(30 * 60 / 60):
        await training.run(ctx, jobs, disk_usage=lambda p: 0.95)
    after = {m["model_id"]: m for m in list_models(ctx.store.store)}
    assert len(after) == len(before)  # rows kept
    archived = [m for m in after.values() if m["mode"] == "archived"]
    assert archived and archived[0]["model_id"] == worst["model_id"]
    from pathlib import Path
    assert not Path(worst["onnx_path"]).exists()  # the artifact is gone
    assert any(e["action"] == f"archive {worst['model_id']}" for e in ctx.bus.audit_entries())


@pytest.mark.trio
async def test_queued_runs_are_announced_before_they_run(trainer_ctx, state_dir,
                                                        autojump_clock):
    ctx = trainer_ctx
    await fill_lake(ctx, days=5)
    jobs = Jobs(state_dir)  # a real queue with nobody consuming it
    try:
        with trio.move_on_after(60 / 60):
            await training.run(ctx, jobs, disk_usage=lambda p: 0.1)
        queued = [ctx.bus.cache.get(k) for k in ctx.bus.cache.iterkeys()
                  if str(k).startswith(TRAINING_PREFIX)]
        assert queued and {q["status"] for q in queued} == {"queued"}
        assert jobs.pending() == len(queued)
        with trio.move_on_after(60 / 60):  # a second pass queues nothing twice
            await training.run(ctx, jobs, disk_usage=lambda p: 0.1)
        assert jobs.pending() == len(queued)
    finally:
        jobs.close()

"""The training service registers a run a remote worker reported through huey's result store:
its folder is copied from the shared artifact root into the state dir (checked by sha256), it
becomes a candidate once, and the report is removed; a report whose files are missing waits."""

from __future__ import annotations

import shutil

import pytest

from appliance import job_reports
from appliance.jobs import Jobs
from appliance.lifecycle import Lifecycle
from appliance.notify import Notifier
from appliance.services import training
from models.registry import list_models, verified_onnx_path
from models.training import train_run
from tests.appliance.services.test_training import ROOMY, SATURDAY_0130, SYMBOLS, fill_lake

SMALL = {"n_estimators": 5, "max_depth": 3, "tree_batches": 1, "n_jobs": 1}


@pytest.mark.trio
@pytest.mark.timeout(300)
async def test_a_reported_run_is_imported_registered_once_and_acknowledged(
        make_ctx, state_dir, tmp_path, redis_url, autojump_clock):
    ctx = make_ctx(speed=60, start=SATURDAY_0130)
    await fill_lake(ctx, days=5)
    root = tmp_path / "shared"  # the workers' mount: the lake and their artifacts
    shutil.copytree(state_dir / "lake", root / "lake")
    receipt = train_run(root, "w-run", "g1", SYMBOLS[:2], "rf", SMALL, folds=2)
    jobs = Jobs(state_dir, redis_url=redis_url, root=root)
    life = Lifecycle(ctx.store, ctx.bus, Notifier(ctx.bus, None), state_dir)
    trainer = training.Trainer(ctx, jobs, life, ROOMY)
    try:
        missing = {**receipt, "run_id": "w-gone", "onnx_path": "artifacts/w-gone/model.onnx"}
        job_reports.report(jobs, job_reports.RECEIPT, "w-gone", missing)
        job_reports.report(jobs, job_reports.RECEIPT, "w-run", receipt)
        job_reports.report(jobs, job_reports.PROGRESS, "w-run", {"run_id": "w-run",
                                                                 "status": "running"})
        for _ in range(2):  # a second pass registers nothing again
            await trainer.register()
        [m] = await ctx.store.run(list_models, ctx.store.store)
        assert (m["run_id"], m["mode"]) == ("w-run", "candidate")
        assert (state_dir / "artifacts" / "w-run" / "result.json").exists()  # imported whole
        path = await ctx.store.run(verified_onnx_path, ctx.store.store, m["model_id"])
        assert path == state_dir / "artifacts" / "w-run" / "model.onnx"
        left = job_reports.pending(jobs)
        assert list(left.receipts) == ["w-gone"] and left.progress == {}  # waits for its files
        assert ctx.bus.cache.get("training:w-run")["status"] == "running"  # the TUI's view
        registered = [e for e in ctx.bus.events_since(0) if e["kind"] == "model_registered"]
        assert [e["data"]["run_id"] for e in registered] == ["w-run"]
    finally:
        jobs.close()

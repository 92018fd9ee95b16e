"""What jobs on other machines tell the appliance, through huey's result store on Redis.

A ``methtrader worker`` on another machine cannot reach the bus (a diskcache on the
appliance's local disk), so with ``jobs.backend = "redis"`` every job reports through huey's
result store (a Redis hash) under a prefixed key: a finished run's receipt
(``receipt:<run_id>``), a training run's progress (``progress:<run_id>``) and a job that
failed its last attempt (``failed:<task id>``). The appliance's training service drains them
(:func:`drain`): progress and failures go to the bus as a local job's would, and each receipt
is registered like any run's, after its artifacts were imported from ``jobs.artifact_root``
(:func:`import_run`) when that is not the state dir, so the state dir stays self-contained
(backups, archiving and relocation keep working on it alone). A report is removed from the
store only after it was handled, so an appliance that stops midway handles it next time;
registration is idempotent by run id.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data.files import fsync_path, sha256_file

if TYPE_CHECKING:
    from appliance.jobs import Jobs

RECEIPT = "receipt"
PROGRESS = "progress"
FAILED = "failed"
KINDS = (RECEIPT, PROGRESS, FAILED)


def report(jobs: "Jobs", kind: str, key: str, value: Any) -> None:
    """Put one report in huey's result store (a later one of the same key replaces it)."""
    with jobs.reachable(f"report {kind} {key}"):
        jobs.huey.put(f"{kind}:{key}", value)


def report_receipt(receipt: dict[str, Any] | None) -> None:
    """Inside a task: report a finished run's receipt when the queue is on Redis (locally the
    training service finds it in the artifacts folder; a worker's may be on another disk)."""
    from appliance.jobs import current

    jobs = current()
    if jobs is not None and jobs.redis_url and receipt is not None:
        report(jobs, RECEIPT, str(receipt["run_id"]), receipt)


@dataclass
class Reports:
    """The reports waiting in the store, by kind: ``{key: value}``."""

    receipts: dict[str, dict[str, Any]] = field(default_factory=dict)
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)


def pending(jobs: "Jobs") -> Reports:
    """Every report in the store (read, not removed)."""
    out = Reports()
    if not jobs.redis_url:
        return out
    with jobs.reachable("read job reports"):
        keys = [k for k in jobs.huey.storage.result_items() if k.split(":", 1)[0] in KINDS]
        for full in keys:
            kind, key = full.split(":", 1)
            value = jobs.huey.get(full, peek=True)
            if value is None:
                continue
            {RECEIPT: out.receipts, PROGRESS: out.progress, FAILED: out.failed}[kind][key] = value
    return out


def ack(jobs: "Jobs", kind: str, key: str) -> None:
    """Remove a handled report."""
    with jobs.reachable(f"remove report {kind}:{key}"):
        jobs.huey.delete(f"{kind}:{key}")


class ArtifactImportError(RuntimeError):
    """A reported run whose artifacts are missing or do not match its receipt."""


def import_run(state_dir: Path, root: Path, receipt: dict[str, Any]) -> None:
    """Copy a run's folder from ``<root>/artifacts`` into the state dir's (whole or not at
    all), after checking its model file against the receipt's sha256. Nothing to do when the
    root is the state dir or the run is already there."""
    from appliance.paths import StatePaths

    run_id = str(receipt["run_id"])
    src, dst = StatePaths(root).run_dir(run_id), StatePaths(state_dir).run_dir(run_id)
    if src.resolve() == dst.resolve() or (dst / "result.json").exists():
        return
    model = StatePaths(root).resolve_stored(receipt["onnx_path"])
    if not model.exists():
        raise ArtifactImportError(f"run {run_id}: {model} is missing; is jobs.artifact_root the "
                           "workers' shared mount?")
    if sha256_file(model) != receipt["onnx_sha256"]:
        raise ArtifactImportError(f"run {run_id}: {model} does not match its receipt's sha256")
    partial = dst.with_name(dst.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    shutil.copytree(src, partial)
    for f in partial.iterdir():
        fsync_path(f)
    os.replace(partial, dst)
    fsync_path(dst.parent)


def queue_errors(jobs: "Jobs") -> tuple[type[BaseException], ...]:
    """What a lost Redis raises: the queue's own :class:`JobsUnavailable`, and the client's
    errors where a library (Optuna's Redis journal) talks to Redis directly."""
    from appliance.jobs import JobsUnavailable

    if not jobs.redis_url:
        return (JobsUnavailable,)
    import redis

    return (JobsUnavailable, redis.ConnectionError, redis.TimeoutError)


def take(jobs: "Jobs", state_dir: Path, bus: Any) -> list[tuple[dict[str, Any], str | None]]:
    """Handle the reports waiting in the store: progress and failures go to the bus (and are
    removed), and each receipt's artifacts are imported into the state dir. Returns the
    receipts to register as ``(receipt, None)``, or ``(receipt, error)`` for one that cannot
    be imported (left in the store, to try again)."""
    from appliance.contracts import Event
    from appliance.jobs import TRAINING_PREFIX

    reports = pending(jobs)
    for run_id, note in reports.progress.items():
        bus.cache.set(f"{TRAINING_PREFIX}{run_id}", note)
        bus.publish(Event.TRAINING_PROGRESS, note, service="worker")
        ack(jobs, PROGRESS, run_id)
    for task_id, failure in reports.failed.items():
        bus.publish(Event.JOB_FAILED, failure, service="worker")
        ack(jobs, FAILED, task_id)
    out: list[tuple[dict[str, Any], str | None]] = []
    for receipt in reports.receipts.values():
        try:
            import_run(state_dir, jobs.root, receipt)
        except (ArtifactImportError, OSError) as exc:
            out.append((receipt, str(exc)))
            continue
        out.append((receipt, None))
    return out

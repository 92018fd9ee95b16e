"""A group's AutoML study on the appliance's state dir: the lake's candles in, the verdict out.

:mod:`models.automl` does the search and the selection; this module gives it the group's 5m
candles from the lake, names the study (``<group>-<ISO year>-W<week>``: one study per group and
week, so a killed one resumes when started again that week), trains the winner on every bar as
a run tagged ``autogen=true`` with its study and trial (its receipt in the artifacts folder,
like any training run's), and records every study's verdict in ``<state>/automl/<study>.json``
and in the study's own attributes in the journal. Registration as a candidate is the
lifecycle's: the caller's (``methtrader automl`` when ``run`` is down), or ``run``'s training
service, which registers every receipt it finds.
"""

from __future__ import annotations

import json
import time
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import optuna

from data.files import read_json_dict, write_json_atomic
from appliance.config import Config
from appliance.schedule import WEEK_S, duration_s, next_weekly
from models import automl
from models.costs import CostModel
from models.dataset import lake_at, load_group_candles
from models.training import train_run

STUDY_DIR = "automl"
Progress = Callable[[dict[str, Any]], None]


def study_name(group: str, now: float) -> str:
    year, week, _ = datetime.fromtimestamp(now, timezone.utc).isocalendar()
    return f"{group}-{year}-W{week:02d}"


def setup_of(cfg: Config) -> automl.Setup:
    return automl.Setup(interval="5m", folds=cfg.training.folds,
                        threshold=cfg.trading.threshold,
                        costs=CostModel(cfg.sim.taker_fee, cfg.sim.slippage_bps / 10_000),
                        seed=cfg.automl.seed, max_train_samples=cfg.automl.max_train_samples,
                        device=cfg.training.device)


def storage_url(cfg: Config) -> str | None:
    """The Redis URL of the studies' journal (``automl.storage = "redis"``), else None."""
    return cfg.jobs.redis_url if cfg.automl.storage == "redis" else None


def job_storage_url(setup: dict[str, Any]) -> str | None:
    """Inside a job: the study's Redis URL when the queued setup says ``storage = redis``:
    the queue's own (a worker knows it from ``--redis-url``; it never travels in job args)."""
    if setup.get("storage") != "redis":
        return None
    from appliance.jobs import current

    jobs = current()
    if jobs is None or not jobs.redis_url:
        raise ValueError("the study is on Redis (automl.storage = redis) but this job did not "
                         "come from a Redis queue; set jobs.backend = redis too")
    return jobs.redis_url


def space_of(cfg: Config) -> automl.Space:
    return automl.Space(kinds=tuple(k for k in cfg.automl.kinds.split(",") if k))


def verdict_path(state_dir: Path, study: str) -> Path:
    return Path(state_dir) / STUDY_DIR / f"{study}.json"


def run_group_study(cfg: Config, group: str, symbols: list[str], *, now: float,
                    trials: int | None = None, timeout_s: float | None = None,
                    space: automl.Space | None = None, setup: automl.Setup | None = None,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the group's study of the week to its budget, select, and train the
    winner when it passed; the study's summary (also written to ``verdict_path``)."""
    state = cfg.state_path
    space, setup = space or space_of(cfg), setup or setup_of(cfg)
    trials = trials or cfg.automl.trials
    timeout_s = timeout_s if timeout_s is not None else duration_s(cfg.automl.timeout)
    name = study_name(group, now)
    candles = load_group_candles(lake_at(state), symbols, setup.interval)
    pre, cut = automl.split_holdout(candles, setup.folds)
    study = automl.open_study(state, name, setup.seed, redis_url=storage_url(cfg))

    def report(st: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if progress is None:
            return
        done = automl.finished(st)
        complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
        progress({"group": group, "study": name, "trial": len(done), "trials": trials,
                  "state": trial.state.name.lower(), "value": trial.value,
                  "pruned": len(done) - len(complete),
                  "best": max((t.value for t in complete if t.value is not None),
                              default=None)})

    automl.run_trials(study, pre, space, setup, trials, timeout_s, callbacks=[report])
    return conclude(state, study, group, symbols, candles, cut, setup,
                    cfg.automl.dsr_threshold, now)


def conclude(state: Path, study: optuna.Study, group: str, symbols: list[str],
             candles: dict[str, Any], cut: int, setup: automl.Setup, dsr_threshold: float,
             now: float) -> dict[str, Any]:
    """Select, train a winner as an autogen run, record the verdict; the summary."""
    name = study.study_name
    verdict = automl.select(study, candles, cut, setup, dsr_threshold)
    summary: dict[str, Any] = {"group": group, "study": name, **verdict.as_dict(),
                               "run_id": None, "model_id": None, "receipt": None}
    if verdict.registered and verdict.best is not None:
        params = dict(verdict.best)
        kind = params.pop("kind")
        run_id = f"automl-{name}-t{verdict.trial}"
        receipt = train_run(state, run_id, group, symbols, kind, params,
                            tags={"autogen": True, "study": name, "trial": verdict.trial,
                                  "trigger": "automl"},
                            seed=setup.seed, folds=setup.folds, costs=setup.costs,
                            threshold=setup.threshold, device=setup.device)
        summary.update(run_id=run_id, receipt=receipt)
    summary["finished"] = now
    record = {k: v for k, v in summary.items() if k != "receipt"}
    study.set_user_attr("verdict", record)
    path = verdict_path(state, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str))
    return summary


# -- the weekly study inside `run`: its schedule and its huey jobs ----------------------------

def study_due(now: float, first_prod: float | None, last_started: float | None,
              weekday: int, at_s: int) -> bool:
    """Whether a group's weekly study is due at market time ``now``.

    Never before the group has had a prod model for a week (so never at a first start); the
    first study is due a week after its first prod model; after that at each weekly slot
    (``automl.weekly_at``) with no study started since (so one missed while ``run`` was down
    runs at start), and never within half a week of the last one.
    """
    if first_prod is None or now < first_prod + WEEK_S:
        return False
    if last_started is None:
        return True
    slot = next_weekly(now - WEEK_S, weekday, at_s)  # the latest slot at or before now
    return last_started < slot and now - last_started >= WEEK_S / 2


def setup_to_json(setup: automl.Setup, storage: str = "file") -> dict[str, Any]:
    """A study's setup as job args; ``storage``: where its journal is (``automl.storage``)."""
    return {"interval": setup.interval, "folds": setup.folds, "threshold": setup.threshold,
            "taker_fee": setup.costs.taker_fee, "slippage": setup.costs.slippage,
            "seed": setup.seed, "max_train_samples": setup.max_train_samples,
            "device": setup.device, "storage": storage}


def setup_from_json(d: dict[str, Any]) -> automl.Setup:
    return automl.Setup(interval=d["interval"], folds=int(d["folds"]),
                        threshold=float(d["threshold"]),
                        costs=CostModel(float(d["taker_fee"]), float(d["slippage"])),
                        seed=int(d["seed"]), max_train_samples=int(d["max_train_samples"]),
                        device=str(d.get("device", "cpu")))  # jobs queued before devices: cpu


def space_to_json(space: automl.Space) -> dict[str, Any]:
    return {f.name: list(getattr(space, f.name)) for f in fields(space)}


def space_from_json(d: dict[str, Any]) -> automl.Space:
    return automl.Space(**{k: tuple(v) for k, v in d.items()})


def trial_job(state_dir: Path, study: str, symbols: list[str], setup: dict[str, Any],
              space: dict[str, Any], budget: int, timeout_s: float) -> str:
    """One trial of a weekly study (a huey job): none when the budget is spent (a retried or
    re-queued job never overshoots) or ``timeout_s`` of wall time have passed since the
    study's first trial began (then the study is marked ``stopped``)."""
    st = setup_from_json(setup)
    s = automl.open_study(state_dir, study, st.seed, fail_stale=False,
                          redis_url=job_storage_url(setup), seed_per_trial=True)
    if len(automl.finished(s)) >= budget:
        return "budget spent"
    began = s.user_attrs.get("wall_started")
    if began is None:
        s.set_user_attr("wall_started", time.time())
    elif time.time() - float(began) > timeout_s:
        s.set_user_attr("stopped", f"automl.timeout ({timeout_s:g} s) reached")
        return "timeout"
    candles = load_group_candles(lake_at(state_dir), symbols, st.interval)
    pre, _ = automl.split_holdout(candles, st.folds)
    from appliance.jobs import current_task_id

    task_id = current_task_id()

    def tag(trial: optuna.Trial) -> None:  # which job runs it (fail_trials_of_job)
        if task_id is not None:
            trial.set_user_attr("job", task_id)

    automl.run_trials(s, pre, space_from_json(space), st, len(automl.finished(s)) + 1,
                      on_start=tag)
    return "trial run"


def fail_trials_of_job(state_dir: Path, args: list[Any], task_id: str,
                       queue_url: str | None) -> int:
    """Mark failed the trials a dead trial job (huey id ``task_id``, its args ``args``) left
    running, so the study's record says what happened; how many there were."""
    study, setup = str(args[0]), args[2]
    url = queue_url if setup.get("storage") == "redis" else None
    if not automl.journal_exists(state_dir, url):
        return 0
    storage = automl.journal_storage(state_dir, url)
    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:
        return 0
    lost = [t for t in storage.get_all_trials(study_id, deepcopy=False,
                                              states=(optuna.trial.TrialState.RUNNING,))
            if t.user_attrs.get("job") == task_id]
    for t in lost:
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return len(lost)


def finish_job(state_dir: Path, study: str, group: str, symbols: list[str],
               setup: dict[str, Any], dsr_threshold: float, now: float) -> dict[str, Any]:
    """A weekly study's selection (a huey job); the winner's receipt is registered by the
    training service like any run's."""
    st = setup_from_json(setup)
    candles = load_group_candles(lake_at(state_dir), symbols, st.interval)
    _, cut = automl.split_holdout(candles, st.folds)
    s = automl.open_study(state_dir, study, st.seed, fail_stale=False,
                          redis_url=job_storage_url(setup))
    summary = conclude(Path(state_dir), s, group, symbols, candles, cut, st, dsr_threshold,
                       now)
    from appliance.job_reports import report_receipt

    report_receipt(summary.get("receipt"))
    return {k: v for k, v in summary.items() if k != "receipt"}


def schedule_path(state_dir: Path) -> Path:
    return Path(state_dir) / STUDY_DIR / "schedule.json"


def load_schedule(state_dir: Path) -> dict[str, dict[str, Any]]:
    """Each group's latest weekly study: name, market start, wall deadline, budget, and
    whether its selection was queued (kept across restarts)."""
    return read_json_dict(schedule_path(state_dir))


def save_schedule(state_dir: Path, schedule: dict[str, dict[str, Any]]) -> None:
    write_json_atomic(schedule_path(state_dir), schedule)


def search_over(state_dir: Path, study: str, budget: int, redis_url: str | None = None
                ) -> bool:
    """Whether a weekly study's trial jobs are all done: ``budget`` trials ended (complete,
    pruned or failed) or its time ran out; read from the journal."""
    if not automl.journal_exists(state_dir, redis_url):
        return False
    storage = automl.journal_storage(state_dir, redis_url)
    try:
        study_id = storage.get_study_id_from_name(study)
    except KeyError:
        return False
    if "stopped" in storage.get_study_user_attrs(study_id):
        return True
    ended = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
             optuna.trial.TrialState.FAIL)
    return len(storage.get_all_trials(study_id, deepcopy=False, states=ended)) >= budget


def studies_snapshot(state_dir: Path, redis_url: str | None = None) -> list[dict[str, Any]]:
    """Each group's latest weekly study for the Training screen: its trials so far (done,
    pruned, each completed trial's value in order, the best), and its state: ``searching``,
    ``selecting`` (the selection job is queued) or ``done`` with the verdict."""
    schedule = load_schedule(state_dir)
    storage = (automl.journal_storage(state_dir, redis_url)
               if automl.journal_exists(state_dir, redis_url) else None)
    out = []
    for group, entry in sorted(schedule.items()):
        trials: list[Any] = []
        recorded = None  # the verdict in the journal (a worker's file may be on its disk)
        if storage is not None:
            try:
                study_id = storage.get_study_id_from_name(entry["study"])
                trials = storage.get_all_trials(study_id, deepcopy=False)
                recorded = storage.get_study_user_attrs(study_id).get("verdict")
            except KeyError:
                trials = []
        state = optuna.trial.TrialState
        values = [float(t.value) for t in trials
                  if t.state == state.COMPLETE and t.value is not None]
        verdict = None
        if entry.get("finish_queued"):
            try:
                verdict = json.loads(verdict_path(state_dir, entry["study"]).read_text())
            except (OSError, ValueError):
                verdict = recorded
        out.append({
            "group": group, "study": entry["study"], "budget": entry["budget"],
            "done": sum(t.state in (state.COMPLETE, state.PRUNED, state.FAIL) for t in trials),
            "pruned": sum(t.state == state.PRUNED for t in trials),
            "best": max(values, default=None), "values": values,
            "state": ("searching" if not entry.get("finish_queued")
                      else "selecting" if verdict is None else "done"),
            "passed": None if verdict is None else verdict.get("passed"),
            "reason": None if verdict is None else verdict.get("reason"),
            "run_id": None if verdict is None else verdict.get("run_id")})
    return out

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import optuna

from appliance.config import Config
from appliance.paths import StatePaths
from appliance.schedule import duration_s
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
                        seed=cfg.automl.seed, max_train_samples=cfg.automl.max_train_samples)


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
    study = automl.open_study(state, name, setup.seed)

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
    verdict = automl.select(study, candles, cut, setup, cfg.automl.dsr_threshold)
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
                            threshold=setup.threshold)
        summary.update(run_id=run_id, receipt=receipt)
    summary["finished"] = now
    record = {k: v for k, v in summary.items() if k != "receipt"}
    study.set_user_attr("verdict", record)
    path = verdict_path(state, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str))
    return summary

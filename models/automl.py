"""AutoML's study core: an Optuna search over training runs that cannot fool itself.

Given a group's candles, a study searches (:func:`suggest`) the training window length, the
look-back, an indicator subset of the catalogue (``fs2``), the model kind and its
hyper-parameters, the label horizon and dead band margin, and the sample weighting that shapes
the reward a model is trained on (:mod:`models.reward`). Every trial is *scored* on the one
yardstick, the walk-forward score of :mod:`models.validation`, reported fold by fold to a median
pruner. TPE with a fixed seed; the study lives in an Optuna journal file, so a killed study
resumes where it stopped (a trial that was running when it was killed is marked failed and
tried again).

The last ``1 / (folds + 2)`` of the group's bars is a hold-out block no trial sees. Selection
(:func:`select`): the best trial by walk-forward score is refit on the bars before the
hold-out and replayed over it; its deflated Sharpe ratio there (the PSR against the expected
best Sharpe of N tries, N every finished trial, with the variance of the trials' walk-forward
Sharpe ratios: :func:`models.metrics.deflated_sharpe_ratio`) must exceed the threshold.
Only then is it a winner; the caller trains it on every bar as a run tagged ``autogen`` and
the lifecycle registers it as a candidate. Otherwise the verdict says why.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from data.intervals import periods_per_year
from models.costs import CostModel
from models.dataset import DataSpec, Panel, build_panel
from models.features import FS2, INDICATOR_GROUPS
from models.metrics import deflated_sharpe_ratio, sharpe_ratio
from models.reward import RISKS
from models.training import window_candles
from models.validation import (costs_on, inner_split, predict_block, score_block,
                               walk_forward)

JOURNAL_FILE = "optuna.journal"
NO_SCORE = -10.0  # a trial whose walk-forward score is undefined (no trade, no variance)
log = logging.getLogger("methtrader.automl")


@dataclass(frozen=True)
class Space:
    """The search space's bounds (the defaults are the weekly study's; tests and the bench
    shrink the model sizes)."""

    kinds: tuple[str, ...] = ("rf", "mlp", "lstm")
    window_days: tuple[int, int] = (14, 90)
    horizon: tuple[int, int] = (3, 36)
    margin: tuple[float, float] = (0.0, 0.004)
    rf_trees: tuple[int, int] = (30, 200)
    epochs: tuple[int, int] = (3, 12)
    lstm_lookback: tuple[int, int] = (8, 48)


@dataclass(frozen=True)
class Setup:
    """What every trial of a study shares."""

    interval: str = "5m"
    folds: int = 4
    threshold: float = 0.1
    costs: CostModel = CostModel()
    seed: int = 0
    max_train_samples: int = 200_000
    device: str = "cpu"  # where the winner's run trains (``training.device``); trials: the CPU


def suggest(trial: optuna.Trial, space: Space, days_available: float) -> dict[str, Any]:
    """One trial's run params (``models.training.train_run``'s, kind included)."""
    kind = trial.suggest_categorical("kind", list(space.kinds))
    lo, hi = space.window_days
    hi = max(lo, min(hi, int(days_available)))
    params: dict[str, Any] = {
        "kind": kind, "window_days": trial.suggest_int("window_days", lo, hi),
        "horizon": trial.suggest_int("horizon", *space.horizon),
        "margin": trial.suggest_float("margin", *space.margin),
        "risk": trial.suggest_categorical("risk", list(RISKS)),
        "feature_set": FS2.id,
    }
    chosen = [g for g in INDICATOR_GROUPS if trial.suggest_categorical(f"ind_{g}", [True, False])]
    params["features"] = [n for g in (chosen or ["ret"]) for n in INDICATOR_GROUPS[g]]
    if kind == "rf":
        params.update(lookback=trial.suggest_int("lookback", 1, 4),
                      n_estimators=trial.suggest_int("n_estimators", *space.rf_trees, log=True),
                      max_depth=trial.suggest_int("max_depth", 3, 10),
                      min_samples_leaf=trial.suggest_int("min_samples_leaf", 20, 300, log=True),
                      max_features=trial.suggest_categorical("max_features", ["sqrt", "log2"]),
                      tree_batches=1, n_jobs=1)
    else:
        width = trial.suggest_int("hidden", 16, 128, log=True)
        layers = trial.suggest_int("layers", 1, 2)
        params.update(dropout=trial.suggest_float("dropout", 0.0, 0.3),
                      lr=trial.suggest_float("lr", 3e-4, 3e-3, log=True),
                      epochs=trial.suggest_int("epochs", *space.epochs))
        if kind == "mlp":
            params.update(lookback=trial.suggest_int("lookback", 1, 4), hidden=[width] * layers)
        else:
            params.update(lookback=trial.suggest_int("lookback", *space.lstm_lookback),
                          hidden=width, layers=layers)
    return params


_DATA_KEYS = ("window_days", "horizon", "margin", "risk", "feature_set", "features")


def model_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The kind's own params of a trial's run params."""
    return {k: v for k, v in params.items() if k not in _DATA_KEYS and k != "kind"}


def trial_panel(candles: Mapping[str, np.ndarray], params: Mapping[str, Any], setup: Setup,
                extra_days: float = 0.0) -> tuple[Panel, DataSpec]:
    """The panel a trial trains on: its window (plus ``extra_days`` after it), features,
    labels and weights."""
    spec = DataSpec(interval=setup.interval, horizon=int(params["horizon"]),
                    lookback=int(params["lookback"]), seed=setup.seed,
                    max_train_samples=setup.max_train_samples)
    window = window_candles(dict(candles), float(params["window_days"]) + extra_days)
    panel = build_panel(window, spec, taker_fee=setup.costs.taker_fee,
                        slippage=setup.costs.slippage, margin=float(params["margin"]),
                        feature_set=FS2, columns=params["features"], risk=str(params["risk"]))
    return panel, spec


def _fitter(kind: str, params: Mapping[str, Any], seed: int) -> Callable[..., Any]:
    from models.kinds import train  # torch and sklearn load when a study runs

    def fit(x: np.ndarray, y: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None) -> Any:
        return train(kind, x, y, params=model_params(params), seed=seed, x_val=xv, y_val=yv)
    return fit


def split_holdout(candles: Mapping[str, np.ndarray], folds: int
                  ) -> tuple[dict[str, np.ndarray], int]:
    """(the candles before the hold-out block, its first open time): the block is the last
    ``1 / (folds + 2)`` of the bars the group's symbols share."""
    common = None
    for c in candles.values():
        t = c[:, 0]
        common = t if common is None else np.intersect1d(common, t, assume_unique=True)
    if common is None or len(common) < 400:
        raise ValueError("too few bars shared by the group's symbols for a study")
    cut = int(common[len(common) - len(common) // (folds + 2)])
    return {s: c[c[:, 0] < cut] for s, c in candles.items()}, cut


def objective(candles: Mapping[str, np.ndarray], space: Space, setup: Setup,
              on_trial: Callable[[optuna.Trial, dict[str, Any]], None] | None = None,
              on_start: Callable[[optuna.Trial], None] | None = None
              ) -> Callable[[optuna.Trial], float]:
    """The study's objective over the pre-hold-out ``candles``; ``on_start`` is called with
    each trial before anything else (a job tags it with its id)."""
    days = max(len(c) for c in candles.values()) * _bar_days(setup.interval)

    def run(trial: optuna.Trial) -> float:
        if on_start is not None:
            on_start(trial)
        params = suggest(trial, space, days)
        trial.set_user_attr("params", params)
        panel, spec = trial_panel(candles, params, setup)
        seen: list[float] = []

        def report(k: int, record: dict[str, Any]) -> None:
            value = record["sharpe"]
            seen.append(value if math.isfinite(value) else 0.0)
            trial.report(float(np.mean(seen)), k)
            if trial.should_prune():
                raise optuna.TrialPruned(f"fold {k}: mean Sharpe {np.mean(seen):.2f}")

        metrics = walk_forward(panel, spec, _fitter(params["kind"], params, setup.seed),
                               folds=setup.folds, base=setup.costs,
                               threshold=setup.threshold, on_record=report)
        trial.set_user_attr("sharpe", _finite(metrics["sharpe"]))
        trial.set_user_attr("trades", int(metrics["trades"]))
        trial.set_user_attr("wf_score", _finite(metrics["wf_score"]))
        if on_trial is not None:
            on_trial(trial, metrics)
        score = metrics["wf_score"]
        return float(score) if math.isfinite(score) else NO_SCORE
    return run


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _bar_days(interval: str) -> float:
    return 365.0 / periods_per_year(interval)


REDIS_PREFIX = "methtrader-optuna"


def journal_storage(state_dir: Path, redis_url: str | None = None) -> JournalStorage:
    """The studies' journal: ``<state>/optuna.journal``, or with ``redis_url`` Optuna's
    journal on Redis (``automl.storage = "redis"``), shared by workers on other machines."""
    if redis_url:
        import warnings

        from optuna.storages.journal import JournalRedisBackend

        with warnings.catch_warnings():  # "experimental" since optuna 3.1; we pin >=4
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return JournalStorage(JournalRedisBackend(redis_url, prefix=REDIS_PREFIX))
    return JournalStorage(JournalFileBackend(str(Path(state_dir) / JOURNAL_FILE)))


def journal_exists(state_dir: Path, redis_url: str | None = None) -> bool:
    return bool(redis_url) or (Path(state_dir) / JOURNAL_FILE).exists()


class TrialSeededTPE(optuna.samplers.TPESampler):
    """TPE whose random state is reseeded from (seed, trial number) before each trial.

    A weekly study's trials run as separate jobs, each opening the study with a fresh sampler
    (in another process, perhaps on another machine): seeded only once, every one of them would
    draw the same first point. Trial numbers are unique (the storage hands them out), so each
    trial draws its own, and a study stays reproducible trial by trial.
    """

    def __init__(self, *, seed: int, **kwargs: Any) -> None:
        super().__init__(seed=seed, **kwargs)
        self._base_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        mixed = (self._base_seed * 1_000_003 + trial.number) % (2**32)
        self._rng.rng.seed(mixed)
        self._random_sampler._rng.rng.seed(mixed)
        super().before_trial(study, trial)


def open_study(state_dir: Path, name: str, seed: int, *, fail_stale: bool = True,
               redis_url: str | None = None, seed_per_trial: bool = False) -> optuna.Study:
    """The study ``name`` in the journal (:func:`journal_storage`; created, or loaded to
    resume): TPE with ``seed``, the median pruner on walk-forward folds. With ``fail_stale``,
    trials left running by a killed process are marked failed (only where this process is the
    study's one writer: the foreground command, or the weekly study before its jobs are
    queued). ``seed_per_trial``: for a process that runs one trial of a shared study
    (:class:`TrialSeededTPE`)."""
    storage = journal_storage(state_dir, redis_url)
    tpe = TrialSeededTPE if seed_per_trial else optuna.samplers.TPESampler
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=tpe(seed=seed, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    for t in (study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
              if fail_stale else []):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return study


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))


def run_trials(study: optuna.Study, candles: Mapping[str, np.ndarray], space: Space,
               setup: Setup, trials: int, timeout_s: float | None = None,
               on_trial: Callable[[optuna.Trial, dict[str, Any]], None] | None = None,
               callbacks: list[Callable[..., None]] | None = None,
               on_start: Callable[[optuna.Trial], None] | None = None) -> None:
    """Run the study's remaining trials of a budget of ``trials`` (finished ones count)."""
    left = trials - len(finished(study))
    if left <= 0:
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective(candles, space, setup, on_trial, on_start), n_trials=left,
                   timeout=timeout_s, catch=(ValueError,), callbacks=callbacks or [])


@dataclass(frozen=True)
class Verdict:
    registered: bool
    reason: str
    best: dict[str, Any] | None  # the winner's run params
    trial: int | None
    wf_score: float | None
    holdout_sharpe: float | None
    dsr: float | None
    trials: int
    pruned: int

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.registered, "reason": self.reason, "best_params": self.best,
                "best_trial": self.trial, "wf_score": self.wf_score,
                "holdout_sharpe": self.holdout_sharpe, "dsr": self.dsr,
                "trials": self.trials, "pruned": self.pruned}


def holdout_returns(candles: Mapping[str, np.ndarray], cut_ms: int, params: Mapping[str, Any],
                    setup: Setup) -> np.ndarray:
    """Net per-bar returns of ``params`` fitted on its window before the hold-out block
    (purged) and replayed over the block, costs from the training bars only."""
    holdout_days = max(len(c[c[:, 0] >= cut_ms]) for c in candles.values()) \
        * _bar_days(setup.interval)
    panel, spec = trial_panel(candles, params, setup, extra_days=holdout_days)
    purge = spec.horizon + spec.lookback
    test = np.flatnonzero(panel.open_time >= cut_ms)
    train_rows = np.arange(max(0, int(test[0]) - purge)) if len(test) else np.arange(0)
    if len(test) == 0 or len(train_rows) < 200:
        raise ValueError("the hold-out block or the bars before it are too short")
    fit_rows, stop_rows = inner_split(train_rows, purge)
    x, y = panel.samples(fit_rows, limit=spec.max_train_samples, seed=setup.seed)
    xv, yv = panel.samples(stop_rows, limit=spec.max_train_samples // 4, seed=setup.seed)
    model = _fitter(params["kind"], params, setup.seed)(x, y, xv if len(xv) else None,
                                                        yv if len(yv) else None)
    replay = score_block(panel, test, predict_block(model, panel, test),
                         costs_on(panel, train_rows, setup.costs), setup.threshold)
    return np.asarray(replay.returns, dtype=np.float64)


def select(study: optuna.Study, candles: Mapping[str, np.ndarray], cut_ms: int,
           setup: Setup, dsr_threshold: float) -> Verdict:
    """The study's verdict (module docstring: best by walk-forward score, hold-out, DSR)."""
    done = finished(study)
    complete = [t for t in done if t.state == TrialState.COMPLETE]
    pruned = len(done) - len(complete)
    if not complete:
        return Verdict(False, "no trial completed", None, None, None, None, None, len(done),
                       pruned)
    best = max(complete, key=lambda t: t.value if t.value is not None else -math.inf)
    params = dict(best.user_attrs["params"])
    wf = best.user_attrs.get("wf_score")
    if wf is None or not wf > 0:
        return Verdict(False, f"best walk-forward score {best.value:.3f} is not above 0",
                       params, best.number, wf, None, None, len(done), pruned)
    r = holdout_returns(candles, cut_ms, params, setup)
    ppy = periods_per_year(setup.interval)
    sharpes = [t.user_attrs["sharpe"] for t in complete if t.user_attrs.get("sharpe") is not None]
    variance = float(np.var(sharpes, ddof=1)) if len(sharpes) > 1 else 0.0
    dsr = deflated_sharpe_ratio(r, len(done), ppy, sharpe_variance=variance)
    hs = sharpe_ratio(r, ppy)
    hold = _finite(hs)
    if not dsr > dsr_threshold:  # NaN fails
        return Verdict(False, f"hold-out DSR {dsr:.3f} <= {dsr_threshold:g} over {len(done)} "
                              f"trials (hold-out Sharpe {hs:.2f})", params, best.number, wf,
                       hold, _finite(dsr), len(done), pruned)
    return Verdict(True, f"hold-out DSR {dsr:.3f} > {dsr_threshold:g} over {len(done)} trials "
                         f"(hold-out Sharpe {hs:.2f})", params, best.number, wf, hold,
                   float(dsr), len(done), pruned)


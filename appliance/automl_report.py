"""``methtrader automl --report GROUP``: a study's parameter importances and best trials.

Read from the Optuna journal (``<state>/optuna.journal``) without changing it: the group's
newest study, Optuna's fANOVA importance evaluator over its completed trials (it needs at
least two), and its best trials by walk-forward score with the verdict the study recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from models.automl import JOURNAL_FILE, journal_exists, journal_storage

TOP = 10


def latest_report(state_dir: Path, group: str, redis_url: str | None = None
                  ) -> dict[str, Any]:
    """The newest study of ``group``: name, verdict, importances, best trials (from the
    journal file, or from Redis with ``redis_url``)."""
    if not journal_exists(state_dir, redis_url):
        raise ValueError(f"no AutoML study has run in {state_dir} yet")
    storage = journal_storage(state_dir, redis_url)
    names = sorted(s.study_name for s in storage.get_all_studies()
                   if s.study_name.startswith(f"{group}-"))
    if not names:
        where = "the Redis journal" if redis_url else Path(state_dir) / JOURNAL_FILE
        raise ValueError(f"no AutoML study of group {group!r} in {where}")
    study = optuna.load_study(study_name=names[-1], storage=storage)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    importances: dict[str, float] = {}
    if len(complete) >= 2:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        importances = {k: float(v) for k, v in optuna.importance.get_param_importances(
            study, evaluator=evaluator).items()}
    best = sorted(complete, key=lambda t: -(t.value if t.value is not None else -1e18))[:TOP]
    trials = study.get_trials(deepcopy=False)
    return {
        "group": group, "study": study.study_name, "trials": len(trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "verdict": study.user_attrs.get("verdict"), "importances": importances,
        "best": [{"trial": t.number, "value": t.value, "sharpe": t.user_attrs.get("sharpe"),
                  "trades": t.user_attrs.get("trades"), "params": t.params} for t in best],
    }


def render_report(r: dict[str, Any]) -> str:
    lines = [f"study {r['study']}: {r['trials']} trials, {r['pruned']} pruned"]
    v = r.get("verdict")
    if v:
        lines.append("verdict: " + (f"registered {v.get('run_id')}" if v.get("passed")
                                    else "nothing registered") + f" ({v.get('reason')})")
    else:
        lines.append("verdict: none yet (the study has not finished)")
    lines.append("")
    lines.append("parameter importances (fANOVA)" if r["importances"]
                 else "parameter importances: need two completed trials")
    for name, value in r["importances"].items():
        lines.append(f"  {name:<24} {value:6.3f}  {'█' * round(value * 40)}")
    lines.append("")
    lines.append(f"{'trial':>5} {'wf score':>9} {'sharpe':>8} {'trades':>6}  params")
    for t in r["best"]:
        keys = ("kind", "window_days", "horizon", "risk", "lookback")
        shown = " ".join(f"{k}={t['params'][k]}" for k in keys if k in t["params"])
        sharpe = "-" if t["sharpe"] is None else f"{t['sharpe']:.2f}"
        lines.append(f"{t['trial']:>5} {t['value']:>9.2f} {sharpe:>8} {t['trades'] or 0:>6}  "
                     f"{shown}")
    return "\n".join(lines)

"""What the drift service reads and writes in DuckDB (run in the store's thread).

* which model's reference each symbol's drift is measured against (:func:`serving_models`);
* the ``drift`` rows: one per symbol and pass (:func:`save_passes`), read back at start as the
  symbols' history (:func:`load_history`) and the groups' last early retrains
  (:func:`last_retrains`), so a restart neither forgets the 3σ history nor retrains twice in a
  cooldown;
* the latest early retrains, from the audit log (:func:`recent_retrains`);
* pruning: nightly, housekeeping deletes the rows older than what a restart reads back
  (:func:`kept_ms`) plus a day (:func:`prune`); about 1,200 rows a day for 50 symbols otherwise
  pile up for ever. The early retrains stay in the audit log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from appliance.config import DriftConfig
from appliance.schedule import duration_s
from appliance.store import Store
from models.registry import list_models

# models whose reference can stand for a symbol when its group has no prod model
SERVING_MODES = ("prod", "shadow", "candidate")


@dataclass(frozen=True)
class Served:
    """The model a symbol's drift is measured against."""

    model_id: str
    group: str
    kind: str
    timeframe: str
    symbols: tuple[str, ...]  # the model's group, retrained together


@dataclass(frozen=True)
class PassRow:
    ts_ms: int
    symbol: str
    kl: float
    zscore: float | None
    model_id: str
    group: str
    features: dict[str, float]
    line: float | None
    verdict: str
    retrain: str | None = None


def serving_models(models: list[dict[str, Any]]) -> dict[str, Served]:
    """symbol → the prod model of the group that trades it, else the newest model (prod,
    shadow or candidate) that holds it."""
    out: dict[str, Served] = {}
    ranked = sorted((m for m in models if m["mode"] in SERVING_MODES),
                    key=lambda m: (m["mode"] == "prod", m.get("created") or 0.0, m["model_id"]))
    for m in ranked:  # later (better) entries overwrite earlier ones
        served = Served(m["model_id"], m["group"], m["kind"], m.get("timeframe") or "5m",
                        tuple(m["symbols"] or ()))
        for symbol in served.symbols:
            out[symbol] = served
    return out


def serving(store: Store) -> dict[str, Served]:
    return serving_models(list_models(store))


def save_passes(store: Store, rows: list[PassRow]) -> None:
    for r in rows:
        store.sql("INSERT INTO drift (ts, symbol, kl, zscore, model_id, grp, features, line, "
                  "verdict, retrain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  [r.ts_ms, r.symbol, r.kl, r.zscore, r.model_id, r.group,
                   json.dumps(r.features), r.line, r.verdict, r.retrain])


def load_history(store: Store, since_ms: int) -> list[tuple[int, str, str, float,
                                                             dict[str, float]]]:
    """(ts_ms, symbol, model_id, aggregate, per-feature KL) of the passes since ``since_ms``,
    oldest first."""
    rows = store.sql("SELECT ts, symbol, model_id, kl, features FROM drift WHERE ts >= ? "
                     "AND model_id IS NOT NULL ORDER BY ts", [since_ms])
    return [(int(t), s, m, float(kl), json.loads(f) if f else {}) for t, s, m, kl, f in rows]


def last_retrains(store: Store) -> dict[str, int]:
    """group → the market time (ms) of its last early retrain."""
    return {g: int(t) for g, t in store.sql(
        "SELECT grp, max(ts) FROM drift WHERE retrain IS NOT NULL GROUP BY grp")}


def recent_retrains(store: Store, limit: int) -> list[dict[str, Any]]:
    """The details of the latest early retrains (the audit log's ``drift_retrain`` rows),
    newest first: the Incidents screen's list, kept across restarts."""
    rows = store.sql("SELECT details FROM audit_log WHERE action = 'drift_retrain' "
                     "ORDER BY id DESC LIMIT ?", [limit])
    return [json.loads(d) for (d,) in rows if d]


def kept_ms(cfg: DriftConfig) -> int:
    """How far back the drift service needs its rows: the rule's history and the
    ``persist - 1`` passes before it judges on full histories too, or the cooldown (the last
    early retrain per group) when that is longer."""
    history = duration_s(cfg.history) + (cfg.persist - 1) * duration_s(cfg.interval)
    return int(max(history, duration_s(cfg.cooldown)) * 1000)


def prune(store: Store, before_ms: int) -> int:
    """Delete the drift rows older than ``before_ms``; returns how many went."""
    return len(store.sql("DELETE FROM drift WHERE ts < ? RETURNING 1", [before_ms]))

"""The model lifecycle: the only code that changes a model's mode.

::

                 ┌────────── superseded / rejected ──────────┐
                 │                                           ▼
    (trained) → candidate ──→ shadow ──→ prod ──→ retired ──→ archived
                 │              │   ▲      ▲          │          ▲
                 │              │   │      └ rollback ┘          │
                 │              └───┼──→ rejected ───────────────┘
                 └── promote ───────┘ (operator)

* ``candidate``: registered from a finished training run. A newer candidate of the same group
  and kind makes an older one ``rejected`` ("superseded"), so unshadowed candidates do not pile
  up.
* ``shadow``: trades on paper at 1% size; the shadow desk gives it a verdict after its period.
* ``prod``: trades the account. **At most one per group**: promoting a model retires the group's
  prod model in the same transaction; a pinned prod model is never replaced (promotion, rollback
  and demotion of it are refused until it is unpinned).
* ``retired``: a replaced or demoted prod model. Its files are kept so that ``rollback`` can make
  it prod again; only ``lifecycle.keep_retired`` per group are kept, older ones are archived.
* ``rejected``: a shadow that failed its verdict (or a superseded candidate). Files kept until
  the disk guard needs the space.
* ``archived``: files deleted, rows kept for the record. Only models that had their verdict
  (retired, rejected) are archived — never a fresh candidate, a shadow or prod.

Every transition is one DuckDB transaction that changes the mode, appends a
``model_transitions`` row and an ``audit_log`` row and bumps the registry version (which the
trading engine watches to reload its models). The bus event, the notification and the version
mirror on the bus follow from :class:`Lifecycle` after the commit. The functions here are
synchronous and take a :class:`~appliance.store.Store`: ``run`` calls them in its store thread,
the CLI calls them directly when ``run`` is down.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from appliance.contracts import Event, Snapshot
from appliance.paths import StatePaths
from appliance.store import Store
from data.files import sha256_file
from models.artifacts import delete_model_files
from models.registry import RegistryError, get_model, insert_candidate, list_models

MODES = ("candidate", "shadow", "prod", "retired", "rejected", "archived")
ALLOWED: dict[str | None, tuple[str, ...]] = {
    None: ("candidate",),
    "candidate": ("shadow", "prod", "rejected"),
    "shadow": ("prod", "rejected"),
    "prod": ("retired",),
    "retired": ("prod", "archived"),
    "rejected": ("archived",),
    "archived": (),
}
ARCHIVABLE = ("retired", "rejected")  # had their verdict
REGISTRY_VERSION = "registry_version"  # the bus mirror of the DuckDB registry version
_STAMP = {"shadow": "shadow_started", "prod": "promoted", "retired": "retired",
          "archived": "archived"}


class LifecycleError(RegistryError):
    """A transition the lifecycle refuses; the message says why and what to do."""


@dataclass(frozen=True)
class Transition:
    """One committed change of a model's mode (what the effects are made of)."""

    model_id: str
    group: str
    kind: str
    from_mode: str | None
    to_mode: str
    actor: str
    reason: str
    ts: float  # market time
    version: int  # registry version after this transition
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def action(self) -> str:
        """The audit action: ``promoted``, ``retired``, ``shadow_started``, ... (a verb)."""
        return {"candidate": "registered", "shadow": "shadow_started", "prod": "promoted",
                "retired": "retired", "rejected": "rejected",
                "archived": "archived"}[self.to_mode]

    def payload(self) -> dict[str, Any]:
        return {**asdict(self), "action": self.action}


def registry_version(store: Store) -> int:
    return int(store.sql("SELECT version FROM registry_version")[0][0])


def _in_transaction(store: Store, fn: Callable[[], list[Transition]]) -> list[Transition]:
    store.sql("BEGIN TRANSACTION")
    try:
        out = fn()
        store.sql("COMMIT")
    except Exception:
        store.sql("ROLLBACK")
        raise
    return out


def _move(store: Store, m: dict[str, Any], to: str, *, actor: str, reason: str, now: float,
          details: dict[str, Any] | None = None) -> Transition:
    """Change one model's mode inside the caller's transaction (the one write path)."""
    frm = m["mode"]
    if to not in ALLOWED.get(frm, ()):
        raise LifecycleError(f"{m['model_id']} is {frm}; it cannot become {to} "
                             f"(allowed: {', '.join(ALLOWED.get(frm, ())) or 'nothing'})")
    stamp = _STAMP.get(to)
    extra = f", {stamp} = ?" if stamp else ""
    store.sql(f"UPDATE ml_models SET mode = ?, mode_since = ?{extra} WHERE model_id = ?",
              [to, now, *([now] if stamp else []), m["model_id"]])
    version = int(store.sql("UPDATE registry_version SET version = version + 1 "
                            "RETURNING version")[0][0])
    t = Transition(m["model_id"], m["group"], m["kind"], frm, to, actor, reason, now, version,
                   details or {})
    store.sql("INSERT INTO model_transitions (ts, model_id, grp, from_mode, to_mode, actor, "
              "reason, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              [now, t.model_id, t.group, frm, to, actor, reason, version])
    store.sql("INSERT INTO audit_log (ts, actor, action, reason, details) VALUES (?, ?, ?, ?, ?)",
              [time.time(), actor, f"{t.action} {t.model_id}", reason,
               json.dumps({"group": t.group, "kind": t.kind, "from": frm, "to": to,
                           "market_ts": now, "version": version, **(details or {})},
                          default=str)])
    m["mode"] = to
    return t


def _group_models(store: Store, group: str) -> list[dict[str, Any]]:
    return [m for m in list_models(store) if m["group"] == group]


def _prune_retired(store: Store, group: str, keep: int, *, now: float) -> list[Transition]:
    retired = sorted((m for m in _group_models(store, group) if m["mode"] == "retired"),
                     key=lambda m: (m.get("retired") or m.get("mode_since") or 0.0,
                                    m["model_id"]), reverse=True)
    return [_move(store, m, "archived", actor="lifecycle", now=now,
                  reason=f"more than {keep} retired models in group {group}")
            for m in retired[keep:]]


# -- operations (each one transaction) -------------------------------------------------------

def register(store: Store, receipt: dict[str, Any], *, now: float,
             actor: str = "training") -> list[Transition]:
    """A finished run becomes a candidate (idempotent by run id); older candidates of the same
    group and kind are superseded. Empty when the run was already registered."""

    def go() -> list[Transition]:
        m = insert_candidate(store, receipt, now)
        if m is None:
            return []
        created = _move(store, {**m, "mode": None}, "candidate", actor=actor, now=now,
                        reason=f"trained ({receipt.get('tags', {}).get('trigger', 'run')})",
                        details={"run_id": receipt["run_id"],
                                 "sharpe": (receipt.get("metrics") or {}).get("sharpe")})
        out = [created]
        for old in _group_models(store, m["group"]):
            if (old["mode"] == "candidate" and old["kind"] == m["kind"]
                    and old["model_id"] != m["model_id"]):
                out.append(_move(store, old, "rejected", actor=actor, now=now,
                                 reason=f"superseded by {m['model_id']}"))
        return out

    return _in_transaction(store, go)


def start_shadow(store: Store, model_id: str, *, actor: str, reason: str,
                 now: float) -> list[Transition]:
    return _in_transaction(store, lambda: [_move(store, get_model(store, model_id), "shadow",
                                                 actor=actor, reason=reason, now=now)])


def reject(store: Store, model_id: str, *, actor: str, reason: str, now: float,
           details: dict[str, Any] | None = None) -> list[Transition]:
    return _in_transaction(store, lambda: [_move(store, get_model(store, model_id), "rejected",
                                                 actor=actor, reason=reason, now=now,
                                                 details=details)])


def promote(store: Store, model_id: str, *, actor: str, reason: str, now: float,
            keep_retired: int = 3, details: dict[str, Any] | None = None) -> list[Transition]:
    """Make ``model_id`` its group's prod model; the current prod (if any) is retired."""

    def go() -> list[Transition]:
        m = get_model(store, model_id)
        if m["mode"] == "prod":
            raise LifecycleError(f"{model_id} is already prod")
        if m["mode"] not in ALLOWED or "prod" not in ALLOWED[m["mode"]]:
            raise LifecycleError(f"{model_id} is {m['mode']}; only a candidate, shadow or "
                                 "retired model can be promoted")
        _check_files(store, m)
        out = []
        for p in [p for p in _group_models(store, m["group"]) if p["mode"] == "prod"]:
            if p.get("pinned"):
                raise LifecycleError(f"group {m['group']}'s prod model {p['model_id']} is "
                                     "pinned; unpin it first")
            out.append(_move(store, p, "retired", actor=actor, now=now,
                             reason=f"replaced by {model_id}"))
        out.append(_move(store, m, "prod", actor=actor, reason=reason, now=now,
                         details=details))
        return out + _prune_retired(store, m["group"], keep_retired, now=now)

    return _in_transaction(store, go)


def demote(store: Store, model_id: str, *, actor: str, reason: str,
           now: float) -> list[Transition]:
    """Take a prod model out of service (→ retired, the group has no prod until a promotion
    or a rollback) or end a shadow early (→ rejected)."""

    def go() -> list[Transition]:
        m = get_model(store, model_id)
        if m["mode"] not in ("prod", "shadow"):
            raise LifecycleError(f"{model_id} is {m['mode']}; only prod and shadow models "
                                 "can be demoted")
        if m.get("pinned"):
            raise LifecycleError(f"{model_id} is pinned; unpin it first")
        return [_move(store, m, "retired" if m["mode"] == "prod" else "rejected", actor=actor,
                      reason=reason, now=now)]

    return _in_transaction(store, go)


def rollback(store: Store, group: str, *, actor: str, reason: str,
             now: float) -> list[Transition]:
    """The group's most recently retired model becomes prod again (its files must be there)."""

    def go() -> list[Transition]:
        models = _group_models(store, group)
        if not models:
            raise LifecycleError(f"no model in group {group!r} (methtrader models lists them)")
        retired = sorted((m for m in models if m["mode"] == "retired"),
                         key=lambda m: (m.get("retired") or 0.0, m["model_id"]))
        if not retired:
            raise LifecycleError(f"group {group} has no retired model to roll back to")
        back = retired[-1]
        out = []
        for p in [p for p in models if p["mode"] == "prod"]:
            if p.get("pinned"):
                raise LifecycleError(f"group {group}'s prod model {p['model_id']} is pinned; "
                                     "unpin it first")
            out.append(_move(store, p, "retired", actor=actor, now=now,
                             reason=f"rolled back to {back['model_id']}"))
        _check_files(store, back)
        out.append(_move(store, back, "prod", actor=actor, reason=f"rollback: {reason}",
                         now=now))
        return out

    return _in_transaction(store, go)


def archive(store: Store, model_id: str, *, actor: str, reason: str,
            now: float) -> list[Transition]:
    """Archive a model that had its verdict (retired or rejected); its files are deleted after
    the commit (a crash in between leaves a file that the next archive sweep deletes)."""

    def go() -> list[Transition]:
        m = get_model(store, model_id)
        if m["mode"] not in ARCHIVABLE:
            raise LifecycleError(f"{model_id} is {m['mode']}; only retired or rejected models "
                                 "are archived")
        return [_move(store, m, "archived", actor=actor, reason=reason, now=now)]

    return _in_transaction(store, go)


def pin(store: Store, model_id: str, pinned: bool, *, actor: str, reason: str,
        now: float) -> dict[str, Any]:
    """Pin (or unpin) a prod model: a pinned prod is never replaced. Audited; not a mode
    change, so no transition."""

    def go() -> list[Transition]:
        m = get_model(store, model_id)
        if pinned and m["mode"] != "prod":
            raise LifecycleError(f"{model_id} is {m['mode']}; only a prod model can be pinned")
        store.sql("UPDATE ml_models SET pinned = ? WHERE model_id = ?", [pinned, model_id])
        store.sql("INSERT INTO audit_log (ts, actor, action, reason, details) VALUES "
                  "(?, ?, ?, ?, ?)", [time.time(), actor, f"{'pin' if pinned else 'unpin'} "
                                      f"{model_id}", reason,
                                      json.dumps({"group": m["group"], "market_ts": now})])
        store.sql("UPDATE registry_version SET version = version + 1")
        return []

    _in_transaction(store, go)
    return {"model_id": model_id, "pinned": pinned}


def delete_archived_files(store: Store, state_dir: Path) -> int:
    """Delete the model files of archived models that still have them (the after-commit half
    of :func:`archive`); returns how many were deleted."""
    n = 0
    for m in list_models(store, "archived"):
        if m.get("onnx_path") and delete_model_files(_resolve(state_dir, m["onnx_path"])):
            n += 1
    return n


def _resolve(state_dir: Path, path: str) -> Path:
    """A stored model path in the state dir in use, never another state dir's file."""
    return StatePaths(state_dir).resolve_stored(path)


def _check_files(store: Store, m: dict[str, Any]) -> None:
    path = m.get("onnx_path")
    state_dir = Path(store.path).parent
    if not path or not _resolve(state_dir, path).exists():
        raise LifecycleError(f"{m['model_id']}: its model file is gone ({path}); it cannot "
                             "trade again")


def invariants(store: Store) -> list[str]:
    """What must always hold, as messages (empty when all is well): used by tests and by the
    operator's `models --check` (:func:`registry_problems`)."""
    return registry_problems(list_models(store))


def registry_problems(models: list[dict[str, Any]]) -> list[str]:
    """:func:`invariants` over a registry listing (DuckDB's, or the bus snapshot while `run`
    holds the file): at most one prod per group, every model in a known mode."""
    problems = []
    prods: dict[str, list[str]] = {}
    for m in models:
        if m["mode"] not in MODES:
            problems.append(f"{m['model_id']} has unknown mode {m['mode']!r}")
        elif m["mode"] == "prod":
            prods.setdefault(m["group"], []).append(m["model_id"])
    for grp, ids in sorted(prods.items()):
        if len(ids) > 1:
            problems.append(f"group {grp} has {len(ids)} prod models")
    return problems


def file_problems(models: list[dict[str, Any]]) -> list[str]:
    """Models that can still trade (candidate, shadow, prod, retired) whose ONNX file is gone
    or is not the file that was registered (``onnx_path`` absolute, as the CLI lists them)."""
    problems = []
    for m in models:
        if m["mode"] in ("rejected", "archived") or not m.get("onnx_path"):
            continue
        path = Path(m["onnx_path"])
        if not path.exists():
            problems.append(f"{m['model_id']} ({m['mode']}): its model file {path} is missing")
        elif m.get("onnx_sha256") and sha256_file(path) != m["onnx_sha256"]:
            problems.append(f"{m['model_id']} ({m['mode']}): {path} does not match its "
                            "registered sha256 (changed after training)")
    return problems


def publish_registry(store: Store, bus: Any) -> None:
    """Put the registry on the bus (what `methtrader models` and the TUI list while `run` holds
    DuckDB), read and written in one call on the store's thread. The store runs one call at a
    time, so a transition that commits after this read publishes its own snapshot after this
    one: a slower pass (the training service's) can never overwrite a newer registry with the
    older one it read."""
    bus.put_snapshot(Snapshot.REGISTRY, list_models(store))


class Lifecycle:
    """Runs the operations above in the store's thread and carries out their effects: the
    registry snapshot refreshed and its version mirrored on the bus (engines reload), a
    ``model_transition`` event and a notification per transition, and the files of archived
    models deleted."""

    def __init__(self, store: Any, bus: Any, notifier: Any | None, state_dir: Path) -> None:
        self.store, self.bus, self.notifier, self.state_dir = store, bus, notifier, state_dir

    async def apply(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        result = await self.store.run(functools.partial(op, self.store.store, *args, **kwargs))
        transitions = result if isinstance(result, list) else []
        if transitions:
            # the registry snapshot first: whoever sees the event and then asks `methtrader
            # models` (which reads this snapshot while run holds DuckDB) sees the new mode
            await self.store.run(publish_registry, self.store.store, self.bus)
        self.publish(transitions)
        if any(t.to_mode == "archived" for t in transitions):
            await self.store.run(delete_archived_files, self.store.store, self.state_dir)
        return result

    def publish(self, transitions: list[Transition]) -> None:
        for t in transitions:
            self.bus.counter_incr(REGISTRY_VERSION)
            self.bus.publish(Event.MODEL_TRANSITION, t.payload(), service=t.actor,
                             market_ts=t.ts)
            if self.notifier is not None:
                self.notifier.notify(t.action, f"{t.model_id} ({t.group}, {t.kind}) "
                                     f"{t.from_mode or 'new'} → {t.to_mode} by {t.actor}: "
                                     f"{t.reason}", t.payload())

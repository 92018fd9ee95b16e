"""What an operator can ask of the model registry: promote, demote, rollback, pin, unpin.

Each command is a lifecycle operation (:mod:`appliance.lifecycle`), so the same rules hold
whoever asks: one prod model per group, a pinned prod model is never replaced, a replaced prod
model is retired (and can be rolled back to), and every change is audited with the operator's
name and reason. ``run`` executes them from the bus (the operator service); the CLI applies them
to DuckDB itself when ``run`` is down.
"""

from __future__ import annotations

from typing import Any, Callable

from appliance import lifecycle
from appliance.contracts import Command
from appliance.store import Store

RegistryCommand = Callable[[Store, dict[str, Any], float], Any]


def _promote(store: Store, a: dict[str, Any], now: float) -> Any:
    return lifecycle.promote(store, a["model_id"], actor=a["actor"], reason=a["reason"], now=now,
                             keep_retired=int(a.get("keep_retired", 3)))


def _demote(store: Store, a: dict[str, Any], now: float) -> Any:
    return lifecycle.demote(store, a["model_id"], actor=a["actor"], reason=a["reason"], now=now)


def _rollback(store: Store, a: dict[str, Any], now: float) -> Any:
    return lifecycle.rollback(store, a["group"], actor=a["actor"], reason=a["reason"], now=now)


def _pin(pinned: bool) -> RegistryCommand:
    def command(store: Store, a: dict[str, Any], now: float) -> Any:
        return lifecycle.pin(store, a["model_id"], pinned, actor=a["actor"],
                             reason=a["reason"], now=now)
    return command


REGISTRY_COMMANDS: dict[str, RegistryCommand] = {
    Command.PROMOTE: _promote,
    Command.DEMOTE: _demote,
    Command.ROLLBACK: _rollback,
    Command.PIN: _pin(True),
    Command.UNPIN: _pin(False),
}


def summarize(result: Any) -> dict[str, Any]:
    """A command's result as plain data: the transitions it made (or the pin state)."""
    if isinstance(result, list):
        return {"transitions": [{"model_id": t.model_id, "from": t.from_mode, "to": t.to_mode,
                                 "reason": t.reason} for t in result],
                **{t.to_mode if t.to_mode != "prod" else "promoted": t.model_id
                   for t in result}}
    return dict(result)

"""What an operator can ask of the money path, as functions of the registry and the engine.

The same functions serve ``run`` (commands from the CLI and the TUI through the bus, executed
and audited by the operator service) and the CLI when ``run`` is down (applied to DuckDB
directly). Promotion by hand follows the registry's rules: one prod model per group, a pinned
prod model is never replaced, and ``demote`` takes a model out of service back to candidate.
"""

from __future__ import annotations

import time
from typing import Any

from appliance.store import Store
from models.registry import RegistryError, get_model, list_models, set_mode

REGISTRY_VERSION = "registry_version"


def promote(store: Store, model_id: str, now: float | None = None) -> dict[str, Any]:
    now = now or time.time()
    m = get_model(store, model_id)
    if m["mode"] == "prod":
        raise RegistryError(f"{model_id} is already prod")
    if m["mode"] == "archived":
        raise RegistryError(f"{model_id} is archived (its model file was deleted)")
    prod = [p for p in list_models(store, "prod") if p["group"] == m["group"]]
    if any(p.get("pinned") for p in prod):
        raise RegistryError(f"group {m['group']}'s prod model {prod[0]['model_id']} is pinned; "
                            "unpin it first")
    for p in prod:
        set_mode(store, p["model_id"], "archived", now)
    set_mode(store, model_id, "prod", now)
    return {"promoted": model_id, "archived": [p["model_id"] for p in prod]}


def demote(store: Store, model_id: str) -> dict[str, Any]:
    m = get_model(store, model_id)
    if m["mode"] not in ("prod", "shadow"):
        raise RegistryError(f"{model_id} is {m['mode']}; only prod and shadow models demote")
    if m.get("pinned"):
        raise RegistryError(f"{model_id} is pinned; unpin it first")
    set_mode(store, model_id, "candidate")
    return {"demoted": model_id, "from": m["mode"]}


def pin(store: Store, model_id: str, pinned: bool = True) -> dict[str, Any]:
    m = get_model(store, model_id)
    if pinned and m["mode"] != "prod":
        raise RegistryError(f"{model_id} is {m['mode']}; only a prod model can be pinned")
    store.sql("UPDATE ml_models SET pinned = ? WHERE model_id = ?", [pinned, model_id])
    return {"model_id": model_id, "pinned": pinned}


REGISTRY_COMMANDS = {
    "promote": lambda store, a: promote(store, a["model_id"]),
    "demote": lambda store, a: demote(store, a["model_id"]),
    "pin": lambda store, a: pin(store, a["model_id"], True),
    "unpin": lambda store, a: pin(store, a["model_id"], False),
}

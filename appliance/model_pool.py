"""The model pool: the prod and shadow models the trading engine runs, as ONNX sessions.

It reloads when the registry version changes (every lifecycle transition bumps it in DuckDB and
mirrors it on the bus), so a model that was promoted, retired or archived a moment ago is picked
up — or dropped — at the next bar. Each bar it compares the bus's state token (bytes of a
mapped file, :meth:`appliance.bus.Bus.state_token`) and reads the mirror only when the token
moved; DuckDB's own version is read at start and hourly, in case the bus ever missed a bump.
A model file is opened only after its sha256 matches the registry; one that does not is refused
(an incident) and not run. One session per model, shared by every symbol it serves. Inside
``run`` the trading service also looks between bars (:data:`appliance.services.trading.IDLE_S`),
so a reload rarely falls on a bar's path to its orders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Awaitable, Callable

import numpy as np

from appliance import lifecycle
from appliance.bus import StateWatch
from appliance.books import book_id_of
from models.features import serving_columns
from models.registry import RegistryError, list_models, verified_onnx_path
from models.serving import OnnxModel

LIVE_MODES = ("prod", "shadow")


@dataclass
class PooledModel:
    row: dict[str, Any]  # the registry row (mode, mode_since, symbols, timeframe, ...)
    session: OnnxModel
    columns: np.ndarray = field(default_factory=lambda: serving_columns(None))
    """The model's input columns in the bar book's rows (its run's feature set and list)."""

    @property
    def model_id(self) -> str:
        return self.row["model_id"]

    @property
    def mode(self) -> str:
        return self.row["mode"]

    @property
    def timeframe(self) -> str:
        return self.row["timeframe"] or "5m"

    @cached_property
    def book_id(self) -> str:
        """The book of this model's current mode period (the pool makes a new PooledModel
        when the row changes, so the cached properties follow it)."""
        return book_id_of(self.mode, self.model_id, self.row["mode_since"] or 0.0)

    @property
    def lookback(self) -> int:
        return self.session.lookback or 1

    @cached_property
    def excluded(self) -> frozenset[str]:
        """Symbols whose spread ate its edge in validation: reported, not traded."""
        costs = (self.row.get("metrics") or {}).get("costs") or {}
        return frozenset(costs.get("excluded") or {})


def warm_session(path: Any, symbols: int, n_columns: int) -> OnnxModel:
    """The model's session, run once on zeros of the shape a bar hands it: onnxruntime's first
    run of a session allocates and plans (milliseconds), and it would otherwise be the first
    bar's, in front of its orders. A model whose graph does not take its run's columns fails
    here, at load, instead of on that bar."""
    session = OnnxModel(path)
    session.predict(np.zeros((max(1, symbols), session.lookback or 1, n_columns),
                             dtype=np.float32))
    return session


class ModelPool:
    def __init__(self, ctx: Any, on_refused: Callable[[str, str], Awaitable[None]]) -> None:
        self.ctx = ctx
        self.on_refused = on_refused
        self.version = -1
        self.seen = -1  # the bus mirror at the last reload
        self.watch = StateWatch()  # the mirror is read only when the bus's state moved
        self.models: dict[str, PooledModel] = {}

    async def refresh(self, *, force: bool = False) -> bool:
        """Reload when the registry changed; True when it did."""
        store = self.ctx.store
        bus = self.ctx.bus
        if not self.watch.moved(bus) and not force:
            return False  # the mirror has not moved since it was last read
        mirror = bus.counter(lifecycle.REGISTRY_VERSION)
        if mirror == self.seen and not force:
            return False
        self.seen = mirror
        version = await store.run(lifecycle.registry_version, store.store)
        if version == self.version:
            return False
        self.version = version
        rows = {m["model_id"]: m for m in await store.run(list_models, store.store)
                if m["mode"] in LIVE_MODES}
        keep = {}
        for model_id, row in rows.items():
            known = self.models.get(model_id)
            if known is not None:
                keep[model_id] = PooledModel(row, known.session, known.columns)
                continue
            try:
                columns = serving_columns(row.get("feature_set"),
                                          (row.get("params") or {}).get("features"))
                path = await store.run(verified_onnx_path, store.store, model_id)
                session = await self.ctx.io(warm_session, path, len(row["symbols"]),
                                            len(columns))
            except (RegistryError, OSError, ValueError) as exc:
                await self.on_refused("model_refused", str(exc))
                continue
            keep[model_id] = PooledModel(row, session, columns)
        self.models = keep
        return True

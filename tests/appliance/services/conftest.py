"""A real service context: DuckDB file, diskcache bus, sim market on a virtual clock."""

from __future__ import annotations

import pytest

from appliance.bus import SWITCHES, Bus
from appliance.clock import VirtualClock
from appliance.context import ServiceContext
from appliance.exchange.sim import SimExchange
from appliance.exchange.simmarket import EPOCH_MS
from appliance.metrics import Metrics
from appliance.store import Store, StoreRunner

START = (EPOCH_MS + 800 * 86_400_000) / 1000  # a fixed market time: results are reproducible


@pytest.fixture
def make_ctx(cfg, state_dir):
    made = []

    def make(speed: float = 60.0, start: float = START) -> ServiceContext:
        clock = VirtualClock(start, speed)
        store = Store(state_dir / "methtrader.duckdb")
        bus = Bus(state_dir / "bus")
        for name in SWITCHES:  # as `run` initialises a fresh state dir (missing reads as ON)
            if bus.switch_meta(name) is None:
                bus.set_switch(name, False, actor="appliance", reason="initialised",
                               source="appliance")
        ctx = ServiceContext(cfg=cfg, clock=clock, bus=bus, store=StoreRunner(store, inline=True),
                             exchange=SimExchange(clock, cfg.sim, inline=True),
                             metrics=Metrics(), inline=True)
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.store.store.close()
        ctx.bus.close()

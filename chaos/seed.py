"""A scratch appliance that trades: a prod model, so the sim venue holds open positions.

A fresh appliance has no prod model for hours (models are trained, shadowed and promoted by the
operator), so an experiment about money in flight seeds one the way the trading tests do: the
state dir is initialised by a short ``run``, then, with the appliance stopped, a few days of
history of two pairs go into its lake, an rf is trained on them (``models.training``, as the
nightly job does), registered and promoted through the lifecycle (audited as the chaos actor).
``run`` with :data:`TRADING_ENV` then trades it on every bar (no conviction threshold).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import trio

from appliance import lifecycle
from appliance.backfill import backfill_symbol
from appliance.clock import load_virtual_clock
from appliance.config import build_config
from appliance.exchange.sim import SimExchange
from appliance.paths import StatePaths
from appliance.store import Store
from data.lake import DAY_MS, Lake
from models.training import train_run

SYMBOLS = ("BTCUSDT", "ETHUSDT")
#: ``run``'s settings for a seeded appliance: trade the prod model's every signal
TRADING_ENV: dict[str, str] = {"METHTRADER__TRADING__THRESHOLD": "0"}
RUN_ID = "chaos-seed"


def seed_prod_model(state_dir: Path, env: dict[str, str], *, days: int = 10) -> str:
    """Train, register and promote an rf on ``SYMBOLS`` in the stopped appliance at
    ``state_dir`` (initialised: its ``clock.json`` says where market time stands); its id."""
    cfg = build_config(None, env=env)
    paths = StatePaths(state_dir)
    lake = Lake(paths.lake)

    async def history() -> float:
        clock = load_virtual_clock(state_dir, 1.0, 0.0)
        venue = SimExchange(clock, cfg.sim, inline=True)
        end = int(clock.now() * 1000) // 60_000 * 60_000
        for symbol in SYMBOLS:
            await backfill_symbol(venue, lake, symbol, end - days * DAY_MS, end, inline=True)
            lake.resample(symbol)
        return clock.now()

    now = trio.run(history)
    receipt = train_run(state_dir, RUN_ID, "chaos", list(SYMBOLS), "rf")
    store = Store(paths.duckdb)
    try:
        lifecycle.register(store, receipt, now=now, actor="chaos")
        model_id = f"m-{RUN_ID}"
        lifecycle.promote(store, model_id, actor="chaos", now=now,
                          reason="chaos: a prod model, so that positions are open at the kill")
    finally:
        store.close()
    return model_id


def venue_positions(state_dir: Path) -> dict[str, Decimal]:
    """The sim venue's open positions (its persisted paper account), by symbol."""
    try:
        data = json.loads(StatePaths(state_dir).sim_account.read_text())
    except (OSError, ValueError):  # not written yet, or being replaced
        return {}
    return {s: Decimal(q) for s, (q, _, _) in data.get("positions", {}).items() if Decimal(q)}


def venue_orders(state_dir: Path) -> set[str]:
    """The orderLinkIds of the orders the sim venue executed (the ones it still remembers)."""
    try:
        data = json.loads(StatePaths(state_dir).sim_account.read_text())
    except (OSError, ValueError):
        return set()
    return set(data.get("orders", {}))

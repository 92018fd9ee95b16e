"""``bench e2e``'s preparation: a sim universe with N traded symbols, a state dir with one prod
and two shadow models already registered over them, and the config ``run`` reads.

* The universe: the smallest ``sim.pairs`` whose symbols above the $10M bar at the start number
  at least N (a universe of P pairs is the first P of the 400, :mod:`appliance.exchange.
  simuniverse`); when more than N are above it, the bar is raised to between the N-th and the
  next turnover, so the appliance follows and trades N symbols.
* The models: rf (prod), mlp and rf (shadows), trained in this process on the bars before the
  start (as ``bench trading`` does), so the first closed bar already goes to orders.
* The config: the market starts at a fixed Wednesday noon (no nightly, Sunday or AutoML schedule
  inside the run), ``datasets.days`` is cut to a week so the start-up backfill of N symbols does
  not dominate minutes of market time, market time never waits for bootstrap training, and the
  trading limits are wide (as in ``bench trading``) so that every symbol's orders are sent.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from appliance.bars import aggregate_buckets
from appliance.bus import MAINTENANCE_MODE, Bus
from appliance.config import ConfigError
from appliance.exchange.simmarket import SimMarket
from appliance.exchange.simuniverse import MAX_PAIRS
from appliance.paths import StatePaths
from appliance.schedule import utc
from appliance.store import Store

START_S = utc("2026-11-18 12:00")  # a Wednesday, noon: no nightly or weekly job in the window
BAR_MS = 300_000
WARM_BARS = 400
TRADABLE_BAR_USD = 10_000_000.0
DATASET_DAYS = 7


@dataclass(frozen=True)
class Universe:
    pairs: int  # sim.pairs
    min_turnover_usd: float  # discovery's bar
    symbols: list[str]  # the N traded, most traded first


def choose_universe(n: int, t_ms: int, seed: int = 7) -> Universe:
    """The smallest universe with ``n`` symbols above the bar at ``t_ms`` (see the module)."""
    market = SimMarket(seed, pairs=MAX_PAIRS)
    order = {s: i for i, s in enumerate(market.symbols())}
    turnover = {t.symbol: t.turnover_24h for t in market.tickers(t_ms)}
    return pick_universe(n, [(order[s], s, v) for s, v in turnover.items()])


def pick_universe(n: int, listed: list[tuple[int, str, float]],
                  bar: float = TRADABLE_BAR_USD) -> Universe:
    """Pure part of :func:`choose_universe`: ``listed`` holds (index in the universe, symbol,
    24h turnover) of the symbols listed at the start."""
    listed = sorted(listed)
    above = [i for i, _, v in listed if v > bar]
    if not 1 <= n <= len(above):
        raise ConfigError(f"bench e2e: --symbols must be in [1, {len(above)}] (the symbols "
                         f"above the ${bar / 1e6:.0f}M bar in a {MAX_PAIRS}-pair universe)")
    pairs = max(24, above[n - 1] + 1)
    inside = sorted(((v, s) for i, s, v in listed if i < pairs and v > bar), reverse=True)
    if len(inside) > n:  # raise the bar to between the n-th and the next
        bar = math.sqrt(inside[n - 1][0] * inside[n][0])
    return Universe(pairs, bar, [s for _, s in inside[:n]])


def seed_models(state: Path, symbols: list[str], start_s: float, seed: int, pairs: int) -> None:
    """Register rf (prod), mlp and rf (shadows) over ``symbols`` in a fresh state dir."""
    from benchmarks.trading import _register

    market = SimMarket(seed, pairs=pairs)
    end = int(start_s * 1000)
    begin = end - WARM_BARS * BAR_MS
    market.precompute(begin, end)
    bars = {symbols[0]: aggregate_buckets(market.candles(symbols[0], begin, end), BAR_MS)}
    store = Store(StatePaths(state).duckdb)
    try:
        _register(store, state, symbols, bars, start_s)
    finally:
        store.close()


def write_state(state: Path, universe: Universe, start_s: float, seed: int = 7) -> Path:
    """Models, the market clock and the config file of one bench run; returns the config."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    seed_models(state, universe.symbols, start_s, seed, universe.pairs)
    paths = StatePaths(state)
    paths.clock.write_text(json.dumps({"market_time": start_s}))
    with Bus(paths.bus) as bus:  # the seeded books trade from the first bar
        bus.set_switch(MAINTENANCE_MODE, False, actor="bench", reason="bench e2e trades")
    config = state.parent / "bench-e2e.toml"
    config.write_text("\n".join([
        "[sim]", f"seed = {seed}", f"pairs = {universe.pairs}",
        "[discovery]", f"min_turnover_usd = {universe.min_turnover_usd:.1f}",
        "[datasets]", f"days = {DATASET_DAYS}",
        "[training]", "bootstrap_hold_s = 0.0",
        "[trading]", "max_orders_per_minute = 100000", "max_symbol_notional = 1e12",
        "max_gross_exposure = 1e12", "max_leverage = 100.0", ""]))
    return config

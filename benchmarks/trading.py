"""``methtrader bench trading``: bar close → orders through the real trading engine.

It builds a real engine (DuckDB file, bus, sim venue with paper fills) in a temporary state dir,
registers one prod and two shadow models (rf, mlp, rf, trained on sim bars) over the traded
symbols, and feeds it closed 5m bars as the feed would. The traded symbols are the 21 of the
default sim universe listed over the benchmark's days, or with ``--symbols N`` the N most traded
symbols of a 400-pair universe listed throughout them (``symbols_above_bar`` says how many of
them trade above the $10M bar). Per bar it times what lies between the bar closing and the
last order leaving, i.e. handed to the venue (the sim's ``place_orders`` here; live, the
request written to Bybit): the bar book's features, one batched ONNX call per prod model,
sizing, lot rounding, the gateway's checks and its write-ahead journal. That is the span the
appliance's own ``trade_latency_ms`` histogram measures per order (and ``bench e2e`` reads).
Budget: p99 ≤ 2 ms at 50 symbols, ≤ 6 ms at 150. ``bar_to_orders_ms_p50``/``_p99`` are the
worst case (threshold 0: every book rebalances every symbol every bar); ``default_*`` the
default threshold. ``bar_to_fills_ms_*`` run on until the venue has answered and its fills are
in the books (``venue_ms_p50`` of it inside the venue: the sim's paper matching here, the
network and Bybit's engine live); ``bar_to_orders_cpu_ms_*`` count CPU time (on a shared
machine the wall figures also count other processes' turns). The shadow books' paper work and
recording the bar come after and are reported apart. ``--busy N`` runs N training processes
meanwhile, at the job consumer's niceness.

Caches: each bar comes after the previous one was recorded (~35 ms of DuckDB), and a path that
has cooled that long pays for cache misses. They grow with the time between bars, even when
the machine does nothing else meanwhile (on this shared virtual machine the caches cool with
time alone): ``--idle-ms N`` lets the engine idle N ms after recording each bar, as it does
between bars minutes apart in the appliance. Then, as the trading loop does once the next
bar has closed (``trading.rehearse_ms``, :mod:`appliance.rehearsal`), the engine rehearses
the last bar's path (changing nothing), ``REHEARSALS`` times, and the bar comes at a random
moment of the rehearsals' beat (uniform in [0, rehearse_ms) after the last).
``unrehearsed_bar_to_orders_ms_*`` is the worst case again without rehearsals,
``rehearsal_ms_p50`` what one rehearsal takes (its CPU cost every ``rehearse_ms`` from a bar's
close until it arrives).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from appliance import lifecycle
from appliance.bar_hub import BarBatch
from appliance.bars import aggregate_buckets
from appliance.bus import MAINTENANCE_MODE, Bus
from appliance.config import ConfigError, build_config
from appliance.context import ServiceContext
from appliance.exchange.sim import SimExchange
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from appliance.exchange.simuniverse import MAX_PAIRS
from appliance.metrics import Metrics
from appliance.paths import StatePaths
from appliance.services.trading import TradingEngine
from appliance.store import Store, StoreRunner
from appliance.supervisor import freeze_startup_heap
from models.artifacts import write_run
from models.features import compute_features
from models.kinds import train
from models.labels import label_classes

BAR_MS = 300_000
START = EPOCH_MS + 800 * DAY_MS
WARM_BARS = 400
BAR_BUDGET_MS = {50: 2.0, 150: 6.0}


class BenchClock:
    """Market time set by the benchmark: each bar is processed one second after it closes."""

    speed = 1.0

    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t

    async def sleep_until(self, t: float) -> None:
        await trio.lowlevel.checkpoint()

    async def sleep(self, seconds: float) -> None:
        await trio.lowlevel.checkpoint()


def _register(store: Store, state: Path, symbols: list[str], bars: dict[str, np.ndarray],
              now: float) -> None:
    feats = compute_features(bars[symbols[0]])
    y = label_classes(bars[symbols[0]][:, 4], 12)
    ok = np.isfinite(feats).all(axis=1) & (y >= 0)
    x = feats[ok][:, None, :].astype(np.float32)
    for i, (kind, mode) in enumerate((("rf", "prod"), ("mlp", "shadow"), ("rf", "shadow"))):
        model = train(kind, x, y[ok], params={"n_estimators": 50} if kind == "rf" else {},
                      seed=i)
        run_id = f"bench-{i}-{kind}"
        receipt = write_run(state, run_id, model.export_onnx, {}, {
            "run_id": run_id, "kind": kind, "group": "bench", "symbols": symbols,
            "timeframe": "5m", "params": model.params, "metrics": {"sharpe": 1.0},
            "tags": {}, "parent_run_id": None, "feature_set": "fs1", "dataset_sha256": "-",
            "loss_curve": [], "started": now, "ended": now})
        lifecycle.register(store, receipt, now=now)
        op = lifecycle.promote if mode == "prod" else lifecycle.start_shadow
        op(store, f"m-{run_id}", actor="bench", reason="bench", now=now)


def traded_symbols(n: int | None, start: int, end: int) -> tuple[SimMarket, list[str]]:
    """The market and the symbols the benchmark trades over [start, end): see the module doc."""
    if n is None:
        market = SimMarket(7)
        return market, market.symbols()[:21]  # the ones listed over the benchmark's days
    market = SimMarket(7, pairs=MAX_PAIRS)
    checks = [*range(start, end, DAY_MS), end - 1]
    listed = [s for s in market.symbols() if all(market.listed(s, t) for t in checks)]
    if not 1 <= n <= len(listed):
        raise ConfigError(f"bench trading: --symbols must be in [1, {len(listed)}] (the "
                          "symbols listed over the benchmark's days)")
    turnover = {t.symbol: t.turnover_24h for t in market.tickers(start)}
    return market, sorted(listed, key=lambda s: -turnover.get(s, 0.0))[:n]


#: rehearsals before each bar: on the real clock the appliance's loop runs ~100 (from the
#: close until the feed, which asks the venue half a second after it, has the bar)
REHEARSALS = 3


def run_one(n_bars: int = 300, threshold: float = 0.0, n_symbols: int | None = None,
            idle_ms: int = 0, rehearse_ms: float | None = None) -> dict[str, Any]:
    """One run of ``n_bars`` bars; ``rehearse_ms``: the trading loop's rehearsals (None: the
    configured ``trading.rehearse_ms``; 0: none)."""
    start, warm = START, WARM_BARS
    end = start + (warm + n_bars) * BAR_MS
    market, symbols = traded_symbols(n_symbols, start, end)
    market.precompute(start, end)
    bars = {s: aggregate_buckets(market.candles(s, start, end), BAR_MS) for s in symbols}
    above = {t.symbol for t in market.tickers(start + warm * BAR_MS) if t.turnover_24h > 10e6}
    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp)
        cfg = build_config(env={}, overrides={
            "general": {"state_dir": tmp, "metrics_port": 0},
            "sim": {"pairs": len(market.universe)},
            "trading": {"threshold": threshold, "max_orders_per_minute": 100_000,
                        "max_symbol_notional": 1e12, "max_gross_exposure": 1e12,
                        "max_leverage": 100.0,
                        **({} if rehearse_ms is None else {"rehearse_ms": rehearse_ms})}})
        every_s = cfg.trading.rehearse_ms / 1000
        rng = np.random.default_rng(0)
        clock = BenchClock((start + warm * BAR_MS) / 1000)
        store = Store(StatePaths(state).duckdb)
        bus = Bus(StatePaths(state).bus)
        # a fresh bus reads the kill switch ON (fail closed): the benchmark trades
        bus.set_switch(MAINTENANCE_MODE, False, actor="bench", reason="bench trades")
        ctx = ServiceContext(cfg=cfg, clock=clock, bus=bus,
                             store=StoreRunner(store, inline=True),
                             exchange=SimExchange(clock, cfg.sim, market, inline=True),
                             metrics=Metrics(), inline=True)
        _register(store, state, symbols, {s: b[:warm] for s, b in bars.items()}, clock.now())
        engine = TradingEngine(ctx)
        decide, decide_cpu, answered, venue, record, on_batch_cpu = [], [], [], [], [], []
        rehearsals: list[float] = []

        async def go() -> None:
            await engine.start()
            # the history a restart fills from stored candles; market time only moves on
            # (the venue's funding clock started at engine.start)
            for s, b in bars.items():
                engine.bar_books["5m"].extend(s, b[:warm])
            freeze_startup_heap()  # as `run` does once it has started
            for t in range(warm, warm + n_bars):
                bar_end = start + (t + 1) * BAR_MS
                clock.t = bar_end / 1000 + 1
                batch = BarBatch("5m", bar_end, {s: b[t] for s, b in bars.items() if len(b) > t})
                cpu = time.process_time()
                await engine.on_batch(batch)
                on_batch_cpu.append((time.process_time() - cpu) * 1000)
                t1 = time.perf_counter()
                await engine.flush()
                decide.append(engine.decide_ms)
                decide_cpu.append(engine.decide_cpu_ms)
                answered.append(engine.answered_ms)
                venue.append(engine.decide_venue_ms)
                record.append((time.perf_counter() - t1) * 1000)
                if idle_ms:
                    await trio.sleep(idle_ms / 1000)  # the engine waiting for the next bar
                # the next bar has closed: the loop rehearses every every_s until it comes,
                # at any moment of that beat (appliance.rehearsal)
                for i in range(REHEARSALS if every_s else 0):
                    t2 = time.perf_counter()
                    engine.rehearse()
                    rehearsals.append((time.perf_counter() - t2) * 1000)
                    last = i == REHEARSALS - 1
                    await trio.sleep(float(rng.uniform(0.0, every_s)) if last else every_s)

        trio.run(go)
        orders = store.sql("SELECT count(*) FROM orders WHERE status = 'filled'")[0][0]
        paper = store.sql("SELECT count(*) FROM fills WHERE mode = 'shadow'")[0][0]
        gaps = store.sql("SELECT count(*) FROM incidents WHERE message LIKE "
                         "'account identity%'")[0][0]
        store.close()
        bus.close()
    ms, rec = np.array(decide), np.array(record)
    return {"symbols": len(symbols), "symbols_above_bar": len(above & set(symbols)),
            "models": 3, "bars": n_bars, "idle_ms": idle_ms,
            "rehearse_ms": cfg.trading.rehearse_ms,
            # one rehearsal's wall time: its CPU cost every rehearse_ms until a bar comes
            "rehearsal_ms_p50": round(float(np.percentile(rehearsals, 50)), 3)
            if rehearsals else None,
            "orders_per_bar": round(orders / n_bars, 1),
            "paper_fills_per_bar": round(paper / n_bars, 1),
            "bar_to_orders_ms_p50": round(float(np.percentile(ms, 50)), 3),
            "bar_to_orders_ms_p99": round(float(np.percentile(ms, 99)), 3),
            # on until the venue answered and its fills are booked (the sim's paper matching
            # engine here; the network and Bybit's engine live)
            "bar_to_fills_ms_p50": round(float(np.percentile(answered, 50)), 3),
            "bar_to_fills_ms_p99": round(float(np.percentile(answered, 99)), 3),
            "venue_ms_p50": round(float(np.percentile(venue, 50)), 3),
            # the same span in CPU time: on a shared machine, the wall figures above also
            # count the time other processes held the cores
            "bar_to_orders_cpu_ms_p50": round(float(np.percentile(decide_cpu, 50)), 3),
            "bar_to_orders_cpu_ms_p99": round(float(np.percentile(decide_cpu, 99)), 3),
            "record_ms_p50": round(float(np.percentile(rec, 50)), 3),
            # CPU time (all threads) of the whole on_batch: bar→orders and queuing the
            # bar's record; unlike the wall figures, other work on the machine does not inflate it
            "on_batch_cpu_ms_p50": round(float(np.percentile(on_batch_cpu, 50)), 3),
            "on_batch_cpu_ms_p99": round(float(np.percentile(on_batch_cpu, 99)), 3),
            "identity_gaps": gaps}  # books vs venue: must be 0


def run(symbols: int | None = None, busy: int | None = None, idle_ms: int | None = None
        ) -> dict[str, Any]:
    """Worst case (threshold 0: every book rebalances every symbol every bar), then the
    default threshold of 0.1; ``symbols``: trade that many (``--symbols N``); ``busy``: with
    that many training processes running meanwhile (``--busy N``, :mod:`benchmarks._busy`) at
    the job consumer's ``jobs.niceness`` (from the config file and environment, so
    ``METHTRADER__JOBS__NICENESS=0`` measures trainers at ``run``'s own priority). The
    1-minute load average before and after says how busy the (shared) machine was."""
    if busy is not None and not 0 <= busy <= 8:
        raise ConfigError(f"bench trading: --busy must be in [0, 8] training processes, got {busy}")
    if idle_ms is not None and not 0 <= idle_ms <= 1000:
        raise ConfigError(f"bench trading: --idle-ms must be in [0, 1000] ms between bars "
                          f"(300 bars twice: 1000 takes 10 minutes), got {idle_ms}")
    niceness = build_config(env=dict(os.environ)).jobs.niceness if busy else None
    trainers = [_start_trainer(niceness or 0) for _ in range(busy or 0)]
    try:
        load_start = round(os.getloadavg()[0], 2)
        worst = run_one(threshold=0.0, n_symbols=symbols, idle_ms=idle_ms or 0)
        usual = run_one(threshold=0.1, n_symbols=symbols, idle_ms=idle_ms or 0)
        cold = run_one(threshold=0.0, n_symbols=symbols, idle_ms=idle_ms or 0, rehearse_ms=0)
        load_end = round(os.getloadavg()[0], 2)
    finally:
        for p in trainers:
            p.terminate()
        for p in trainers:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    n = worst["symbols"]
    budget = BAR_BUDGET_MS[50] if n <= 50 else BAR_BUDGET_MS[150] if n <= 150 else None
    return {**worst, "budget_ms_p99": budget,
            **{f"default_{k}": v for k, v in usual.items()
               if k.startswith(("bar_", "orders", "record"))},
            **{f"unrehearsed_{k}": v for k, v in cold.items() if k.startswith("bar_to_orders")},
            "busy_training_processes": busy or 0, "busy_niceness": niceness,
            "load_average_1m_start": load_start, "load_average_1m_end": load_end}


def _start_trainer(niceness: int) -> subprocess.Popen:
    """A busy training process (:mod:`benchmarks._busy`), once it is training."""
    p = subprocess.Popen([sys.executable, "-m", "benchmarks._busy", "--niceness", str(niceness)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        p.kill()
        p.wait()
        raise RuntimeError("bench trading: a busy training process failed to start")
    return p


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else None))

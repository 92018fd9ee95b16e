"""``methtrader bench features``: feature set fs1 on the batch path and in the live book.

Budgets (issue 15): the batch path (training) computes all 15 features for >= 10M rows (candles)
per second on one thread; the live book updates every symbol of a closed bar in one vectorised
step, reported per bar for 50 and 150 symbols (p50/p99 in microseconds); and the two agree to
1e-12 (the bound the parity tests hold).

Workload: one-minute bars, minute-aligned open times, geometric random-walk closes with
lognormal volumes. Batch: BATCH_SYMBOLS symbols x BATCH_ROWS bars as one (bars, symbols, 7)
array, best and median of REPEATS runs, wall clock and the thread's CPU time (the box is shared,
so the CPU-time rate is the steadier figure; the 1-minute load average before and after the run
is reported with it). In turns with the engine, the textbook numpy implementation of the same
features (``_features_peer``) is timed: ``features_over_numpy_peer`` is the engine's rate over
its rate, the figure that holds from host to host, and ``features_numpy_peer_max_abs_diff``
how far the textbook's running sums stray from the engine. Live: each book is prefilled with PREFILL bars per
symbol, then LIVE_BARS bars are pushed, all symbols in one ``push`` per bar; the parity figure
is the largest difference between those rows and ``compute_features`` over the same candles.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np

from benchmarks._features_peer import peer
from models.features import FEATURE_NAMES, WARMUP_BARS, FeatureBook, compute_features

BATCH_SYMBOLS = 4
BATCH_ROWS = 262_144  # x 4 symbols = 1,048,576 rows
REPEATS = 5
LIVE_SYMBOLS = (50, 150)
PREFILL = 400
LIVE_BARS = 1_000
BUDGET_ROWS_PER_S = 10_000_000
PARITY_BOUND = 1e-12


def candles(bars: int, symbols: int, seed: int = 0) -> np.ndarray:
    """(bars, symbols, 7) one-minute candles."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, (bars, symbols)), axis=0))
    open_ = np.vstack([close[:1], close[:-1]])
    wiggle = np.abs(rng.normal(0.0, 5e-4, (2, bars, symbols)))
    high = np.maximum(open_, close) * (1.0 + wiggle[0])
    low = np.minimum(open_, close) * (1.0 - wiggle[1])
    volume = rng.lognormal(0.0, 1.0, (bars, symbols))
    times = np.broadcast_to((1_704_067_200_000.0 + 60_000.0 * np.arange(bars))[:, None],
                            (bars, symbols))
    return np.stack([times, open_, high, low, close, volume, volume * close], axis=-1)


def batch_rate(bars: np.ndarray, repeats: int = REPEATS) -> dict[str, Any]:
    """The engine's rows/s, and the textbook peer's (``_features_peer``) timed in turns with
    it, so that both see the same host."""
    compute_features(bars[:20_000])  # imports, scratch shapes
    peer(bars[:20_000])
    wall, cpu, peer_wall = [], [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.thread_time()
        compute_features(bars)
        wall.append(time.perf_counter() - start)
        cpu.append(time.thread_time() - start_cpu)
        start = time.perf_counter()
        peer(bars)
        peer_wall.append(time.perf_counter() - start)
    rows = bars.shape[0] * bars.shape[1]
    stray = np.abs(peer(bars) - compute_features(bars))
    return {"features_rows": rows,
            "features_rows_per_s": round(rows / min(wall)),
            "features_rows_per_s_median": round(rows / float(np.median(wall))),
            "features_rows_per_cpu_s": round(rows / min(cpu)),
            "features_budget_rows_per_s": BUDGET_ROWS_PER_S,
            "features_numpy_peer_rows_per_s": round(rows / min(peer_wall)),
            "features_over_numpy_peer": round(min(peer_wall) / min(wall), 2),
            "features_numpy_peer_max_abs_diff": float(np.nanmax(stray))}


def live_step(symbols: int, seed: int = 1) -> dict[str, Any]:
    bars = candles(PREFILL + LIVE_BARS, symbols, seed)
    names = [f"S{i:03d}" for i in range(symbols)]
    book = FeatureBook(names)
    for i, name in enumerate(names):
        book.prefill(name, bars[:PREFILL, i])
    served = np.empty((LIVE_BARS, symbols, len(FEATURE_NAMES)))
    timings = np.empty(LIVE_BARS)
    for t in range(LIVE_BARS):
        rows = bars[PREFILL + t]
        start = time.perf_counter()
        served[t], warm = book.push(names, rows)
        timings[t] = time.perf_counter() - start
    assert warm.all()
    want = compute_features(bars)[PREFILL:]
    diff = float(np.nanmax(np.abs(served - want)))
    if not np.array_equal(np.isnan(served), np.isnan(want)):
        diff = float("inf")
    us = timings * 1e6
    key = f"features_live_{symbols}"
    return {f"{key}_step_us_p50": round(float(np.percentile(us, 50)), 1),
            f"{key}_step_us_p99": round(float(np.percentile(us, 99)), 1),
            f"{key}_us_per_symbol_p50": round(float(np.percentile(us, 50)) / symbols, 2),
            f"{key}_parity_max_abs_diff": diff,
            f"{key}_book_bytes_per_symbol": book.nbytes // symbols}


def run() -> dict[str, Any]:
    load_start = round(os.getloadavg()[0], 2)
    figures = batch_rate(candles(BATCH_ROWS, BATCH_SYMBOLS))
    figures["load_average_1m_start"] = load_start
    parity = 0.0
    for symbols in LIVE_SYMBOLS:
        step = live_step(symbols)
        parity = max(parity, step[f"features_live_{symbols}_parity_max_abs_diff"])
        figures.update(step)
    figures.update({"features_parity_max_abs_diff": parity,
                    "features_parity_bound": PARITY_BOUND,
                    "features_warmup_bars": WARMUP_BARS,
                    "symbols": max(LIVE_SYMBOLS),
                    "load_average_1m_end": round(os.getloadavg()[0], 2)})
    return figures


if __name__ == "__main__":
    for name, value in run().items():
        print(f"{name:<44} {value}")
    sys.exit(0)

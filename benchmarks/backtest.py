"""``methtrader bench backtest``: candles per second of the vectorised backtester.

Budget (docs/architecture.md): >= 20M candles/s per core on the vectorised path. The workload is
the appliance's: 50 symbols x 90 days of 1-minute bars (6,480,000 candles), one thread. Both
memory layouts are measured (each symbol's series contiguous, "F", and bar-major, "C"), and the
slow reference loop is timed on a slice for comparison.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from models.backtest import bench_backtest, slow_reference_backtest

SYMBOLS = 50
BARS = 90 * 1440
BUDGET_CANDLES_PER_S = 20_000_000


def _slow_rate(candles: int = 200_000, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 1e-3, candles)))
    position = np.repeat(rng.integers(-1, 2, candles // 32 + 1).astype(np.float64), 32)[:candles]
    start = time.perf_counter()
    slow_reference_backtest(close, position)
    return candles / (time.perf_counter() - start)


def run() -> dict[str, Any]:
    contiguous = bench_backtest(n=SYMBOLS * BARS, symbols=SYMBOLS, layout="F")
    interleaved = bench_backtest(n=SYMBOLS * BARS, symbols=SYMBOLS, layout="C")
    slow = _slow_rate()
    figures: dict[str, Any] = {
        "backtest_candles": contiguous["candles"],
        "backtest_candles_per_s": round(contiguous["candles_per_s"]),
        "backtest_candles_per_s_median": round(contiguous["candles_per_s_median"]),
        "backtest_candles_per_s_bar_major": round(interleaved["candles_per_s"]),
        "backtest_slow_reference_candles_per_s": round(slow),
        "backtest_speedup_vs_reference": round(contiguous["candles_per_s"] / slow, 1),
        "backtest_budget_candles_per_s": BUDGET_CANDLES_PER_S,
    }
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<40} {value:,}")
    sys.exit(0)

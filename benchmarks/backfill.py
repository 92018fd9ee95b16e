"""``methtrader bench backfill``: history from the fake Bybit server into the lake.

The fake server runs as its own process (as the venue would be), with Bybit's per-IP limit of
600 requests per 5 s; the real adapter and the real backfill code fill a temporary lake with
``pairs`` × ``days`` of 1m candles, several pairs at a time as the datasets service does.

Figures: wall time against the rate-limit floor (the fewest 1000-candle pages the data needs,
at 120 requests/s), requests actually made, lake ingest (rows per second of write time), and
peak RSS. The sim universe has 24 pairs; 50 pairs take 50/24 of the time at the same ratio.
The CPU per page of the client and of the fake server (``cores_needed_at_limit``) says whether
this machine can go at the limit at all: both share its cores.
"""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from appliance.backfill import backfill_symbol
from appliance.exchange.bybit import BybitExchange, BybitSettings
from appliance.exchange.ratelimit import RateLimiter
from appliance.exchange.simmarket import DAY_MS, SimMarket
from benchmarks._proctree import sample_tree
from data.lake import Lake

IP_LIMIT = 600  # requests per 5 s, Bybit's per-IP limit


class TimedLake(Lake):
    """The lake, timing its writes."""

    write_s = 0.0
    rows = 0

    def write_days(self, symbol, days):
        t0 = time.perf_counter()
        out = super().write_days(symbol, days)
        self.write_s += time.perf_counter() - t0
        self.rows += sum(len(d.rows) for d in days)
        return out


def ingest_rate(source: Lake, symbols: list[str], target: Path) -> float:
    """Rows per second written into a fresh lake, in the backfill's 25-day runs, measured
    alone (during the backfill the writer shares the cores with the HTTP client)."""
    from appliance.backfill import CHUNK_DAYS, split_days

    lake = TimedLake(target)
    for symbol in symbols:
        rows = source.read("1m", symbol)
        days = sorted({int(t) - int(t) % DAY_MS for t in rows[::1440, 0]} |
                      {int(rows[-1, 0]) - int(rows[-1, 0]) % DAY_MS})
        end = int(rows[-1, 0]) + 60_000
        for i in range(0, len(days), CHUNK_DAYS):
            lake.write_days(symbol, split_days(rows, days[i:i + CHUNK_DAYS], end))
    return lake.rows / lake.write_s


def _start_server(ip_limit: int, pairs: int = 24, warm_days: int = 0
                  ) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "fake-bybit", "--port", "0",
                             "--ip-limit", str(ip_limit), "--pairs", str(pairs),
                             "--warm-days", str(warm_days)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("fake-bybit listening on "):
        proc.kill()
        raise RuntimeError(f"fake-bybit did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1]


async def _backfill(url: str, lake: TimedLake, symbols: list[str], days: int,
                    concurrency: int, ip_limit: int) -> tuple[float, int]:
    ex = BybitExchange(BybitSettings(base_url=url, paper=True),
                       limiter=RateLimiter(capacity=ip_limit))
    end = int(time.time() * 1000) // 60_000 * 60_000
    start = end - days * DAY_MS
    limiter = trio.CapacityLimiter(concurrency)

    async def one(symbol: str) -> None:
        async with limiter:
            await backfill_symbol(ex, lake, symbol, start, end)

    t0 = time.perf_counter()
    try:
        async with trio.open_nursery() as nursery:
            for s in symbols:
                nursery.start_soon(one, s)
    finally:
        await ex.aclose()
    return time.perf_counter() - t0, sum(ex.limiter.granted.values())


def run_one(pairs: int = 24, days: int = 90, concurrency: int = 4,
            ip_limit: int = IP_LIMIT) -> dict[str, Any]:
    """``ip_limit`` below 600 shows the pacing where the limit, not this machine's two cores
    (shared by the fake server and the client), is what binds."""
    universe = max(24, pairs)
    symbols = SimMarket(7, pairs=universe).symbols()[:pairs]
    # the server computes the asked days before it listens: on this machine its CPU competes
    # with the client's for two cores (a remote venue's would not)
    proc, url = _start_server(ip_limit, universe, days + 1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            lake = TimedLake(Path(tmp))
            server0, client0 = sample_tree(proc.pid).cpu_s, time.process_time()
            wall, requests = trio.run(_backfill, url, lake, symbols, days, concurrency,
                                      ip_limit)
            server_cpu = sample_tree(proc.pid).cpu_s - server0
            client_cpu = time.process_time() - client0
            rows = lake.rows
            pages_needed = sum(math.ceil(len(lake.read("1m", s)) / 1000) for s in symbols)
            ingest = ingest_rate(lake, symbols, Path(tmp) / "again")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    floor = pages_needed / (ip_limit / 5)
    return {
        "pairs": len(symbols), "days": days, "rows": rows, "ip_limit_per_5s": ip_limit,
        "requests": requests, "pages_needed": pages_needed,
        "wall_s": round(wall, 2), "rate_limit_floor_s": round(floor, 2),
        "wall_over_floor": round(wall / floor, 3), "budget_wall_over_floor": 1.1,
        "requests_per_s": round(requests / wall, 1),
        # CPU per page: at the full limit (120 pages/s) client + server need this many cores
        "client_cpu_ms_per_page": round(1000 * client_cpu / requests, 2),
        "server_cpu_ms_per_page": round(1000 * server_cpu / requests, 2),
        "cores_needed_at_limit": round((client_cpu + server_cpu) / requests * ip_limit / 5, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "lake_ingest_rows_per_s": int(ingest),
        "lake_write_rows_per_s_during_backfill": int(rows / lake.write_s),
        "budget_lake_ingest_rows_per_s": 2_000_000,
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "budget_rss_mb": 1024,
    }


def run() -> dict[str, Any]:
    """Bybit's limit on this machine (CPU-bound here), then a quarter of it (limit-bound)."""
    full = run_one()
    paced = run_one(pairs=6, ip_limit=150)
    return {**full, **{f"at_150_per_5s_{k}": v for k, v in paced.items()
                       if k in ("requests", "wall_s", "rate_limit_floor_s", "wall_over_floor")}}


if __name__ == "__main__":
    print(run_one(pairs=int(sys.argv[1]) if len(sys.argv) > 1 else 24,
                  ip_limit=int(sys.argv[2]) if len(sys.argv) > 2 else IP_LIMIT))

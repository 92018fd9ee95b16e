"""``methtrader bench e2e --symbols N [--minutes M]``: the whole appliance at N traded symbols.

It runs ``methtrader run`` as a real subprocess on the sim market, in its own temporary state
dir prepared by :mod:`benchmarks._e2e_setup` (N symbols above the bar; one prod and two shadow
models registered before the start, so the first closed bar goes to orders), for M minutes of
market time at ``--speed`` :data:`SPEED`, and reports:

* ``cpu_s`` and ``peak_rss_bytes`` (``peak_pss_bytes``) of the whole process tree: ``run``, the
  huey consumer (its own session), its workers and their job processes, sampled from /proc every
  :data:`SAMPLE_S` (:mod:`benchmarks._proctree`); CPU also from ``wait4``'s rusage at the end;
* ``bar_to_orders_ms_p99``/``_p50`` from the appliance's own ``trade_latency_ms`` histogram
  (bar close → each order sent) on its Prometheus endpoint, interpolated within the bucket as
  Prometheus' ``histogram_quantile`` does (buckets 0.1 … 10,000 ms: a coarse figure);
* ``candle_lag_s`` (``feed_lag_seconds``, the slowest symbol; the last value and the worst one
  after the first bar), ``training_backlog`` (jobs queued in huey at the end) and
  ``training_running``.

It finishes within :data:`BUDGET_S` (under 8 minutes): ``run --until`` stops by itself after M
market minutes; if it has not when the budget less the time to stop it is spent, it gets SIGTERM, then SIGKILL for its process group, and any process of
its tree still alive after that is killed by pid (only if it is the same process: its start
time is checked), so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from appliance.config import ConfigError
from benchmarks._e2e_setup import START_S, choose_universe, write_state
from benchmarks._proctree import TreePeak, sample_tree

SPEED = 120.0
DEFAULT_MINUTES = 240
MINUTES_RANGE = (15, 1440)  # three 5m bars at least; a day at most (the run is cut at 7 min)
SAMPLE_S = 0.5
SCRAPE_S = 2.0
WARMUP_MARKET_S = 3600.0  # the start-up backfill and first training jobs share the loop then
BUDGET_S = 470.0  # the whole bench, preparation and stop included: under 8 minutes
STOP_GRACE_S = 20.0
STOP_RESERVE_S = STOP_GRACE_S + 10.0 + 10.0  # SIGTERM grace, then the group, then leftovers
RSS_BUDGET_BYTES = int(1.5 * 2**30)  # at 150 symbols
RSS_PER_SYMBOL_BUDGET_BYTES = 4 * 2**20
P99_BUDGET_MS = {50: 2.0, 150: 6.0}


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' estimate of quantile ``q`` from cumulative buckets (upper bound, count),
    linear within the bucket it falls in; None with no observations. Past the last finite
    bound it answers that bound."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def since(now: list[tuple[float, float]], before: list[tuple[float, float]] | None
          ) -> list[tuple[float, float]]:
    """Cumulative buckets of the observations made after ``before`` was read (none when
    ``before`` is None: the run never got past its warm-up)."""
    if before is None:
        return []
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in now]


def scrape(port: int) -> dict[str, Any]:
    """The figures this bench reads from the appliance's Prometheus endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        text = resp.read().decode()
    out: dict[str, Any] = {"buckets": [], "orders": 0.0}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "trade_latency_ms_bucket":
                out["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name == "trade_latency_ms_count":
                out["orders_timed"] = s.value
            elif s.name in ("feed_lag_seconds", "market_time_seconds", "pairs_total"):
                out[s.name] = s.value
            elif s.name == "models_trained_total":
                out["models_trained"] = s.value
            elif s.name == "orders_total":
                out["orders"] += s.value
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _reap(proc: subprocess.Popen, timeout: float) -> tuple[int | None, float]:
    """Wait for ``proc`` (at most ``timeout``); its exit status and the CPU seconds of it and
    every descendant it reaped (rusage), 0.0 while it still runs."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() >= deadline:
            return None, 0.0
        time.sleep(0.1)


class Sampler:
    """Samples the tree under ``root`` and scrapes the metrics endpoint on a fixed cadence."""

    def __init__(self, root: int, port: int) -> None:
        self.root, self.port = root, port
        self.peak = TreePeak()
        self.seen: dict[int, int | None] = {}  # pid → start ticks
        self.metrics: dict[str, Any] = {}
        self.max_lag = 0.0
        self.warm_buckets: list[tuple[float, float]] | None = None  # at START_S + warm-up
        self._next_scrape = 0.0

    def sample(self) -> None:
        usage = sample_tree(self.root)
        self.peak.add(usage)
        for pid in usage.pids:
            self.seen.setdefault(pid, _start_ticks(pid))
        if time.monotonic() >= self._next_scrape:
            self._next_scrape = time.monotonic() + SCRAPE_S
            with contextlib.suppress(OSError, ValueError):
                m = scrape(self.port)
                self.metrics = m
                if (self.warm_buckets is None
                        and m.get("market_time_seconds", 0.0) >= START_S + WARMUP_MARKET_S):
                    self.warm_buckets = m["buckets"]
                if m.get("orders_timed"):  # trading: the lag from then on is the steady one
                    self.max_lag = max(self.max_lag, m.get("feed_lag_seconds", 0.0))

    def leftovers(self) -> list[int]:
        """Processes of the tree still alive (same pid and start time as when seen)."""
        return [pid for pid, start in self.seen.items()
                if start is not None and _start_ticks(pid) == start]


def _stop(proc: subprocess.Popen, sampler: Sampler) -> tuple[int | None, float]:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    code, cpu = _reap(proc, STOP_GRACE_S)
    if code is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        code, cpu = _reap(proc, 10.0)
    return code, cpu


def _kill_leftovers(sampler: Sampler) -> int:
    deadline = time.monotonic() + 10.0
    while sampler.leftovers() and time.monotonic() < deadline:
        time.sleep(0.2)  # the consumer notices its parent is gone within a second
    left = sampler.leftovers()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(left)


def training_queue(state: Path) -> tuple[int, int]:
    """(jobs queued in huey, jobs running) of a state dir."""
    from appliance.bus import Bus
    from appliance.jobs import RUNNING_PREFIX, make_huey
    from appliance.paths import StatePaths

    pending = make_huey(state).pending_count()
    with Bus(StatePaths(state).bus) as bus:
        running = sum(1 for k in bus.cache.iterkeys() if str(k).startswith(RUNNING_PREFIX))
    return pending, running


def run_e2e(symbols: int, minutes: int = DEFAULT_MINUTES, speed: float = SPEED
            ) -> dict[str, Any]:
    t_prep = time.monotonic()
    universe = choose_universe(symbols, int(START_S * 1000))
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        state = Path(tmp) / "state"
        config = write_state(state, universe, START_S)
        port = _free_port()
        err = open(Path(tmp) / "run.err", "w")
        prep_s = time.monotonic() - t_prep
        t0 = time.monotonic()
        run_limit_s = BUDGET_S - prep_s - STOP_RESERVE_S
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--state-dir", str(state),
             "--config", str(config), "--speed", str(speed), "--until", f"{minutes}m",
             "--metrics-port", str(port), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        sampler = Sampler(proc.pid, port)
        code = None
        cpu_rusage = 0.0
        try:
            while time.monotonic() - t0 < run_limit_s:
                sampler.sample()
                code, cpu_rusage = _reap(proc, SAMPLE_S)
                if code is not None:
                    break
            stopped_by = "until" if code is not None else "wall_limit"
            if code is None:
                # the endpoint goes with the process: read the latest figures first
                with contextlib.suppress(OSError, ValueError):
                    sampler.metrics = scrape(port)
                code, cpu_rusage = _stop(proc, sampler)
        finally:
            if proc.returncode is None:
                code, cpu_rusage = _stop(proc, sampler)
            killed = _kill_leftovers(sampler)
            err.close()
        wall_s = time.monotonic() - t0
        backlog, running = training_queue(state)
        tail = (Path(tmp) / "run.err").read_text()[-2000:] if code not in (0, None) else ""
    m = sampler.metrics
    market_min = ((m.get("market_time_seconds", START_S) - START_S) / 60.0)
    n = len(universe.symbols)
    p99_budget = P99_BUDGET_MS[50] if n <= 50 else P99_BUDGET_MS[150] if n <= 150 else None
    figures: dict[str, Any] = {
        "symbols": n, "sim_pairs": universe.pairs,
        "min_turnover_usd": round(universe.min_turnover_usd),
        "market_minutes": round(market_min, 1), "speed": speed,
        # below ``speed`` when market time stood still for the feed (or bootstrap) to catch up
        "effective_speed": round(market_min * 60 / wall_s, 1) if wall_s > 0 else None,
        "wall_s": round(wall_s, 1), "prepare_s": round(prep_s, 1), "stopped_by": stopped_by,
        "exit_code": code,
        "cpu_s": round(max(sampler.peak.cpu_s, cpu_rusage), 1),
        "peak_rss_bytes": sampler.peak.rss_bytes,
        "peak_pss_bytes": sampler.peak.pss_bytes,
        "peak_rss_mb": round(sampler.peak.rss_bytes / 2**20, 1),
        "peak_pss_mb": round(sampler.peak.pss_bytes / 2**20, 1),
        "peak_run_process_rss_mb": round(sampler.peak.root_rss_bytes / 2**20, 1),
        "median_rss_mb": round(sampler.peak.rss_quantile(0.5) / 2**20, 1),
        "rss_budget_mb_at_150": RSS_BUDGET_BYTES // 2**20,
        "rss_budget_mb_per_added_symbol": RSS_PER_SYMBOL_BUDGET_BYTES // 2**20,
        "processes_max": sampler.peak.processes, "samples": sampler.peak.samples,
        "orders_timed": int(m.get("orders_timed", 0)),
        "bar_to_orders_ms_p50": _round(histogram_quantile(0.5, m.get("buckets", []))),
        "bar_to_orders_ms_p99": _round(histogram_quantile(0.99, m.get("buckets", []))),
        "bar_to_orders_budget_ms_p99": p99_budget,
        # the same after the first market hour (start-up backfill and bootstrap training)
        "bar_to_orders_ms_p99_after_warmup": _round(histogram_quantile(
            0.99, since(m.get("buckets", []), sampler.warm_buckets))),
        "candle_lag_s": m.get("feed_lag_seconds"),
        "candle_lag_s_max": sampler.max_lag,
        "training_backlog": backlog, "training_running": running,
        "models_trained": int(m.get("models_trained", 0)),
        "leftover_processes_killed": killed,
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if tail:
        figures["run_stderr_tail"] = tail
    return figures


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def run(symbols: int | None = None, minutes: int | None = None) -> dict[str, Any]:
    lo, hi = MINUTES_RANGE
    if minutes is not None and not lo <= minutes <= hi:
        raise ConfigError(f"bench e2e: --minutes must be in [{lo}, {hi}] market minutes "
                          f"(at least three 5m bars), got {minutes}")
    return run_e2e(24 if symbols is None else symbols,
                   DEFAULT_MINUTES if minutes is None else minutes)


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else None))

"""``methtrader bench supervisor``: recovery time, idle CPU and memory of the appliance.

* MTTR: a service that crashes is running again after its first backoff; measured on the real
  supervisor with trio's real clock over several crashes.
* Idle CPU and RSS: ``methtrader run`` as a subprocess on the sim market at speed 1 for a
  measured window, sampling /proc for CPU time and resident memory.
"""

from __future__ import annotations

import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from appliance.config import SupervisorConfig
from appliance.supervision import Supervisor


async def _mttr(crashes: int) -> list[float]:
    cfg = SupervisorConfig(max_crashes=crashes + 10, failure_window_s=1.0)
    sup = Supervisor(cfg)
    recovered: list[float] = []
    n = 0

    async def flaky() -> None:
        nonlocal n
        n += 1
        if sup.states["flaky"].recovered_in_s is not None and n > 1:
            recovered.append(sup.states["flaky"].recovered_in_s)
        if n <= crashes:
            raise RuntimeError("boom")

    await sup.supervise("flaky", flaky)
    return recovered


def _proc_stats(pid: int) -> tuple[float, int]:
    with open(f"/proc/{pid}/stat") as fh:
        parts = fh.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(parts[11]) + int(parts[12])) / ticks
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) * 1024
    return cpu, rss


def idle_appliance(seconds: float = 20.0, warmup: float = 8.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--state-dir", tmp, "--speed", "1",
             "--metrics-port", "0", "--for", f"{seconds + warmup + 5}s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(warmup)
            cpu0, _ = _proc_stats(proc.pid)
            t0 = time.monotonic()
            rss_peak = 0
            while time.monotonic() - t0 < seconds:
                time.sleep(1.0)
                rss_peak = max(rss_peak, _proc_stats(proc.pid)[1])
            cpu1, _ = _proc_stats(proc.pid)
            elapsed = time.monotonic() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {"idle_cpu_percent_of_core": round(100 * (cpu1 - cpu0) / elapsed, 2),
            "rss_mb_peak": round(rss_peak / 2**20, 1)}


def run() -> dict[str, Any]:
    quiet = logging.getLogger("methtrader")
    quiet.propagate = False
    quiet.addHandler(logging.NullHandler())
    recovered = trio.run(_mttr, 5)
    figures: dict[str, Any] = {
        "mttr_crashed_service_s_median": round(statistics.median(recovered), 3),
        "mttr_crashed_service_s_max": round(max(recovered), 3),
        "mttr_budget_s": 2.0,
    }
    figures.update(idle_appliance())
    figures["idle_cpu_budget_percent"] = 5.0
    figures["rss_budget_mb"] = 300
    return figures


if __name__ == "__main__":
    print(run())
    sys.exit(0)

"""What machine a bench ran on, printed with its figures (``machine``).

The same code gives different figures on different hosts: on this project's shared 2-core VM
`bench features` read 10.2-10.5 M rows/s one day and 8.2-8.5 M the next, on a host with another
processor behind the same name, while `bench trading` got faster; on a third night both were
2-3 times slower, for the code of that day and of the day before alike. A figure without its
machine cannot be compared with another, and a model name does not say how fast the machine
was that hour: :func:`python_speed` times a fixed loop in the same run.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

SIMD_FLAGS = ("avx512f", "avx2", "fma", "neon", "asimd")
"""The vector extensions named, widest first (numpy, BLAS and onnxruntime pick kernels by them)."""


def describe(cpuinfo: str, cpus: int, versions: dict[str, str]) -> str:
    """One line: the processor's model name, the CPUs this process may use, the widest vector
    extension among ``SIMD_FLAGS`` that the processor has, and the versions given."""
    model, flags = "unknown processor", set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "cpu model", "hardware") and model == "unknown processor":
            model = value.strip() or model
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    simd = next((f for f in SIMD_FLAGS if f in flags), "no listed SIMD")
    parts = [model, f"{cpus} CPUs", simd, *(f"{k} {v}" for k, v in versions.items())]
    return "; ".join(parts)


def machine() -> str:
    """:func:`describe` for this process: /proc/cpuinfo (Linux), the CPUs it may run on,
    Python and numpy."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        cpuinfo = f"model name: {platform.processor() or platform.machine()}"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return describe(cpuinfo, int(cpus or 1), {"Python": platform.python_version(),
                                              "numpy": np.__version__})


def python_speed(iterations: int = 2_000_000, repeats: int = 3) -> float:
    """Millions of iterations per second of a fixed pure-Python loop (an add and a compare
    each), best of ``repeats``: the interpreter's speed on this host now, which the latency
    benches (bar → orders) follow."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        total = 0
        for i in range(iterations):
            total += i
        best = min(best, time.perf_counter() - start)
    return round(iterations / best / 1e6, 2)

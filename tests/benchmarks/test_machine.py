"""Every bench prints the machine it ran on: the processor, the CPUs, its widest vector
extension and the versions, parsed from /proc/cpuinfo."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks._machine import describe, machine, python_speed

XEON = """processor	: 0
model name	: Intel(R) Xeon(R) Processor
flags		: fpu vme sse sse2 avx avx2 fma avx512f avx512dq
processor	: 1
model name	: Intel(R) Xeon(R) Processor
flags		: fpu vme sse sse2 avx avx2 fma avx512f avx512dq
"""
OLD_XEON = "model name\t: Intel(R) Xeon(R) CPU E5-2680 v3\nflags\t\t: sse2 avx avx2 fma\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes\nCPU part\t: 0xd0c\n"


def test_the_widest_vector_extension_and_the_model_are_named():
    assert describe(XEON, 2, {"Python": "3.11.14"}) == (
        "Intel(R) Xeon(R) Processor; 2 CPUs; avx512f; Python 3.11.14")
    assert describe(OLD_XEON, 4, {}) == "Intel(R) Xeon(R) CPU E5-2680 v3; 4 CPUs; avx2"
    assert describe(ARM, 8, {}) == "unknown processor; 8 CPUs; asimd"
    assert describe("", 1, {}) == "unknown processor; 1 CPUs; no listed SIMD"


def test_this_machine_is_described_and_a_bench_prints_it():
    here = machine()
    assert "CPUs" in here and f"Python {sys.version.split()[0]}" in here
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "bench", "backtest", "--json"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    figures = json.loads(out)
    assert figures["machine"] == here
    assert figures["host_python_m_loops_per_s"] > 0  # the host's speed that hour, beside it


def test_the_python_yardstick_is_a_rate_in_millions_a_second():
    speed = python_speed(iterations=100_000, repeats=1)
    assert isinstance(speed, float) and speed > 0 and speed == round(speed, 2)

"""``methtrader bench trading``: what it refuses before anything starts (the figures
themselves are printed, never asserted)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.config import ConfigError
from benchmarks.trading import run


@pytest.mark.parametrize("idle_ms", [-1, 1001])
def test_an_idle_time_outside_its_range_is_refused_before_anything_starts(idle_ms):
    with pytest.raises(ConfigError, match=r"--idle-ms must be in \[0, 1000\]"):
        run(idle_ms=idle_ms)


@pytest.mark.timeout(120)
def test_the_idle_option_is_refused_by_a_suite_that_does_not_take_it():
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "bench", "features",
                          "--idle-ms", "5"], capture_output=True, text=True, timeout=100)
    assert out.returncode != 0
    assert "bench features takes no --idle-ms" in out.stderr

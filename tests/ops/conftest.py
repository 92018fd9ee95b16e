"""What a short `methtrader run` really exports, scraped once for the ops tests."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import start_run, stderr_of

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"


@pytest.fixture(scope="module")
def scraped(tmp_path_factory) -> str:
    """The text of /metrics from a real `run` in sim, once its services have beaten."""
    state = tmp_path_factory.mktemp("ops") / "state"
    port = free_port()
    proc = start_run(state, "--metrics-port", str(port), "--for", "120s")
    try:
        deadline = time.monotonic() + 90
        text = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                text = ""
            if 'service_up{service="trading"}' in text and "heartbeat_age_seconds{" in text:
                break
            time.sleep(0.5)
        assert text, f"no metrics from run:\n{stderr_of(proc)[-3000:]}"
        return text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def families(text: str) -> set[str]:
    """Metric family names and the series names Prometheus derives from them."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind == "counter":
                names |= {f"{name}_total", f"{name}_created"}
            elif kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"}
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return names

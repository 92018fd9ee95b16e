"""Layer 3 end to end: ``methtrader run`` on the sim market backfills, groups the pairs and
registers a candidate model for every group, trained by the real huey consumer."""

from __future__ import annotations

import json
import signal

import pytest

from appliance.services.training import groups_from_lake
from data.lake import Lake
from models.groups import GroupingRules
from tests.e2e.conftest import clock_at, methtrader, status_json, stderr_of
from tests.e2e.test_run import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SMALL = {"METHTRADER__DATASETS__DAYS": "3", "METHTRADER__TRAINING__KINDS": "rf"}


def models_of(state) -> list[dict]:
    return json.loads(methtrader("models", "--json", "--state-dir", str(state)).stdout)


def test_run_ends_with_a_candidate_for_every_group(tmp_path, run_proc):
    state = clock_at(tmp_path / "state", 23)  # the same history whatever the time of day
    proc = run_proc(state, "--speed", "60", "--metrics-port", "0", env=SMALL)

    def every_group_served():
        st = status_json(state)
        if st["models"]["candidate"] == 0:
            return False
        tradable = st["symbols"]
        if not set(tradable) <= set(Lake(state / "lake").symbols("5m")):
            return False  # still backfilling
        groups = groups_from_lake(state / "lake", tradable, GroupingRules())
        served = {m["group"] for m in models_of(state)}
        return len(tradable) >= 10 and groups and {g.name for g in groups} <= served

    wait_for(every_group_served, 240, "a candidate for every group")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, stderr_of(proc)[-3000:]

    models = models_of(state)
    # candidates, some already shadowing (the shadow desk starts the best of each group)
    assert all(m["mode"] in ("candidate", "shadow") and m["kind"] == "rf" for m in models)
    for m in models:
        assert m["onnx_path"].startswith("/") and len(m["onnx_sha256"]) == 64
        assert {"sharpe", "trades", "max_drawdown", "psr"} <= set(m["metrics"])
        assert m["timeframe"] == "5m" and m["symbols"]
    st = status_json(state)
    assert st["models"]["candidate"] + st["models"]["shadow"] == len(models)
    assert not any(s["state"] == "failed" for s in st["services"].values())

"""Every chaos experiment, run for real (``methtrader run`` and ``fake-bybit`` as subprocesses)
with short bounds: each hypothesis holds and a recovery time is measured."""

from __future__ import annotations

import json

import pytest

from appliance.services.heartbeat import incidents_snapshot
from appliance.store import Store
from chaos.experiments import EXPERIMENTS
from chaos.harness import Harness
from tests.e2e.conftest import methtrader

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


@pytest.fixture
def harness(tmp_path):
    with Harness(tmp_path / "chaos") as h:
        yield h


def assert_held(result) -> None:
    assert result.held, (result.failures, result.details)
    assert result.mttr_s is not None and result.mttr_s > 0
    assert result.lost == 0


@pytest.mark.parametrize("seed", range(5))
def test_process_kill_loses_and_duplicates_nothing(harness, seed):
    result = EXPERIMENTS["process-kill"](harness, seed, kill_within_s=5.0)
    assert_held(result)
    rows = result.details["rows_at_kill"]
    assert rows["candles"] > 1000  # there was something to lose
    assert result.details["missing"] == {} and result.details["duplicated"] == {}


def test_a_kill_with_open_positions_reconciles_and_keeps_the_account_identity(harness):
    result = EXPERIMENTS["process-kill-positions"](harness, 0, kill_within_s=3.0)
    assert_held(result)
    d = result.details
    assert d["held_at_kill"]  # the venue held positions when run was killed
    assert d["books"] == d["venue"] and d["reconciliation"] == []
    assert d["venue_orders"] > 0 and d["unbooked"] == []
    assert d["account_rows_after"] > 0 and d["identity_breaks"] == []
    assert d["missing"] == {} and d["duplicated"] == {}


def test_a_crash_in_each_service_is_restarted_and_data_flows_again(harness):
    result = EXPERIMENTS["service-crash"](harness, 0)
    assert_held(result)
    per = result.details["services"]
    assert set(per) == {"feed", "trading", "training", "shadow", "risk"}
    assert all(p["supervisor_recovered_in_s"] is not None for p in per.values())


def test_an_exchange_outage_degrades_then_recovers_without_a_gap(harness):
    result = EXPERIMENTS["exchange-outage"](harness, 0, fault_s=6.0)
    assert_held(result)
    assert result.details["refused_calls"] > 0  # the fault did reach the appliance
    assert result.details["gaps"] == {}


def test_a_rate_limit_storm_throttles_discovery_and_the_backfill_resumes(harness):
    result = EXPERIMENTS["rate-limit-storm"](harness, 0, fault_s=12.0)
    assert_held(result)
    d = result.details
    assert d["refused_calls"] > 0  # the storm did reach the appliance
    assert d["backfill_in_flight"] > 0  # and met a backfill, which then completed
    assert d["discovery_requests"] <= d["discovery_allowed"]
    assert {"throttled": True, "reason": "rate_limited"}.items() <= d["throttled_events"][0].items()
    assert d["gaps"] == {} and d["duplicated"] == {} and d["dataset_holes"] == {}


@pytest.mark.parametrize("name, fault_s", [("exchange-drop", 12.0), ("exchange-stall", 28.0)])
def test_a_dropped_or_stalled_venue_degrades_the_feed_and_every_minute_is_stored(harness, name,
                                                                               fault_s):
    """The stall outlasts the adapter's bound on one call (2 timeouts of 10 s), so the feed
    must have been degraded, not left hanging, before the venue came back."""
    result = EXPERIMENTS[name](harness, 0, fault_s=fault_s)
    assert_held(result)
    assert result.mttr_s <= 10.0  # data flows within 10 s of the lift
    assert result.details["refused_calls"] > 0
    assert "feed" in result.details["degraded"]
    assert "feed" in result.details["outage_incidents"]
    assert result.details["gaps"] == {}


def test_chaos_cli_reports_json_and_records_incidents_with_mttr(tmp_path):
    state = tmp_path / "appliance"
    methtrader("run", "--state-dir", str(state), "--for", "3s", "--metrics-port", "0",
               timeout=90)
    out = methtrader("chaos", "run", "service-crash", "--json", "--state-dir", str(state),
                     timeout=200)
    rows = json.loads(out.stdout)
    assert [set(r) for r in rows] == [{"experiment", "held", "mttr_s", "lost", "lanes"}]
    assert rows[0]["experiment"] == "service-crash" and rows[0]["held"] is True
    assert rows[0]["lanes"] == 3  # the default: three experiments at once
    store = Store(state / "methtrader.duckdb", read_only=True)
    try:
        chaos = [i for i in incidents_snapshot(store) if i["kind"] == "chaos"]
    finally:
        store.close()
    assert len(chaos) == 1 and chaos[0]["mttr_s"] == pytest.approx(rows[0]["mttr_s"], abs=1e-3)


def test_chaos_cli_refuses_an_unknown_experiment():
    out = methtrader("chaos", "run", "no-such-thing", check=False)
    assert out.returncode == 2 and "unknown experiment" in out.stderr
    listed = methtrader("chaos", "list").stdout
    for name in ("process-kill", "process-kill-positions", "exchange-drop", "exchange-stall",
                 "disk-full", "rate-limit-storm"):
        assert name in listed
    lines = listed.splitlines()
    # one column for the hypotheses and what they inject, however long a name is
    starts = {len(line) - len(line.split(" ", 1)[1].lstrip()) for line in lines[0::2]}
    starts |= {len(line) - len(line.lstrip()) for line in lines[1::2]}
    assert len(starts) == 1


def test_a_deleted_bus_is_rebuilt_with_its_switches_and_a_kill_holds(harness):
    result = EXPERIMENTS["bus-loss"](harness, 0)
    assert_held(result)
    assert result.details["switches off"]["switches"] == {"maintenance_mode": False,
                                                         "deploys_frozen": False}
    assert result.details["after kill"]["switches"]["maintenance_mode"] is True
    assert result.details["accepted_after_kill"] == 0


def test_refused_store_writes_are_retried_and_nothing_is_half_written(harness):
    result = EXPERIMENTS["store-fault"](harness, 0)
    assert_held(result)
    assert result.details["restarts"] > 0  # the faults did reach the services
    assert len(result.details["rounds"]) == 3
    assert result.details["orphans"] == {} and result.details["duplicated"] == {}


def test_a_full_disk_degrades_says_so_once_and_recovers_with_nothing_lost(harness):
    result = EXPERIMENTS["disk-full"](harness, 0)
    assert_held(result)
    d = result.details
    assert d["refused_writes"].get("duckdb", 0) > 0  # the fault did reach the appliance
    assert d["incidents"] == {"outage": 1, "recovered": 1}
    assert {"feed", "trading"} <= set(d["degraded"])
    assert "only reducing" in d["trading_reason"]
    assert d["gaps"] == {} and d["duplicated"] == {} and d["orphans"] == {}


def test_a_killed_worker_s_training_job_runs_again_and_registers_once(harness):
    result = EXPERIMENTS["worker-kill"](harness, 0)
    assert_held(result)
    d = result.details
    assert (d["training_runs"], d["ml_models"], d["registered_events"]) == (1, 1, 1)
    assert any("train" in r["jobs"] for r in d["requeued"])

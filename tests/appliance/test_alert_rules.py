"""Which bus events page a person: kill switch changes with who and why, crashes folded per
service, incidents, jobs out of attempts — and nothing another service already sent."""

from __future__ import annotations

from appliance.alert_rules import alert_for
from appliance.contracts import Event


def ev(event_kind: str, /, **data) -> dict:
    return {"seq": 1, "kind": event_kind, "data": data}


def test_a_kill_switch_change_names_who_and_why_and_is_never_folded():
    on = alert_for(ev(Event.SWITCH, name="maintenance_mode", value=True, actor="alice",
                      reason="venue looks wrong"))
    off = alert_for(ev(Event.SWITCH, name="maintenance_mode", value=False, actor="bob",
                       reason=""))
    assert on.kind == off.kind == "kill_switch"
    assert on.text == "kill switch ON: no new orders (by alice: venue looks wrong)"
    assert off.text == "kill switch OFF: trading resumes (by bob: no reason given)"
    assert on.key is None and off.key is None


def test_the_risk_services_own_freezes_are_not_sent_twice_but_an_operators_are():
    assert alert_for(ev(Event.SWITCH, name="deploys_frozen", value=True, actor="risk",
                        reason="7d drawdown 8.1%")) is None
    unfreeze = alert_for(ev(Event.SWITCH, name="deploys_frozen", value=False, actor="carol",
                            reason="reviewed"))
    assert unfreeze.kind == "deploys_unfrozen" and "carol" in unfreeze.text


def test_crashes_fold_per_service_and_a_failure_is_its_own_alert():
    a = alert_for(ev(Event.INCIDENT, service="feed", kind="crash", message="boom"))
    b = alert_for(ev(Event.INCIDENT, service="trading", kind="crash", message="boom"))
    assert (a.kind, a.key) == ("service_crash", "feed") and b.key == "trading"
    failed = alert_for(ev(Event.INCIDENT, service="feed", kind="failed", message="5 in 300 s"))
    assert failed.kind == "service_failed" and "feed" in failed.text
    assert alert_for(ev(Event.INCIDENT, service="feed", kind="restart", message="#3")) is None


def test_incidents_page_by_kind_except_those_notified_elsewhere():
    rec = alert_for(ev(Event.INCIDENT, service="order_gateway", kind="reconciliation",
                       message="BTCUSDT: books 0.01, venue 0"))
    assert rec.kind == "incident:reconciliation"
    assert rec.text == "order_gateway: BTCUSDT: books 0.01, venue 0"
    assert rec.key == "order_gateway:reconciliation"
    for kind in ("chaos", "disk"):
        assert alert_for(ev(Event.INCIDENT, service="x", kind=kind, message="m")) is None


def test_a_job_out_of_attempts_names_the_run_and_the_error():
    a = alert_for(ev(Event.JOB_FAILED, job="train", attempts=3, args=["20260101-t1-a-rf"],
                     error="RuntimeError: no data"))
    assert a.kind == "job_failed" and a.key == "train 20260101-t1-a-rf"
    assert a.text == "train 20260101-t1-a-rf failed after 3 attempts: RuntimeError: no data"


def test_other_events_and_malformed_ones_page_nobody():
    assert alert_for(ev(Event.TRADE, symbol="BTCUSDT")) is None
    assert alert_for({"seq": 1, "kind": Event.INCIDENT, "data": "not a dict"}) is None

"""The headline `status` and the TUI give a running appliance (issue 11, hole 1)."""

from appliance.services.heartbeat import heartbeat_payload
from appliance.status import health


def test_any_failed_service_makes_it_failed_and_an_outage_or_a_restart_degraded():
    ok = {"feed": {"state": "running"}, "trading": {"state": "running"}}
    assert health(ok) == "OK"
    assert health({**ok, "feed": {"state": "degraded"}}) == "DEGRADED"
    assert health({**ok, "drift": {"state": "backoff"}}) == "DEGRADED"
    assert health({**ok, "feed": {"state": "degraded"}, "shadow": {"state": "failed"}}) == \
        "FAILED"


def test_a_service_in_an_exchange_outage_is_reported_degraded_with_why(make_ctx):
    ctx = make_ctx()
    ctx.degraded["feed"] = "exchange outage: ExchangeError: HTTP 503"
    payload = heartbeat_payload(ctx, {"feed": {"state": "running", "restarts": 0},
                                      "shadow": {"state": "failed", "restarts": 5}}, 0.0)
    assert payload["services"]["feed"]["state"] == "degraded"
    assert "HTTP 503" in payload["services"]["feed"]["last_error"]
    assert payload["services"]["shadow"]["state"] == "failed"  # a failed one stays failed
    assert health(payload["services"]) == "FAILED"

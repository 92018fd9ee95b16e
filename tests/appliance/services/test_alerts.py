"""The alerts service on a real bus and DuckDB file: the kill switch pulled from the CLI pages
with who and why, a crash loop is one message, a restart neither loses nor repeats alerts, and
one daily summary goes out per market day with the day's figures."""

from __future__ import annotations

import pytest
import trio

from appliance.contracts import Event
from appliance.notify import Notifier
from appliance.services.alerts import Alerts
from appliance.store import Store

pytestmark = pytest.mark.timeout(60)


def notes(bus) -> list[dict]:
    return [e["data"] for e in bus.events_since(0, kinds=[Event.NOTIFICATION])]


def test_the_cli_kill_switch_and_a_crash_loop_page_once_each(make_ctx):
    ctx = make_ctx()
    alerts = Alerts(ctx, Notifier(ctx.bus, None, dedupe_s=900.0))
    ctx.bus.set_switch("maintenance_mode", True, actor="alice", reason="venue looks wrong",
                       source="cli")
    for i in range(30):
        ctx.bus.publish(Event.INCIDENT, {"service": "feed", "kind": "crash",
                                         "message": f"ExchangeError #{i}"}, service="supervisor")
        ctx.bus.publish(Event.INCIDENT, {"service": "feed", "kind": "restart",
                                         "message": f"restart #{i}"}, service="supervisor")
    assert alerts.tick() == 31  # one alert per switch change and per crash; 29 folded
    sent = notes(ctx.bus)
    assert [n["kind"] for n in sent] == ["kill_switch", "service_crash"]
    assert sent[0]["text"] == "kill switch ON: no new orders (by alice: venue looks wrong)"
    assert sent[1]["text"] == "feed crashed: ExchangeError #0"
    sample = ctx.metrics.registry.get_sample_value
    assert sample("incidents_total", {"kind": "crash"}) == 30
    assert sample("incidents_total", {"kind": "restart"}) == 30


def test_promotions_are_counted_for_prometheus(make_ctx):
    ctx = make_ctx()
    alerts = Alerts(ctx, Notifier(ctx.bus, None))
    for to in ("shadow", "prod", "retired", "prod"):
        ctx.bus.publish(Event.MODEL_TRANSITION, {"model_id": "m", "to_mode": to})
    alerts.tick()
    assert ctx.metrics.registry.get_sample_value("promotions_total") == 2


def test_a_restarted_service_sends_what_came_while_it_was_down_and_nothing_twice(make_ctx):
    ctx = make_ctx()
    ctx.bus.publish(Event.INCIDENT, {"service": "x", "kind": "parity", "message": "old"})
    first = Alerts(ctx, Notifier(ctx.bus, None))
    assert first.tick() == 0  # a fresh appliance does not page its past
    ctx.bus.publish(Event.JOB_FAILED, {"job": "train", "attempts": 3, "args": ["r1"],
                                       "error": "RuntimeError: x"})
    assert first.tick() == 1
    ctx.bus.publish(Event.INCIDENT, {"service": "order_gateway", "kind": "reconciliation",
                                     "message": "BTCUSDT differs"})  # while it restarts
    second = Alerts(ctx, Notifier(ctx.bus, None))
    assert second.tick() == 1
    assert second.tick() == 0
    assert [n["kind"] for n in notes(ctx.bus)] == ["job_failed", "incident:reconciliation"]


def _seed_day(store: Store, day_start_ms: int) -> None:
    store.sql("INSERT INTO equity (ts, equity, wallet) VALUES (?, 100000, 100000), "
              "(?, 100250, 100250)", [day_start_ms - 60_000, day_start_ms + 86_000_000])
    for i, trade in enumerate((True, False, True)):
        store.sql("INSERT INTO fills (order_id, ts, symbol, side, qty, price, fee, model_id, "
                  "mode, trade) VALUES (?, ?, 'BTCUSDT', 'Buy', 1, 1, 0, 'm', 'prod', ?)",
                  [f"o{i}", day_start_ms + i * 60_000, trade])
    store.sql("INSERT INTO model_transitions (ts, model_id, grp, from_mode, to_mode, actor, "
              "reason, version) VALUES (?, 'm2', 'g', 'shadow', 'prod', 'shadow', 'rule', 2)",
              [day_start_ms / 1000 + 3600])
    store.record_incident("feed", "outage", "exchange down")


def test_one_daily_summary_per_market_day_with_the_days_figures(make_ctx):
    ctx = make_ctx(start=1_800_000_000.0 - 1_800_000_000.0 % 86_400 + 7 * 3600)  # 07:00 UTC
    alerts = Alerts(ctx, Notifier(ctx.bus, None))
    day_end = ctx.clock.now() + 3600  # 08:00, notify.daily_at's default
    trio.run(alerts.daily)  # first start: counts from now
    _seed_day(ctx.store.store, int((day_end - 86_400) * 1000))
    assert trio.run(alerts.daily) is False  # before 08:00
    ctx.clock = type(ctx.clock)(day_end + 60, 60.0)  # 08:01
    assert trio.run(alerts.daily) is True
    assert trio.run(alerts.daily) is False  # once a day, also across a restart:
    assert trio.run(Alerts(ctx, Notifier(ctx.bus, None)).daily) is False
    [summary] = [n for n in notes(ctx.bus) if n["kind"] == "daily_summary"]
    assert summary["text"].startswith("2027-01-15 08:00 UTC: equity 100,250.00 USD, "
                                      "P&L +250.00 (+0.25%); 2 trades (3 fills); models "
                                      "changed: 1 → prod; incidents: 1 outage")

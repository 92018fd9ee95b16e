"""The weekly chaos experiment inside `run` (issue 11): `run`'s own supervisor and services
(``build_services``: feed, trading, shadow, risk, the notifier and, when scheduled, chaos) on
DuckDB, the bus and the sim market, with trio's autojump clock making the days pass."""

from __future__ import annotations

import functools
import shutil
from dataclasses import replace

import pytest
import trio

from appliance.config import ConfigError, build_config
from appliance.contracts import Event, Snapshot
from appliance.jobs import Jobs
from appliance.notify import Notifier
from appliance.schedule import WEEK_S, next_weekly, parse_weekly, utc
from appliance.services import chaos
from appliance.services.heartbeat import incidents_snapshot
from appliance.services.operator import sync_audit
from appliance.supervision import RUNNING, STOPPED, Supervisor
from appliance.supervisor import build_services, incident_recorder
from tests.appliance.services.conftest import START

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
SLOT = utc("2026-03-15 04:00")  # the default chaos.at, Sun 04:00, after START (Wed 03-11)
BEFORE = SLOT - 600.0  # each appliance starts ten market minutes before the slot
RUN = ("notify", "feed", "trading", "shadow", "risk", chaos.NAME)  # of build_services


def configure(ctx, *, exchange: str = "sim", paper: bool = True, **chaos_cfg) -> None:
    cfg = ctx.cfg
    ctx.cfg = replace(cfg, general=replace(cfg.general, exchange=exchange),
                      bybit=replace(cfg.bybit, paper=paper),
                      chaos=replace(cfg.chaos, **chaos_cfg))
    ctx.bus.set_tradable_pairs(SYMBOLS)


async def run_appliance(ctx, market_s: float, only: tuple[str, ...] = RUN,
                        extra: dict | None = None) -> tuple[Supervisor, dict]:
    """`run`'s supervisor over ``only`` of the services `build_services` gives (plus
    ``extra``) for ``market_s`` seconds of market time; the supervisor and the services."""
    supervisor = Supervisor(ctx.cfg.supervisor, on_incident=incident_recorder(ctx))
    jobs = Jobs(ctx.cfg.state_path)
    try:
        built = build_services(ctx, supervisor, jobs, 0.0)
        services = {**{n: fn for n, fn in built.items() if n in only}, **(extra or {})}
        end = ctx.clock.now() + market_s
        async with trio.open_nursery() as nursery:
            for name, fn in services.items():
                await nursery.start(supervisor.supervise, name, fn)
            await ctx.clock.sleep_until(end)
            nursery.cancel_scope.cancel()
    finally:
        jobs.close()
    return supervisor, built


def restart(make_ctx, ctx, start: float, **chaos_cfg):
    """`run` stopped and started again at market time ``start``, same state dir."""
    ctx.store.store.close()
    ctx.bus.close()
    again = make_ctx(start=start)
    configure(again, **chaos_cfg)
    return again


def chaos_incidents(ctx) -> list[dict]:
    return [i for i in incidents_snapshot(ctx.store.store, 500) if i["kind"] == "chaos"]


def crashes(ctx) -> list[dict]:
    return [i for i in ctx.store.store.incidents(500) if i["kind"] == "crash"]


def notifications(ctx) -> list[dict]:
    return [e["data"] for e in ctx.bus.events_since(0, kinds=[Event.NOTIFICATION])
            if e["data"]["kind"] == "chaos"]


def audit(ctx, action: str) -> list[dict]:
    return [e for e in ctx.bus.audit_entries() if e["actor"] == "chaos" and e["action"] == action]


# -- the schedule (pure) -------------------------------------------------------------------------

def test_the_weekly_slot_is_the_next_weekday_and_time_strictly_after():
    sun, at = parse_weekly("Sun 04:00")
    assert (sun, at) == (6, 4 * 3600)
    assert next_weekly(START, sun, at) == SLOT
    assert next_weekly(SLOT - 1, sun, at) == SLOT
    assert next_weekly(SLOT, sun, at) == SLOT + WEEK_S  # strictly after
    assert next_weekly(utc("2026-03-16 00:00"), *parse_weekly("Mon 00:00")) == \
        utc("2026-03-23 00:00")


def test_what_is_owed_after_a_restart_and_who_is_crashed_next():
    sun, at = parse_weekly("Sun 04:00")
    armed = chaos.ChaosState(since=START)
    assert chaos.due_slot(armed, sun, at) == SLOT
    ran = replace(armed, slot=SLOT, service="feed")
    assert chaos.due_slot(ran, sun, at) == SLOT + WEEK_S  # not the slot just run
    # chaos.at moved to later that day: not a second run in the same week
    assert chaos.due_slot(ran, sun, at + 3600) == SLOT + WEEK_S + 3600
    assert chaos.due_slot(ran, *parse_weekly("Wed 04:00")) == SLOT + 3 * 86400 + WEEK_S
    services = ["feed", "trading", "shadow"]
    assert [chaos.next_service(services, s) for s in (None, "feed", "shadow", "risk")] == \
        ["feed", "trading", "feed", "feed"]


@pytest.mark.parametrize("key, value, expected", [
    ("at", "sun 04:00", "'chaos.at'"), ("at", "Sun 24:00", "'chaos.at'"),
    ("services", "feed,heartbeat", "'chaos.services'"), ("timeout_s", "5", "out of range")])
def test_chaos_config_is_validated_by_key(key, value, expected):
    with pytest.raises(ConfigError, match=expected):
        build_config(env={f"METHTRADER__CHAOS__{key.upper()}": value})


def test_off_by_default_and_never_with_real_orders():
    cfg = build_config(env={})
    assert not cfg.chaos.enabled and chaos.refusal(cfg) == "chaos.enabled is false"
    on = {"METHTRADER__CHAOS__ENABLED": "true"}
    assert chaos.refusal(build_config(env=on)) is None  # the sim
    assert chaos.refusal(build_config(env={**on, "METHTRADER_EXCHANGE": "bybit"})) is None
    live = build_config(env={**on, "METHTRADER_EXCHANGE": "bybit",
                             "METHTRADER__BYBIT__PAPER": "false"})
    assert "real" in chaos.refusal(live)


# -- inside `run` --------------------------------------------------------------------------------

@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_disabled_by_default_nothing_is_crashed_through_the_slot(make_ctx, autojump_clock):
    ctx = make_ctx(start=BEFORE)
    configure(ctx)  # the defaults: chaos.enabled = false
    supervisor, built = await run_appliance(ctx, 1800)
    assert chaos.NAME not in built and chaos.NAME not in supervisor.states
    assert chaos_incidents(ctx) == [] and crashes(ctx) == [] and notifications(ctx) == []
    assert ctx.bus.snapshot(Snapshot.CHAOS) is None
    assert [e for e in ctx.bus.audit_entries() if e["actor"] == "chaos"] == []


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_enabled_in_the_sim_it_crashes_at_the_slot_and_records_the_recovery_once(
        make_ctx, autojump_clock):
    ctx = make_ctx(start=BEFORE)
    configure(ctx, enabled=True)
    supervisor, _ = await run_appliance(ctx, 1800)
    [started] = audit(ctx, "chaos:started")
    assert started["details"]["market_ts"] >= SLOT  # at the slot, not before
    assert started["details"]["schedule"]["service"] == "feed"  # the first in turn
    [crash] = crashes(ctx)
    assert crash["service"] == "feed" and "weekly chaos experiment" in crash["message"]
    feed = supervisor.states["feed"]
    assert feed.restarts == 1 and feed.state in (RUNNING, STOPPED)  # stopped: the test's end
    [incident] = chaos_incidents(ctx)
    assert incident["service"] == "chaos" and "held" in incident["message"]
    assert isinstance(incident["mttr_s"], float) and incident["mttr_s"] < 60
    assert incident["mttr_s"] >= feed.recovered_in_s  # no recovery before the restart
    measured = audit(ctx, "chaos:finished")[0]["details"]["details"]
    assert measured["candle_ms"] > measured["candle_before_ms"] >= 0  # data flows again
    [event] = [e["data"] for e in ctx.bus.events_since(0, kinds=[Event.INCIDENT])
               if e["data"]["kind"] == "chaos"]
    assert event["mttr_s"] == pytest.approx(incident["mttr_s"], abs=1e-3)
    [note] = notifications(ctx)
    assert note["text"] == incident["message"] and note["data"]["held"] is True
    [done] = audit(ctx, "chaos:finished")
    assert done["reason"] == incident["message"] and done["details"]["held"] is True
    state = chaos.ChaosState.from_dict(ctx.bus.snapshot(Snapshot.CHAOS))
    assert (state.slot, state.service, state.finished) == (SLOT, "feed", True)


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_crashed_trading_engine_recovers_when_it_decides_a_new_bar(make_ctx,
                                                                           autojump_clock):
    ctx = make_ctx(start=BEFORE)
    configure(ctx, enabled=True, services="trading")
    supervisor, _ = await run_appliance(ctx, 1800)
    [crash] = crashes(ctx)
    assert crash["service"] == "trading" and supervisor.states["trading"].restarts == 1
    [incident] = chaos_incidents(ctx)
    assert "held" in incident["message"] and 0 < incident["mttr_s"] < 60
    details = audit(ctx, "chaos:finished")[0]["details"]["details"]
    crashed_ms = details["crashed_at_market"] * 1000
    assert details["bar_ms"] > crashed_ms  # a bar that closed after the crash was decided
    # the crash landed in the last half of a 5m bar: the MTTR measures the restart, not the
    # wait for a bar
    assert details["bar_ms"] - crashed_ms <= 150_000
    assert incident["mttr_s"] >= supervisor.states["trading"].recovered_in_s


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_service_that_stays_down_is_given_up_after_the_timeout_and_not_held(
        make_ctx, autojump_clock):
    ctx = make_ctx(start=BEFORE)
    configure(ctx, enabled=True, services="feed", timeout_s=10.0)
    # one crash marks it failed, left down for an hour: no recovery within the 10 s bound
    ctx.cfg = replace(ctx.cfg, supervisor=replace(ctx.cfg.supervisor, max_crashes=1,
                                                  failed_retry_s=3600.0))
    supervisor, _ = await run_appliance(ctx, 1800)
    assert supervisor.states["feed"].state == "failed"
    [incident] = chaos_incidents(ctx)
    assert incident["mttr_s"] is None and "FAILED: not recovered within 10s" in \
        incident["message"] and "feed was not restarted (state failed" in incident["message"]
    [note] = notifications(ctx)
    assert note["data"]["held"] is False


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_nothing_is_crashed_when_the_appliance_is_not_steady_at_the_slot(
        make_ctx, autojump_clock):
    ctx = make_ctx(start=BEFORE)
    configure(ctx, enabled=True, services="risk", timeout_s=10.0)
    await run_appliance(ctx, 1800, only=("notify", "risk", chaos.NAME))  # no feed: no candles
    assert crashes(ctx) == []
    [incident] = chaos_incidents(ctx)
    assert "nothing was crashed" in incident["message"] and incident["mttr_s"] is None


@pytest.mark.trio
@pytest.mark.timeout(240)
async def test_a_restart_neither_repeats_the_week_nor_skips_a_missed_slot(make_ctx,
                                                                          autojump_clock):
    ctx = make_ctx(start=BEFORE)
    configure(ctx, enabled=True, services="feed,risk")
    await run_appliance(ctx, 1800)
    assert len(chaos_incidents(ctx)) == 1 and [c["service"] for c in crashes(ctx)] == ["feed"]

    ctx = restart(make_ctx, ctx, SLOT + 3600, enabled=True, services="feed,risk")
    await run_appliance(ctx, 1800)  # same week, the bus intact: nothing more
    assert len(chaos_incidents(ctx)) == 1 and len(crashes(ctx)) == 1
    assert len(audit(ctx, "chaos:started")) == 1 and audit(ctx, "chaos:armed")

    await sync_audit(ctx)  # as `run` does: the journal is in DuckDB
    state_dir = ctx.cfg.state_path
    ctx.store.store.close()
    ctx.bus.close()
    shutil.rmtree(state_dir / "bus")  # the bus is lost while `run` is down
    # down over the next slot: the one missed runs at the start, the next service in turn
    ctx = restart(make_ctx, ctx, SLOT + WEEK_S + 3600, enabled=True, services="feed,risk")
    assert ctx.bus.snapshot(Snapshot.CHAOS) is None
    await run_appliance(ctx, 1800, only=("notify", "feed", "risk", chaos.NAME))
    assert [c["service"] for c in crashes(ctx)] == ["risk", "feed"]  # newest first
    assert len(chaos_incidents(ctx)) == 2
    assert all("held" in i["message"] for i in chaos_incidents(ctx))
    state = chaos.ChaosState.from_dict(ctx.bus.snapshot(Snapshot.CHAOS))
    assert (state.slot, state.service) == (SLOT + WEEK_S, "risk")


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_a_run_cut_short_is_recorded_as_interrupted_not_repeated(make_ctx,
                                                                       autojump_clock):
    ctx = make_ctx(start=SLOT + 60)
    configure(ctx, enabled=True)
    cut = chaos.ChaosState(since=START, slot=SLOT, service="feed", finished=False)
    ctx.bus.put_snapshot(Snapshot.CHAOS, cut.as_dict())  # `run` stopped mid-experiment
    await run_appliance(ctx, 1200)
    assert crashes(ctx) == []  # the slot is not run again
    [incident] = chaos_incidents(ctx)
    assert "interrupted" in incident["message"] and incident["mttr_s"] is None
    assert len(notifications(ctx)) == 1
    state = chaos.ChaosState.from_dict(ctx.bus.snapshot(Snapshot.CHAOS))
    assert state.finished and chaos.due_slot(state, *parse_weekly("Sun 04:00")) == \
        SLOT + WEEK_S


@pytest.mark.trio
@pytest.mark.timeout(120)
async def test_never_scheduled_when_orders_would_be_real(make_ctx, autojump_clock):
    ctx = make_ctx(start=BEFORE)
    configure(ctx, exchange="bybit", paper=False, enabled=True)
    # even if it were handed the chaos service by mistake, the service refuses to run
    stray = {chaos.NAME: functools.partial(chaos.run, ctx, Supervisor(ctx.cfg.supervisor),
                                           Notifier(None, None))}
    supervisor, built = await run_appliance(ctx, 1800, only=("notify", "feed"), extra=stray)
    assert chaos.NAME not in built  # `run` does not schedule it
    [refused] = audit(ctx, "chaos:refused")
    assert "real" in refused["reason"] and refused["details"]["paper"] is False
    assert [n["text"] for n in notifications(ctx)] == [
        f"weekly chaos experiment not scheduled: {refused['reason']}"]
    assert supervisor.states[chaos.NAME].state == STOPPED  # returned at once
    assert crashes(ctx) == [] and chaos_incidents(ctx) == []
    assert ctx.bus.snapshot(Snapshot.CHAOS) is None and audit(ctx, "chaos:started") == []

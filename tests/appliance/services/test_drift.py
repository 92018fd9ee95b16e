"""The drift service on a real DuckDB file, bus and bar hub: values at once from stored candles,
a pass per market hour, and the 3σ rule queueing one early retrain per cooldown."""

from __future__ import annotations

import json

import numpy as np
import pytest
import trio

from appliance import lifecycle
from appliance.bar_hub import BarHub
from appliance.bars import bars_from_minutes
from appliance.drift_view import format_drift, select
from appliance.exchange.simmarket import EPOCH_MS, SimMarket
from appliance.exchange.simshock import Shock
from appliance.jobs import Jobs
from appliance.notify import Notifier
from appliance.services import drift
from models.artifacts import REFERENCE_FILE, VOL_PROFILE_FILE, run_dir
from models.drift import build_reference, reference_to_json
from models.features import FEATURE_NAMES, compute_features
from models.vol_regime import vol_profile
from tests.builders import fake_run

DAY_MS, HOUR_MS = 86_400_000, 3_600_000
START_MS = EPOCH_MS + 300 * DAY_MS  # a fixed market time, on the hour
SYMBOL = "SOLUSDT"


def reference_from_sim(market: SimMarket, days: int = 30) -> dict:
    """A 1h model's reference, as training builds it, from the days before the window."""
    first = START_MS - 40 * DAY_MS
    rows = market.candles(SYMBOL, first, first + days * DAY_MS)
    feats = compute_features(bars_from_minutes(rows, HOUR_MS, first + days * DAY_MS))
    return reference_to_json(build_reference(feats, FEATURE_NAMES))


def profile_from_sim(market: SimMarket, days: int = 30) -> dict:
    """The symbol's seasonal volatility profile, as training stores it."""
    first = START_MS - 40 * DAY_MS
    bars = bars_from_minutes(market.candles(SYMBOL, first, first + days * DAY_MS), 300_000,
                             first + days * DAY_MS)
    return {SYMBOL: list(vol_profile(bars[:, 0], bars[:, 4]))}


def add_model(ctx, market: SimMarket) -> str:
    receipt = fake_run(ctx.cfg.state_path, "r-sol", group="t2-a", symbols=(SYMBOL,),
                       timeframe="1h")
    folder = run_dir(ctx.cfg.state_path, "r-sol")
    (folder / REFERENCE_FILE).write_text(json.dumps(reference_from_sim(market)))
    (folder / VOL_PROFILE_FILE).write_text(json.dumps(profile_from_sim(market)))
    lifecycle.register(ctx.store.store, receipt, now=START_MS / 1000 - 86_400)
    return "m-r-sol"


def store_minutes(ctx, market: SimMarket, start_ms: int, end_ms: int) -> np.ndarray:
    rows = market.candles(SYMBOL, start_ms, end_ms)
    ctx.store.store.upsert_candles(SYMBOL, "1m", rows)
    return rows


def plant_history(ctx, model_id: str, points: int = 300, broken: int = 0) -> None:
    """Past passes against the model: calm ones (aggregate 0.05 ± 0.005), then ``broken``
    ones at 0.4 (the break had begun before the start)."""
    rng = np.random.default_rng(1)
    kls = [0.05 + 0.005 * rng.standard_normal() for _ in range(points - broken)]
    for i, kl in enumerate(kls + [0.4] * broken):
        ctx.store.store.sql("INSERT INTO drift (ts, symbol, kl, model_id, grp, features, "
                            "verdict) VALUES (?, ?, ?, ?, 't2-a', '{}', 'ok')",
                            [START_MS - (points - i) * HOUR_MS, SYMBOL, kl, model_id])


async def feed_hours(ctx, hub: BarHub, market: SimMarket, hours: int) -> None:
    """What the feed does: store each hour's minutes, hand them to the hub, flush."""
    for h in range(hours):
        lo = START_MS + h * HOUR_MS
        hub.add_minutes(SYMBOL, store_minutes(ctx, market, lo, lo + HOUR_MS))
        hub.flush(lo + HOUR_MS, [SYMBOL])
        await trio.sleep(5)


@pytest.fixture
def jobs(state_dir):
    j = Jobs(state_dir)  # a real queue nobody consumes: what is queued stays there
    yield j
    j.close()


@pytest.mark.trio
async def test_values_at_once_from_stored_candles_then_a_pass_every_market_hour(
        make_ctx, jobs, autojump_clock):
    ctx = make_ctx(start=START_MS / 1000)
    market = SimMarket(ctx.cfg.sim.seed)
    model_id = add_model(ctx, market)
    store_minutes(ctx, market, START_MS - 8 * DAY_MS, START_MS)
    hub = BarHub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drift.run, ctx, hub, jobs, Notifier(ctx.bus, None))
        await trio.sleep(2)
        first = ctx.bus.snapshot("drift")
        await feed_hours(ctx, hub, market, 3)
        nursery.cancel_scope.cancel()
    row = first["symbols"][SYMBOL]
    assert first["ts"] == START_MS / 1000  # before any live bar: the stored window
    assert row["model_id"] == model_id and row["timeframe"] == "1h" and row["bars"] == 72
    assert set(row["features"]) == set(FEATURE_NAMES) - {"tod_sin", "tod_cos", "dow_sin",
                                                         "dow_cos"}
    assert row["kl"] == pytest.approx(np.mean(list(row["features"].values())))
    assert row["verdict"] == "warming" and row["line"] is None
    print(ctx.store.store.sql("SELECT ts, kl, features FROM drift ORDER BY ts")[-1])
    rows = ctx.store.store.sql("SELECT ts, kl, model_id, verdict FROM drift ORDER BY ts")
    assert [r[0] for r in rows] == [START_MS + h * HOUR_MS for h in range(4)]
    assert {r[2] for r in rows} == {model_id} and {r[3] for r in rows} == {"warming"}
    last = ctx.bus.snapshot("drift")["symbols"][SYMBOL]
    history = [p[0] for p in last["history"]]
    assert history[-4:] == [r[0] / 1000 for r in rows]
    # before them, the passes seeded from the stored candles (on the pass times; too few of
    # 8 days for a verdict: each needs a full 3-day window of warm feature rows)
    assert 0 < len(history) - 4 < ctx.cfg.drift.min_history
    assert all(b - a == HOUR_MS / 1000 for a, b in zip(history, history[1:]))
    assert ctx.metrics.feature_drift.labels(SYMBOL)._value.get() == pytest.approx(rows[-1][1])
    assert ctx.metrics.feature_drift_feature.labels(SYMBOL, "atr_14")._value.get() == \
        pytest.approx(last["features"]["atr_14"])
    assert jobs.pending() == 0
    # the seasonal volatility of an undisturbed market: about its profile, no regime change
    assert last["vol_ratio"] == pytest.approx(1.0, abs=0.35) and last["vol_regime"] == "normal"
    assert ctx.metrics.vol_regime_ratio.labels(SYMBOL)._value.get() == last["vol_ratio"]
    assert ctx.bus.events_since(0, ["vol_regime"]) == []


@pytest.mark.trio
async def test_a_regime_break_fires_the_rule_and_queues_one_early_retrain_per_cooldown(
        make_ctx, jobs, autojump_clock):
    ctx = make_ctx(start=START_MS / 1000)
    calm = SimMarket(ctx.cfg.sim.seed)
    model_id = add_model(ctx, calm)  # trained before the break
    broken = SimMarket(ctx.cfg.sim.seed, shock=Shock(START_MS - 2 * DAY_MS,
                                                     frozenset({SYMBOL})))
    store_minutes(ctx, broken, START_MS - 8 * DAY_MS, START_MS)
    # the passes before the start already above the line: with drift.persist (6) in a row,
    # the first live pass is drift (those before it are read back with the history)
    plant_history(ctx, model_id, broken=ctx.cfg.drift.persist - 1)
    hub = BarHub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drift.run, ctx, hub, jobs, Notifier(ctx.bus, None))
        await feed_hours(ctx, hub, broken, 3)
        nursery.cancel_scope.cancel()
    print(ctx.store.store.sql("SELECT ts, kl, line, verdict FROM drift ORDER BY ts")[-6:])
    rows = ctx.store.store.sql("SELECT verdict, retrain, line, kl FROM drift "
                               "WHERE ts >= ? ORDER BY ts", [START_MS])
    assert [r[0] for r in rows] == ["drift"] * 4
    run_id = "20241027-t2-a-rf-drift0000-1h"
    assert [r[1] for r in rows] == [run_id, None, None, None]  # once per cooldown
    assert all(r[3] > r[2] for r in rows)
    assert jobs.pending() == 1
    assert ctx.bus.cache.get(f"training:{run_id}")["status"] == "queued"
    assert ctx.metrics.drift_retrains_total._value.get() == 1
    (event,) = ctx.bus.events_since(0, ["drift_retrain"])
    assert event["data"]["run_id"] == run_id and event["data"]["symbol"] == SYMBOL
    moved = event["data"]["features"]
    assert len(moved) == 3 and set(moved) & {"vol_12", "vol_48", "atr_14", "ret_12", "ret_48"}
    (note,) = [e["data"] for e in ctx.bus.events_since(0, ["notification"])
               if e["data"]["kind"] == "drift"]
    assert all(f in note["text"] for f in moved) and run_id in note["text"]
    (audit,) = [a for a in ctx.bus.audit_entries() if a["action"] == "drift_retrain"]
    assert audit["actor"] == "drift" and audit["details"]["run_id"] == run_id
    snap = ctx.bus.snapshot("drift")["symbols"][SYMBOL]
    assert snap["verdict"] == "drift" and snap["last_retrain"]["run_id"] == run_id
    assert [r["run_id"] for r in ctx.bus.snapshot("drift")["retrains"]] == [run_id]
    # the tripled volatility is also a high volatility regime, once it lasted 3 passes
    (regime,) = ctx.bus.events_since(0, ["vol_regime"])
    assert regime["data"]["regime"] == "high" and regime["data"]["previous"] == "normal"
    assert regime["market_ts"] == (START_MS + 2 * HOUR_MS) / 1000  # the third pass
    assert snap["vol_ratio"] > ctx.cfg.drift.vol_high and snap["vol_regime"] == "high"
    text = format_drift(select(ctx.bus.snapshot("drift"), [SYMBOL]), detail=True)  # the CLI's
    assert f"{SYMBOL:<12} drift" in text and f"early retrain {run_id}" in text

    # a restart inside the cooldown remembers the retrain (the drift table), and lists it
    # (the audit log, once `run` has copied the bus's journal there)
    ctx.store.store.copy_audit(ctx.bus.audit_entries())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drift.run, ctx, BarHub(), jobs, Notifier(ctx.bus, None))
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert jobs.pending() == 1 and ctx.metrics.drift_retrains_total._value.get() == 1
    assert [r["run_id"] for r in ctx.bus.snapshot("drift")["retrains"]] == [run_id]


@pytest.mark.trio
async def test_repeated_drift_of_a_group_is_one_message_within_the_notifiers_dedupe(
        make_ctx, jobs, autojump_clock):
    from dataclasses import replace

    ctx = make_ctx(start=START_MS / 1000)
    ctx.cfg = replace(ctx.cfg, drift=replace(ctx.cfg.drift, cooldown="1h"))
    calm = SimMarket(ctx.cfg.sim.seed)
    model_id = add_model(ctx, calm)
    broken = SimMarket(ctx.cfg.sim.seed, shock=Shock(START_MS - 2 * DAY_MS,
                                                     frozenset({SYMBOL})))
    store_minutes(ctx, broken, START_MS - 8 * DAY_MS, START_MS)
    plant_history(ctx, model_id, broken=ctx.cfg.drift.persist - 1)
    notifier = Notifier(ctx.bus, None, dedupe_s=900.0, now=lambda: 1000.0)  # one wall moment
    hub = BarHub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drift.run, ctx, hub, jobs, notifier)
        await feed_hours(ctx, hub, broken, 3)
        nursery.cancel_scope.cancel()
    acted = [a for a in ctx.bus.audit_entries() if a["action"] == "drift_retrain"]
    assert len(acted) == 4  # a pass an hour, each past the group's cooldown
    notes = [e["data"] for e in ctx.bus.events_since(0, ["notification"])
             if e["data"]["kind"] == "drift"]
    assert len(notes) == 1 and notifier.suppressed == 3  # the repeats were folded


@pytest.mark.trio
async def test_the_history_is_seeded_from_stored_candles_and_again_for_a_new_model(
        make_ctx, jobs, autojump_clock):
    ctx = make_ctx(start=START_MS / 1000)
    market = SimMarket(ctx.cfg.sim.seed)
    first = add_model(ctx, market)
    store_minutes(ctx, market, START_MS - 24 * DAY_MS, START_MS)
    span = 14 * 24  # drift.history over drift.interval
    hub = BarHub()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drift.run, ctx, hub, jobs, Notifier(ctx.bus, None))
        await trio.sleep(2)
        at_start = ctx.bus.snapshot("drift")["symbols"][SYMBOL]
        # a new model for the group, with a reference of other days
        receipt = fake_run(ctx.cfg.state_path, "r-sol2", group="t2-a", symbols=(SYMBOL,),
                           timeframe="1h")
        folder = run_dir(ctx.cfg.state_path, "r-sol2")
        (folder / REFERENCE_FILE).write_text(json.dumps(reference_from_sim(market, days=5)))
        lifecycle.register(ctx.store.store, receipt, now=START_MS / 1000)
        ctx.bus.counter_incr(lifecycle.REGISTRY_VERSION)
        await feed_hours(ctx, hub, market, 1)
        nursery.cancel_scope.cancel()
    # a verdict at the first pass, before any live bar, on the rule's whole history
    assert at_start["model_id"] == first
    assert at_start["verdict"] == "ok" and at_start["points"] == span
    assert [r[0] for r in ctx.store.store.sql("SELECT ts FROM drift WHERE model_id = ?",
                                              [first])] == [START_MS]  # seeded: not written
    # the new model's history is its own, seeded again against its reference, not reset
    after = ctx.bus.snapshot("drift")["symbols"][SYMBOL]
    assert after["model_id"] == "m-r-sol2" and after["verdict"] != "warming"
    assert after["points"] == span
    assert after["mean"] != pytest.approx(at_start["mean"], abs=0.05)

"""The shadow desk with a real registry: starting shadows, the nightly decision, freezes."""

from __future__ import annotations

import pytest
import trio

from appliance.bus import DEPLOYS_FROZEN
from appliance.notify import Notifier
from appliance.schedule import utc
from appliance.services import risk, shadow
from appliance.services.shadow import ShadowDesk, pick_new_shadows
from models.artifacts import write_run
from models.registry import get_model, list_models, register_result, set_mode

START = utc("2026-11-20 00:00")


def add_model(ctx, run_id, sharpe, group="t1-a"):
    r = write_run(ctx.cfg.state_path, run_id, lambda p: p.write_bytes(run_id.encode()), {}, {
        "run_id": run_id, "kind": "rf", "group": group, "symbols": ["BTCUSDT"],
        "timeframe": "5m", "params": {}, "metrics": {"sharpe": sharpe}, "tags": {},
        "parent_run_id": None, "feature_set": "fs1", "dataset_sha256": "d", "loss_curve": [],
        "started": 0.0, "ended": 0.0})
    register_result(ctx.store.store, r)
    return f"m-{run_id}"


def record_shadow_days(ctx, model_id, days, drift, trades=30):
    """What the trading engine writes for a shadow: per-bar equity and its fills."""
    store = ctx.store.store
    start_ms = int(START * 1000)
    equity = 1000.0
    for i in range(int(days * 288)):
        equity *= 1 + drift + (0.0004 if i % 2 else -0.0004)
        store.sql("INSERT INTO model_equity VALUES (?, ?, 'shadow', ?)",
                  [start_ms + i * 300_000, model_id, equity])
    for i in range(trades):
        store.sql("INSERT INTO fills (order_id, ts, symbol, side, qty, price, fee, model_id, "
                  "mode) VALUES (?, ?, 'BTCUSDT', 'Buy', 1, 1, 0, ?, 'shadow')",
                  [f"p{i}", start_ms + i, model_id])


def test_best_candidates_fill_the_shadow_slots():
    models = [{"model_id": f"m{i}", "group": "g", "mode": "candidate",
               "metrics": {"sharpe": s}} for i, s in enumerate([0.1, 2.0, 1.0])]
    models.append({"model_id": "s", "group": "g", "mode": "shadow", "metrics": {}})
    assert [m["model_id"] for m in pick_new_shadows(models, 2)] == ["m1"]


@pytest.mark.trio
async def test_a_shadow_that_earned_its_week_is_promoted_and_a_loser_rejected(make_ctx,
                                                                            autojump_clock):
    ctx = make_ctx(speed=60, start=START + 8 * 86_400)
    winner = add_model(ctx, "win", 1.0)
    loser = add_model(ctx, "lose", 2.0, group="t2-a")
    for m in (winner, loser):
        set_mode(ctx.store.store, m, "shadow", START)
    record_shadow_days(ctx, winner, 7.5, drift=0.0002)
    record_shadow_days(ctx, loser, 7.5, drift=-0.0002)
    desk = ShadowDesk(ctx, Notifier(ctx.bus, None))
    await desk.nightly()
    assert get_model(ctx.store.store, winner)["mode"] == "prod"
    assert get_model(ctx.store.store, loser)["mode"] == "archived"
    actions = [e["action"] for e in ctx.bus.audit_entries()]
    assert f"promoted {winner}" in actions and f"rejected {loser}" in actions
    kinds = [e["data"]["kind"] for e in ctx.bus.events_since(0, ["notification"])]
    assert kinds.count("promoted") == 1 and kinds.count("rejected") == 1
    await desk.publish_live()  # the Models screen's live row of the new prod model
    live = ctx.bus.snapshot("model_live")[winner]
    assert live["trades"] == 30 and live["pnl"] > 0 and live["sharpe"] > 0


@pytest.mark.trio
async def test_too_early_or_frozen_means_wait(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60, start=START + 8 * 86_400)
    m = add_model(ctx, "young", 1.0)
    set_mode(ctx.store.store, m, "shadow", START + 5 * 86_400)  # three days in shadow
    record_shadow_days(ctx, m, 7.5, drift=0.0002)
    desk = ShadowDesk(ctx, Notifier(ctx.bus, None))
    await desk.nightly()
    assert get_model(ctx.store.store, m)["mode"] == "shadow"
    set_mode(ctx.store.store, m, "shadow", START)
    ctx.bus.set_switch(DEPLOYS_FROZEN, True, actor="risk", reason="test")
    await desk.nightly()
    assert get_model(ctx.store.store, m)["mode"] == "shadow"
    checks = [e["data"]["reason"] for e in ctx.bus.events_since(0, ["shadow_check"])]
    assert "deploys frozen" in checks[-1]
    add_model(ctx, "new", 3.0)
    await desk.start_shadows()  # frozen: no new shadow either
    assert [x["mode"] for x in list_models(ctx.store.store) if x["model_id"] == "m-new"] == [
        "candidate"]


@pytest.mark.trio
async def test_an_eight_percent_week_drawdown_freezes_deploys(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60, start=START + 8 * 86_400)
    now_ms = int(ctx.clock.now() * 1000)
    for i, eq in enumerate([100_000, 104_000, 99_000, 95_000]):
        ctx.store.store.sql("INSERT INTO equity VALUES (?, ?, ?)",
                            [now_ms - (4 - i) * 86_400_000, eq, eq])
    figures = await risk.check(ctx, Notifier(ctx.bus, None))
    assert figures["drawdown"] == pytest.approx((104_000 - 95_000) / 104_000)
    assert ctx.bus.deploys_frozen
    assert ctx.bus.switch_meta(DEPLOYS_FROZEN)["actor"] == "risk"
    ctx.store.store.sql("INSERT INTO equity VALUES (?, ?, ?)", [now_ms, 103_000, 103_000])
    await risk.check(ctx, Notifier(ctx.bus, None))
    assert not ctx.bus.deploys_frozen  # recovered below 4%

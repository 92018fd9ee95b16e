"""The shadow desk with a real registry: starting shadows, the nightly decision, freezes."""

from __future__ import annotations

import pytest

from appliance import lifecycle
from appliance.bus import DEPLOYS_FROZEN
from appliance.lifecycle import Lifecycle
from appliance.notify import Notifier
from appliance.schedule import utc
from appliance.books import Book, book_id_of
from appliance.ledger_store import save_book
from appliance.services import risk
from appliance.services.shadow import ShadowDesk, pick_new_shadows
from models.registry import get_model, list_models
from tests.builders import fake_run

START = utc("2026-11-20 00:00")


def add_model(ctx, run_id, sharpe, group="t1-a", kind="rf"):
    lifecycle.register(ctx.store.store, fake_run(ctx.cfg.state_path, run_id, sharpe, group, kind,
                                                 symbols=("BTCUSDT",)), now=START - 86_400)
    return f"m-{run_id}"


def shadow_since(ctx, model_id, since):
    lifecycle.start_shadow(ctx.store.store, model_id, actor="test", reason="t", now=since)


def desk_of(ctx):
    notifier = Notifier(ctx.bus, None)
    return ShadowDesk(ctx, notifier, Lifecycle(ctx.store, ctx.bus, notifier, ctx.cfg.state_path))


def record_shadow_days(ctx, model_id, days, drift, trades=30):
    """What the trading engine writes for a shadow: its book and the book's per-bar equity."""
    store = ctx.store.store
    since = get_model(store, model_id)["mode_since"]
    book_id = book_id_of("shadow", model_id, since)
    start_ms = int(since * 1000)
    equity = 1000.0
    for i in range(int(days * 288)):
        equity *= 1 + drift + (0.0004 if i % 2 else -0.0004)
        store.sql("INSERT INTO book_equity VALUES (?, ?, ?, ?)",
                  [start_ms + (i + 1) * 300_000, book_id, equity, repr(equity)])
    save_book(store, Book(book_id, model_id, "shadow", "t1-a", start_ms, 1000.0, equity,
                          exact=False, trades=trades, fills=3 * trades), start_ms)


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
        shadow_since(ctx, m, START)
    record_shadow_days(ctx, winner, 7.5, drift=0.0002)
    record_shadow_days(ctx, loser, 7.5, drift=-0.0002)
    desk = desk_of(ctx)
    await desk.nightly()
    assert get_model(ctx.store.store, winner)["mode"] == "prod"
    assert get_model(ctx.store.store, loser)["mode"] == "rejected"
    actions = [r[0] for r in ctx.store.store.sql("SELECT action FROM audit_log")]
    assert f"promoted {winner}" in actions and f"rejected {loser}" in actions
    kinds = [e["data"]["kind"] for e in ctx.bus.events_since(0, ["notification"])]
    assert kinds.count("promoted") == 1 and kinds.count("rejected") == 1
    await desk.publish_live()  # the Models screen's live row of the new prod model
    assert winner not in ctx.bus.snapshot("model_live")  # its prod book has not traded yet
    assert ctx.bus.snapshot("model_live") == {}


@pytest.mark.trio
async def test_two_shadows_that_pass_the_same_night_give_one_prod(make_ctx, autojump_clock):
    """Finding 1: both shadows of group t1-a were promoted at the same timestamp."""
    ctx = make_ctx(speed=60, start=START + 8 * 86_400)
    a, b = add_model(ctx, "a", 1.0), add_model(ctx, "b", 1.0, kind="mlp")
    for m, drift in ((a, 0.0002), (b, 0.0003)):
        shadow_since(ctx, m, START)
        record_shadow_days(ctx, m, 7.5, drift=drift)
    await desk_of(ctx).nightly()
    rows = ctx.store.store.sql("SELECT grp, count(*) FROM ml_models WHERE mode = 'prod' "
                               "GROUP BY 1")
    assert rows == [("t1-a", 1)]
    assert get_model(ctx.store.store, b)["mode"] == "prod"  # the better shadow
    assert get_model(ctx.store.store, a)["mode"] == "rejected"
    reason = ctx.store.store.sql("SELECT reason FROM model_transitions WHERE model_id = ? "
                                 "AND to_mode = 'rejected'", [a])[0][0]
    assert f"but {b} of the same group was promoted" in reason


@pytest.mark.trio
async def test_too_early_or_frozen_means_wait(make_ctx, autojump_clock):
    ctx = make_ctx(speed=60, start=START + 8 * 86_400)
    m = add_model(ctx, "young", 1.0)
    shadow_since(ctx, m, START + 5 * 86_400)  # three days in shadow
    record_shadow_days(ctx, m, 7.5, drift=0.0002)
    desk = desk_of(ctx)
    await desk.nightly()
    assert get_model(ctx.store.store, m)["mode"] == "shadow"
    ctx.store.store.sql("UPDATE ml_models SET mode_since = ?, shadow_started = ? "
                        "WHERE model_id = ?", [START, START, m])
    record_shadow_days(ctx, m, 7.5, drift=0.0002)
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
        ctx.store.store.sql("INSERT INTO equity (ts, equity, wallet) VALUES (?, ?, ?)",
                            [now_ms - (4 - i) * 86_400_000, eq, eq])
    figures = await risk.check(ctx, Notifier(ctx.bus, None))
    assert figures["drawdown"] == pytest.approx((104_000 - 95_000) / 104_000)
    assert ctx.bus.deploys_frozen
    assert ctx.bus.switch_meta(DEPLOYS_FROZEN)["actor"] == "risk"
    ctx.store.store.sql("INSERT INTO equity (ts, equity, wallet) VALUES (?, ?, ?)", [now_ms, 103_000, 103_000])
    await risk.check(ctx, Notifier(ctx.bus, None))
    assert not ctx.bus.deploys_frozen  # recovered below 4%

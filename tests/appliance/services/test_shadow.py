"""The shadow desk with a real registry: starting shadows, the nightly decision, freezes."""

from __future__ import annotations

import json

import numpy as np
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
from models.metrics import deflated_sharpe_ratio, probabilistic_sharpe_ratio
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
    rets = [drift + (0.0004 if i % 2 else -0.0004) for i in range(int(days * 288))]
    return record_shadow_returns(ctx, model_id, rets, trades=trades)


def record_shadow_returns(ctx, model_id, rets, group="t1-a", trades=30):
    store = ctx.store.store
    since = get_model(store, model_id)["mode_since"]
    book_id = book_id_of("shadow", model_id, since)
    start_ms = int(since * 1000)
    points, equity = [], 1000.0
    for r in rets:
        equity *= 1 + float(r)
        points.append(equity)
    store.sql("INSERT INTO book_equity SELECT unnest(?::BIGINT[]), ?, unnest(?::DOUBLE[]), "
              "unnest(?::VARCHAR[])",
              [[start_ms + (i + 1) * 300_000 for i in range(len(points))], book_id, points,
               [repr(e) for e in points]])
    save_book(store, Book(book_id, model_id, "shadow", group, start_ms, 1000.0, equity,
                          exact=False, trades=trades, fills=3 * trades), start_ms)


def tried_before(ctx, run_id, group, started, study=None):
    """An earlier candidate of ``group`` that was shadowed at ``started`` and rejected."""
    receipt = fake_run(ctx.cfg.state_path, run_id, 1.0, group, symbols=("BTCUSDT",))
    if study is not None:
        receipt["metrics"]["study"] = study
    store = ctx.store.store
    lifecycle.register(store, receipt, now=started - 3600)
    lifecycle.start_shadow(store, f"m-{run_id}", actor="test", reason="t", now=started)
    lifecycle.reject(store, f"m-{run_id}", actor="test", reason="t", now=started + 7 * 86_400)


def test_best_candidates_fill_the_shadow_slots():
    models = [{"model_id": f"m{i}", "group": "g", "mode": "candidate",
               "metrics": {"sharpe": s}} for i, s in enumerate([0.1, 2.0, 1.0])]
    models.append({"model_id": "s", "group": "g", "mode": "shadow", "metrics": {}})
    assert [m["model_id"] for m in pick_new_shadows(models, 2)] == ["m1"]


@pytest.mark.trio
async def test_a_candidate_superseded_while_the_desk_starts_it_is_skipped_not_a_crash(
        make_ctx, autojump_clock, monkeypatch):
    """Found by the month run: the nightly training registered a newer candidate of the group
    and kind (which rejects the older one) between the desk's read of the registry and its
    start_shadow; the LifecycleError crashed the shadow service. The desk skips that model
    and starts the newer one on its next pass."""
    from appliance.services import shadow

    ctx = make_ctx(speed=60, start=START)
    old = add_model(ctx, "old", 1.0)
    real = shadow.list_models

    def read_then_retrain(store):
        models = real(store)
        if not any(m["model_id"] == "m-new" for m in models):
            lifecycle.register(store, fake_run(ctx.cfg.state_path, "new", 0.5, "t1-a", "rf",
                                               symbols=("BTCUSDT",)), now=START)
        return models

    monkeypatch.setattr(shadow, "list_models", read_then_retrain)
    desk = desk_of(ctx)
    await desk.start_shadows()
    assert get_model(ctx.store.store, old)["mode"] == "rejected"  # superseded, not shadowed
    await desk.start_shadows()
    assert get_model(ctx.store.store, "m-new")["mode"] == "shadow"


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


@pytest.mark.trio
async def test_the_dsr_counts_the_groups_shadows_in_the_look_back_window(make_ctx,
                                                                        autojump_clock):
    """Finding 6: each shadow was judged alone, however many its group had tried."""
    ctx = make_ctx(speed=60, start=START + 8 * 86_400)  # window: the 90 days up to now
    assert ctx.cfg.shadow.trials_lookback_days == 90
    tried_before(ctx, "old", "t1-a", START - 100 * 86_400)  # before the window
    tried_before(ctx, "tried1", "t1-a", START - 60 * 86_400)
    tried_before(ctx, "tried2", "t1-a", START - 30 * 86_400)
    for i in range(3):  # one AutoML study: one trial
        tried_before(ctx, f"study{i}", "t1-a", START - (20 - i) * 86_400, study="s-42")
    tried_before(ctx, "elsewhere", "t2-a", START - 10 * 86_400)  # another group's
    noise = np.random.default_rng(4).standard_normal(int(7.5 * 288))
    rets = 0.0002 + 0.004 * (noise - noise.mean()) / noise.std(ddof=1)  # per-bar Sharpe 0.05
    judged, alone = add_model(ctx, "judged", 1.0), add_model(ctx, "alone", 1.0, group="t2-a")
    for m, group in ((judged, "t1-a"), (alone, "t2-a")):
        shadow_since(ctx, m, START)
        record_shadow_returns(ctx, m, rets, group=group)
    await desk_of(ctx).nightly()
    checks = {e["data"]["model_id"]: e["data"]
              for e in ctx.bus.events_since(0, ["shadow_check"])}
    # t1-a: judged, tried1, tried2 and the study; t2-a: alone and elsewhere
    assert (checks[judged]["trials"], checks[alone]["trials"]) == (4, 2)
    ppy = 105_120.0
    assert checks[judged]["psr"] == pytest.approx(probabilistic_sharpe_ratio(rets, 0.0, ppy))
    assert checks[judged]["psr"] > 0.95  # alone it would have passed
    assert checks[judged]["dsr"] == pytest.approx(deflated_sharpe_ratio(rets, 4, ppy))
    assert checks[alone]["dsr"] == pytest.approx(deflated_sharpe_ratio(rets, 2, ppy))
    assert checks[judged]["dsr"] < 0.95 < checks[alone]["dsr"]
    assert get_model(ctx.store.store, judged)["mode"] == "rejected"
    assert get_model(ctx.store.store, alone)["mode"] == "prod"
    reason, details = ctx.store.store.sql(
        "SELECT reason, details FROM audit_log WHERE action = ?", [f"rejected {judged}"])[0]
    assert "DSR" in reason and "over 4 trials" in reason
    details = json.loads(details)
    assert details["trials"] == 4 and details["dsr"] == pytest.approx(checks[judged]["dsr"])
    assert details["psr"] == pytest.approx(checks[judged]["psr"])


@pytest.mark.trio
async def test_whoever_sees_the_shadow_event_then_lists_the_models_sees_it_in_shadow(
        make_ctx, autojump_clock):
    """Found by CI: `methtrader models` reads the bus's registry snapshot while `run` holds
    DuckDB, and that snapshot was refreshed only by the training service's pass, so an operator
    (or the TUI) who saw the `model_transition` event listed the model still as a candidate."""
    from appliance.bus import Bus
    from appliance.contracts import Event, Snapshot

    ctx = make_ctx(speed=60, start=START)
    model_id = add_model(ctx, "r1", 1.0)
    await desk_of(ctx).start_shadows()
    with Bus(ctx.cfg.state_path / "bus") as bus:
        (event,) = bus.events_since(0, [Event.MODEL_TRANSITION])
        assert event["data"] == {**event["data"], "model_id": model_id, "to_mode": "shadow"}
        # what `methtrader models` lists while run holds the file (commands.list_registry)
        listed = {m["model_id"]: m["mode"] for m in bus.snapshot(Snapshot.REGISTRY)}
    assert listed == {model_id: "shadow"}

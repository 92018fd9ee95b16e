import shutil
from dataclasses import replace

import pytest
import trio

from appliance.exchange.base import ExchangeError
from appliance.jobs import Jobs
from appliance.services import datasets
from data.lake import Lake


@pytest.mark.trio
async def test_new_pairs_get_a_dataset_a_manifest_and_a_feature_job(make_ctx, state_dir,
                                                                    autojump_clock):
    ctx = make_ctx(speed=60)
    ctx.cfg = replace(ctx.cfg, datasets=replace(ctx.cfg.datasets, days=3))
    ctx.bus.set_tradable_pairs(["BTCUSDT", "ETHUSDT"])
    jobs = Jobs(state_dir)
    try:
        with trio.move_on_after(120):  # two market hours
            await datasets.run(ctx, jobs)
        rows = {(d["symbol"], d["interval"]): d for d in await ctx.store.call("datasets")}
        assert set(rows) == {(s, i) for s in ("BTCUSDT", "ETHUSDT")
                             for i in ("1m", "5m", "1h", "funding")}
        btc = rows[("BTCUSDT", "1m")]
        assert btc["rows"] >= 3 * 1440 and btc["missing"] == 0 and len(btc["sha256"]) == 64
        assert rows[("BTCUSDT", "5m")]["rows"] == -(-btc["rows"] // 5)
        lake = Lake(state_dir / "lake")
        assert lake.manifest("BTCUSDT").sha256 == btc["sha256"]
        assert {m.dataset_id for m in lake.manifests()} >= {"BTCUSDT-1m", "ETHUSDT-1h",
                                                            "BTCUSDT-funding"}
        # the pair's funding rates over the same days, next to its candles
        end = btc["end_time"] + 60_000
        stored = lake.read_funding("BTCUSDT")
        assert [tuple(r) for r in stored] == ctx.exchange.market.funding_rates(
            "BTCUSDT", end - 3 * 86_400_000, end)
        assert len(stored) in (9, 10) and rows[("BTCUSDT", "funding")]["rows"] == len(stored)
        assert lake.funding_manifest("BTCUSDT").sha256 == rows[("BTCUSDT", "funding")]["sha256"]
        assert ctx.metrics.datasets_built_total._value.get() == 2
        assert jobs.pending() == 2  # one feature job per new dataset
        assert ctx.bus.snapshot("backfill") == {"BTCUSDT": 100.0, "ETHUSDT": 100.0}
        percents = [e["data"]["percent"] for e in ctx.bus.events_since(0, ["data_source_update"])
                    if e["data"].get("symbol") == "BTCUSDT"]
        assert percents == sorted(percents) and percents[0] == 0.0 and percents[-1] == 100.0

        ctx.bus.set_tradable_pairs(["BTCUSDT", "ETHUSDT", "SOLUSDT"])
        with trio.move_on_after(120):
            await datasets.run(ctx, jobs)
        assert ctx.metrics.datasets_built_total._value.get() == 3  # only the new pair
    finally:
        jobs.close()


async def btc_built(make_ctx):
    """A context whose datasets service has built BTCUSDT's last 3 days (a market hour)."""
    ctx = make_ctx(speed=60)
    ctx.cfg = replace(ctx.cfg, datasets=replace(ctx.cfg.datasets, days=3))
    ctx.bus.set_tradable_pairs(["BTCUSDT"])
    with trio.move_on_after(60):
        await datasets.run(ctx, None)
    return ctx


@pytest.mark.trio
async def test_a_damaged_day_in_the_lake_is_refetched_not_a_crash_loop(make_ctx, state_dir,
                                                                      autojump_clock):
    """Issue 11 #7: a torn day file is moved aside and fetched again on the next build."""
    ctx = await btc_built(make_ctx)
    lake = Lake(state_dir / "lake")
    built = lake.manifest("BTCUSDT")
    victim = lake.files("1m", "BTCUSDT")[1]
    victim.write_bytes(b"\0" * 512)

    ctx2 = make_ctx(speed=60, start=ctx.clock.now())
    ctx2.cfg = ctx.cfg
    await ctx2.store.call("sql", "DELETE FROM datasets")  # a new pair again: rebuilt at once
    for m in (state_dir / "lake" / "manifests").glob("*.json"):
        m.unlink()
    with trio.move_on_after(60):
        await datasets.run(ctx2, None)
    assert lake.manifest("BTCUSDT").rows >= built.rows
    assert victim.exists() and victim.stat().st_size > 512
    assert len(list((state_dir / "lake" / "quarantine").rglob("*.corrupt-*"))) == 1


@pytest.mark.trio
async def test_a_lost_lake_is_built_again_and_a_lost_old_day_comes_back_at_the_refresh(
        make_ctx, state_dir, autojump_clock):
    """DuckDB still records the datasets but the lake lost them: a deleted lake is backfilled
    again from scratch at the next start, and an old day that went missing (deleted, or
    quarantined as damaged) is fetched again at the next daily refresh."""
    ctx = await btc_built(make_ctx)
    lake = Lake(state_dir / "lake")
    built = lake.manifest("BTCUSDT")
    shutil.rmtree(state_dir / "lake")

    ctx2 = make_ctx(speed=60, start=ctx.clock.now())
    ctx2.cfg = ctx.cfg
    with trio.move_on_after(60):
        await datasets.run(ctx2, None)
    assert lake.manifest("BTCUSDT").rows >= built.rows

    old_day = lake.files("1m", "BTCUSDT")[1]
    old_day.unlink()
    ctx3 = make_ctx(speed=60, start=ctx2.clock.now())
    ctx3.cfg = ctx.cfg
    with trio.move_on_after(30):  # half a market hour: no refresh yet
        await datasets.run(ctx3, None)
    assert not old_day.exists()
    with trio.move_on_after(86_400 / 60 + 120):  # past the daily refresh
        await datasets.run(ctx3, None)
    assert old_day.exists() and lake.manifest("BTCUSDT").missing == 0


@pytest.mark.trio
async def test_an_exchange_outage_degrades_the_backfill_and_it_resumes_after(make_ctx,
                                                                           autojump_clock):
    """A 5-minute exchange-drop left datasets failed: each restart met the outage again."""
    ctx = make_ctx(speed=60)
    ctx.cfg = replace(ctx.cfg, datasets=replace(ctx.cfg.datasets, days=2))
    ctx.bus.set_tradable_pairs(["BTCUSDT"])
    down = True
    klines = ctx.exchange.klines_array

    async def flaky(*args, **kwargs):
        if down:
            raise ExchangeError("/v5/market/kline: RemoteProtocolError: the venue is down")
        return await klines(*args, **kwargs)

    ctx.exchange.klines_array = flaky
    async with trio.open_nursery() as nursery:
        nursery.start_soon(datasets.run, ctx, None)
        await trio.sleep(30)  # wall seconds of outage: it would have crashed at once
        assert ctx.degraded["datasets"].startswith("exchange outage")
        down = False
        await trio.sleep(60)
        assert "datasets" not in ctx.degraded
        nursery.cancel_scope.cancel()
    kinds = [e["data"]["kind"] for e in ctx.bus.events_since(0, ["incident"])]
    assert kinds == ["outage", "recovered"]
    assert {d["symbol"] for d in await ctx.store.call("datasets")} == {"BTCUSDT"}

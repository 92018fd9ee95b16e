"""Housekeeping on a real DuckDB file and the virtual clock: at 03:30 market time it deletes
the drift rows older than the drift rule reads back plus a day, and keeps every row a restart
of the drift service needs."""

from __future__ import annotations

import pytest
import trio

from appliance.drift_store import PassRow, kept_ms, load_history, save_passes
from appliance.services import housekeeping

HOUR_MS = 3_600_000
DAYS = 20


def drift_rows(store, end_ms: int) -> None:
    """A pass per hour for DAYS days before ``end_ms``, for two symbols."""
    save_passes(store, [PassRow(end_ms - h * HOUR_MS, symbol, 0.05, 0.1, "m-1", "t1-a",
                                {"ret_1": 0.05}, 0.2, "ok")
                        for h in range(1, DAYS * 24 + 1) for symbol in ("BTCUSDT", "ETHUSDT")])


@pytest.mark.trio
async def test_old_drift_rows_go_at_night_and_the_rules_history_stays(make_ctx, autojump_clock):
    ctx = make_ctx()
    start_ms = int(ctx.clock.now() * 1000)
    drift_rows(ctx.store.store, start_ms)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(housekeeping.run, ctx)
        await trio.sleep(2 * 3600 / 60)  # two market hours: not yet 03:30
        assert ctx.store.store.sql("SELECT count(*) FROM drift")[0][0] == 2 * DAYS * 24
        await trio.sleep(2 * 3600 / 60)  # past 03:30
        nursery.cancel_scope.cancel()
    at_ms = start_ms + int(3.5 * HOUR_MS)
    cutoff = at_ms - kept_ms(ctx.cfg.drift) - housekeeping.DRIFT_MARGIN_MS
    left = [t for (t,) in ctx.store.store.sql("SELECT ts FROM drift ORDER BY ts")]
    assert min(left) >= cutoff and min(left) - cutoff < HOUR_MS  # only the old ones went
    assert len(left) == 2 * ((start_ms - min(left)) // HOUR_MS)
    assert len(left) < 2 * DAYS * 24
    # the drift service's restart reads back the rule's whole history, and more
    needed = load_history(ctx.store.store, at_ms - kept_ms(ctx.cfg.drift))
    assert len(needed) == len([t for t in left if t >= at_ms - kept_ms(ctx.cfg.drift)])
    assert min(t for t, *_ in needed) < at_ms - kept_ms(ctx.cfg.drift) + HOUR_MS

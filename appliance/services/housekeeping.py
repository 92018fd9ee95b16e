"""Housekeeping: nightly, per-bar rows older than ``store.retention_days`` are compacted into
daily aggregates (:mod:`appliance.retention`), and ``drift`` rows older than the drift rule
needs (its history, plus a day) are deleted (:func:`appliance.drift_store.prune`), so the
DuckDB file does not grow without bound."""

from __future__ import annotations

from appliance.context import ServiceContext
from appliance.drift_store import kept_ms, prune
from appliance.logs import service_logger
from appliance.retention import compact
from appliance.schedule import DAY_S, next_daily, parse_hhmm

NAME = "housekeeping"
AT = "03:30"  # market time, after the nightly training and shadow verdicts
DRIFT_MARGIN_MS = 86_400_000  # drift rows kept beyond what the drift service reads back


async def run(ctx: ServiceContext) -> None:
    log = service_logger(NAME)
    at = parse_hhmm(AT)
    while True:
        ctx.beat(NAME)
        await ctx.clock.sleep_until(next_daily(ctx.clock.now(), at))
        now = ctx.clock.now()
        before = int((now - ctx.cfg.store.retention_days * DAY_S) * 1000)
        gone = await ctx.store.run(compact, ctx.store.store, before)
        if any(gone.values()):
            log.info("old rows compacted into daily aggregates", **gone)
        drift_before = int(now * 1000) - kept_ms(ctx.cfg.drift) - DRIFT_MARGIN_MS
        if pruned := await ctx.store.run(prune, ctx.store.store, drift_before):
            log.info("old drift rows deleted", drift=pruned)

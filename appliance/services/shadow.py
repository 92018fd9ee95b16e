"""Layer 4, shadow deployment and promotion.

* A candidate becomes ``shadow`` (the best by validation Sharpe first, at most
  ``max_shadows_per_group`` per group, none while deploys are frozen) and paper-trades at 1% size
  on the same bars as prod (the trading engine runs it).
* Nightly (market time) each shadow's own per-bar equity gives its Sharpe, trade count and PSR;
  once it has run ``shadow.period`` (7 days) the promotion rule decides: promote, reject, or
  wait. At most one shadow of a group is promoted a night (the best by shadow Sharpe among
  those that passed; the others that passed are rejected, named after the winner). Every mode
  change goes through :mod:`appliance.lifecycle` (one transaction, audited, evented, notified;
  the replaced prod model is retired, not deleted, so it can be rolled back to).
* Parity audit, nightly: the backtester replays each model's own per-bar targets over the same
  closes and the result is compared with the P&L the model actually realised; the divergence is
  the ``parity_divergence{model_id}`` metric and above ``shadow.parity_bound`` an incident.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from appliance.bus import DEPLOYS_FROZEN
from appliance.context import ServiceContext
from appliance.ledger_store import model_bars, model_equity
from appliance.logs import service_logger
from appliance.notify import Notifier
from appliance.promotion import PromotionRules, ShadowRecord, decide, shadow_stats
from appliance.schedule import duration_s, next_daily, parse_hhmm
from appliance import lifecycle
from appliance.store import Store
from models.backtest import backtest
from models.metrics import periods_per_year
from models.registry import list_models

NAME = "shadow"
BAR_MS = {"5m": 300_000, "1h": 3_600_000}


def pick_new_shadows(models: list[dict[str, Any]], per_group: int) -> list[dict[str, Any]]:
    """Candidates to start shadowing: the best by validation Sharpe, up to the group's room."""
    out = []
    groups = {m["group"] for m in models}
    for g in sorted(groups):
        shadows = [m for m in models if m["group"] == g and m["mode"] == "shadow"]
        room = per_group - len(shadows)
        candidates = sorted((m for m in models if m["group"] == g and m["mode"] == "candidate"),
                            key=lambda m: -(m["metrics"] or {}).get("sharpe", -math.inf))
        out += candidates[:max(0, room)]
    return out


def equity_returns(points: list[tuple[int, float]]) -> np.ndarray:
    eq = np.array([e for _, e in points], dtype=float)
    if len(eq) < 2:
        return np.zeros(0)
    return np.diff(eq) / eq[:-1]


def parity_divergence(store: Store, model_id: str, since_ms: int, taker_fee: float,
                      slippage: float) -> float | None:
    """|simulated − realised| total return of a model over its bars since ``since_ms``.

    Simulated: the vectorised backtester on the model's own per-bar targets (fractions of its
    book's equity) and closes, summed over its symbols. Realised: its book's recorded equity.
    A shadow book is 1% of the capital, so returns (not amounts) are compared.
    """
    bars = model_bars(store, model_id, since_ms)
    points = model_equity(store, model_id, since_ms)
    if len(points) < 3 or not bars:
        return None
    by_symbol: dict[str, list[tuple[int, float, float]]] = {}
    for b in bars:
        by_symbol.setdefault(b["symbol"], []).append((b["ts"], b["close"], b["target"]))
    sim = 0.0
    for rows in by_symbol.values():
        close = np.array([r[1] for r in rows])
        target = np.array([r[2] for r in rows])
        if len(close) >= 2:
            sim += float(backtest(close, target, taker_fee=taker_fee, slippage=slippage)
                         .equity[-1] - 1.0)
    realised = points[-1][1] / points[0][1] - 1.0
    return abs(sim - realised)


class ShadowDesk:
    def __init__(self, ctx: ServiceContext, notifier: Notifier,
                 life: lifecycle.Lifecycle) -> None:
        self.ctx, self.notifier, self.life = ctx, notifier, life
        cfg = ctx.cfg.shadow
        self.rules = PromotionRules(sharpe_margin=cfg.sharpe_margin, min_trades=cfg.min_trades,
                                    psr_threshold=cfg.psr_threshold,
                                    period_days=duration_s(cfg.period) / 86_400)
        self.nightly_s = parse_hhmm(cfg.nightly_at)
        self.next_nightly = next_daily(ctx.clock.now(), self.nightly_s)
        self.log = service_logger(NAME)
        self.parity: dict[str, float] = {}  # model_id -> last nightly divergence

    async def start_shadows(self) -> None:
        if self.ctx.bus.switch(DEPLOYS_FROZEN):
            return
        models = await self.ctx.store.run(list_models, self.ctx.store.store)
        for m in pick_new_shadows(models, self.ctx.cfg.shadow.max_shadows_per_group):
            await self.life.apply(lifecycle.start_shadow, m["model_id"], actor=NAME,
                                  reason="best candidate of its group "
                                         f"(validation Sharpe {(m['metrics'] or {}).get('sharpe')})",
                                  now=self.ctx.clock.now())

    def record(self, m: dict[str, Any], store: Store, now: float) -> ShadowRecord:
        since = int((m["shadow_started"] or now) * 1000)
        rets = equity_returns(model_equity(store, m["model_id"], since))
        trades = store.sql("SELECT count(*) FROM fills WHERE model_id = ? AND mode = 'shadow'",
                           [m["model_id"]])[0][0]
        bar_ms = BAR_MS[m["timeframe"]] if m["timeframe"] in BAR_MS else 300_000
        sharpe, _, psr = shadow_stats(rets, np.ones_like(rets), periods_per_year(bar_ms))
        return ShadowRecord(m["model_id"], (now - (m["shadow_started"] or now)) / 86_400,
                            float(sharpe), int(trades), float(psr))

    async def nightly(self) -> None:
        store = self.ctx.store.store
        now = self.ctx.clock.now()
        models = await self.ctx.store.run(list_models, store)
        frozen = self.ctx.bus.switch(DEPLOYS_FROZEN)
        for group in sorted({m["group"] for m in models if m["mode"] == "shadow"}):
            await self.judge_group(group, models, now, frozen)
        await self.parity_audit(await self.ctx.store.run(list_models, store), now)
        self.next_nightly = next_daily(now, self.nightly_s)

    async def judge_group(self, group: str, models: list[dict[str, Any]], now: float,
                          frozen: bool) -> None:
        """Verdicts for one group's shadows; at most one promotion."""
        store = self.ctx.store.store
        prod = next((p for p in models if p["group"] == group and p["mode"] == "prod"), None)
        verdicts = []
        for m in [m for m in models if m["group"] == group and m["mode"] == "shadow"]:
            rec = await self.ctx.store.run(self.record, m, store, now)
            prod_sharpe = None
            if prod is not None:
                prod_sharpe = (await self.ctx.store.run(self.record, prod, store, now)).sharpe
            d = decide(rec, prod_sharpe, deploys_frozen=frozen,
                       prod_pinned=bool(prod and prod.get("pinned")), rules=self.rules)
            self.ctx.bus.publish("shadow_check", {"model_id": m["model_id"], "action": d.action,
                                                  "reason": d.reason, "sharpe": rec.sharpe,
                                                  "trades": rec.trades, "psr": rec.psr,
                                                  "days": rec.days_in_shadow}, service=NAME,
                                 market_ts=now)
            verdicts.append((m, rec, d))
        passed = [v for v in verdicts if v[2].action == "promote"]
        best = max(passed, key=lambda v: v[1].sharpe)[0]["model_id"] if passed else None
        for m, rec, d in verdicts:
            figures = {"sharpe": rec.sharpe, "trades": rec.trades, "psr": rec.psr}
            if d.action == "promote" and m["model_id"] == best:
                await self.life.apply(lifecycle.promote, m["model_id"], actor=NAME,
                                      reason=d.reason, now=now, details=figures,
                                      keep_retired=self.ctx.cfg.lifecycle.keep_retired)
            elif d.action == "promote":
                await self.life.apply(lifecycle.reject, m["model_id"], actor=NAME, now=now,
                                      reason=f"passed ({d.reason}) but {best} of the same "
                                             "group was promoted tonight", details=figures)
            elif d.action == "reject":
                await self.life.apply(lifecycle.reject, m["model_id"], actor=NAME,
                                      reason=d.reason, now=now, details=figures)

    async def publish_live(self) -> None:
        """Live figures of the shadow and prod models for the Models screen (bus snapshot
        ``model_live``): Sharpe, trades and P&L of their own books, days in shadow, parity."""
        store = self.ctx.store.store
        now = self.ctx.clock.now()
        live = {}
        for m in await self.ctx.store.run(list_models, store):
            if m["mode"] not in ("shadow", "prod"):
                continue
            rec = await self.ctx.store.run(self.record, m, store, now)
            points = await self.ctx.store.run(model_equity, store, m["model_id"], 0)
            live[m["model_id"]] = {
                "sharpe": rec.sharpe, "trades": rec.trades,
                "pnl": points[-1][1] - points[0][1] if points else None,
                "days_in_shadow": rec.days_in_shadow if m["mode"] == "shadow" else None,
                "parity": self.parity.get(m["model_id"])}
        self.ctx.bus.put_snapshot("model_live", live)

    async def parity_audit(self, models: list[dict[str, Any]], now: float) -> None:
        sim = self.ctx.cfg.sim
        for m in [m for m in models if m["mode"] in ("shadow", "prod")]:
            div = await self.ctx.store.run(parity_divergence, self.ctx.store.store,
                                           m["model_id"], int((now - 86_400) * 1000),
                                           sim.taker_fee, sim.slippage_bps / 10_000)
            if div is None:
                continue
            self.ctx.metrics.parity_divergence.labels(m["model_id"]).set(div)
            self.parity[m["model_id"]] = div
            if div > self.ctx.cfg.shadow.parity_bound:
                msg = (f"{m['model_id']}: backtest and realised P&L differ by {div:.2%} over "
                       f"the last day (bound {self.ctx.cfg.shadow.parity_bound:.2%})")
                await self.ctx.store.call("record_incident", NAME, "parity", msg, None)
                self.ctx.bus.publish("incident", {"service": NAME, "kind": "parity",
                                                  "message": msg}, service=NAME)


async def run(ctx: ServiceContext, notifier: Notifier, life: lifecycle.Lifecycle) -> None:
    desk = ShadowDesk(ctx, notifier, life)
    while True:
        ctx.beat(NAME)
        await desk.start_shadows()
        if ctx.clock.now() >= desk.next_nightly:
            await desk.nightly()
        await desk.publish_live()
        await ctx.clock.sleep_until(min(ctx.clock.now() + 600, desk.next_nightly))

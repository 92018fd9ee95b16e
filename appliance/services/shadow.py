"""Layer 4, shadow deployment and promotion.

* A candidate becomes ``shadow`` (the best by validation Sharpe first, at most
  ``max_shadows_per_group`` per group, none while deploys are frozen) and paper-trades at 1% size
  on the same bars as prod (the trading engine runs it).
* Nightly (market time) each shadow's own book (:mod:`appliance.book_records`) gives its Sharpe,
  trades (entries and flips), PSR and deflated Sharpe ratio (DSR) over the group's trials (see
  :func:`group_trials`), and the prod model's book its Sharpe over the same bars;
  once it has run ``shadow.period`` (7 days) the promotion rule decides: promote, reject, or
  wait. At most one shadow of a group is promoted a night (the best by shadow Sharpe among
  those that passed; the others that passed are rejected, named after the winner). Every mode
  change goes through :mod:`appliance.lifecycle` (one transaction, audited, evented, notified;
  the replaced prod model is retired, not deleted, so it can be rolled back to).
* Parity audit, nightly: the backtester replays each book's own per-bar targets over the same
  closes and the result is compared with the P&L the book actually realised; the divergence is
  the ``parity_divergence{model_id}`` metric and above ``shadow.parity_bound`` an incident.
"""

from __future__ import annotations

import math
from typing import Any

from appliance import lifecycle
from appliance.book_records import (current_book_id, live_figures, parity_divergence,
                                    shadow_record, sharpe_over)
from appliance.bus import DEPLOYS_FROZEN
from appliance.context import ServiceContext
from appliance.contracts import Event, Snapshot
from appliance.exchange.base import ExchangeError
from appliance.ledger_store import refused_orders
from appliance.logs import service_logger
from appliance.notify import Notifier
from appliance.promotion import PromotionRules, decide
from appliance.schedule import duration_s, next_daily, parse_hhmm
from appliance.store import Store
from models.costs import CostModel, quoted_half_spread
from models.registry import list_models

NAME = "shadow"


def validation_score(m: dict[str, Any]) -> float:
    """How a candidate ranks: its walk-forward score (the folds' mean Sharpe less one standard
    error), or the validation Sharpe of a run recorded before walk-forward."""
    metrics = m["metrics"] or {}
    value = metrics.get("wf_score", metrics.get("sharpe"))
    return float(value) if value is not None and value == value else -math.inf


def count_trials(shadows: list[tuple[str, str | None]]) -> int:
    """Independent tries among ``(model_id, study)`` pairs: each model is one, except that the
    models of one AutoML study (the same non-null study id) are one together, since the study
    corrects for its own trials. At least 1."""
    return max(1, len({("study", s) if s is not None else ("model", m) for m, s in shadows}))


def group_trials(store: Store, model: dict[str, Any], since_s: float) -> int:
    """How many candidates the model's group tried since ``since_s`` (market time), the model
    itself included: every model of the group that entered shadow since then (the registry's
    ``shadow_started`` stamp; a model enters shadow at most once and its row is never deleted),
    with models whose ``metrics`` carry the same ``study`` key counted once."""
    rows = store.sql("SELECT model_id, json_extract_string(metrics, '$.study') FROM ml_models "
                     "WHERE grp = ? AND shadow_started >= ?", [model["group"], since_s])
    study = (model.get("metrics") or {}).get("study")
    own = (model["model_id"], None if study is None else str(study))
    return count_trials([(str(m), s) for m, s in rows] + [own])


def pick_new_shadows(models: list[dict[str, Any]], per_group: int) -> list[dict[str, Any]]:
    """Candidates to start shadowing: the best by validation score, up to the group's room."""
    out = []
    groups = {m["group"] for m in models}
    for g in sorted(groups):
        shadows = [m for m in models if m["group"] == g and m["mode"] == "shadow"]
        room = per_group - len(shadows)
        candidates = sorted((m for m in models if m["group"] == g and m["mode"] == "candidate"),
                            key=lambda m: -validation_score(m))
        out += candidates[:max(0, room)]
    return out


class ShadowDesk:
    def __init__(self, ctx: ServiceContext, notifier: Notifier,
                 life: lifecycle.Lifecycle) -> None:
        self.ctx, self.notifier, self.life = ctx, notifier, life
        cfg = ctx.cfg.shadow
        self.rules = PromotionRules(sharpe_margin=cfg.sharpe_margin, min_trades=cfg.min_trades,
                                    dsr_threshold=cfg.psr_threshold,
                                    period_days=duration_s(cfg.period) / 86_400)
        self.nightly_s = parse_hhmm(cfg.nightly_at)
        self.next_nightly = next_daily(ctx.clock.now(), self.nightly_s)
        self.trials_lookback_s = cfg.trials_lookback_days * 86_400
        self.log = service_logger(NAME)
        self.parity: dict[str, float] = {}  # model_id -> last nightly divergence

    async def start_shadows(self) -> None:
        if self.ctx.bus.switch(DEPLOYS_FROZEN):
            return
        models = await self.ctx.store.run(list_models, self.ctx.store.store)
        for m in pick_new_shadows(models, self.ctx.cfg.shadow.max_shadows_per_group):
            try:
                await self.life.apply(lifecycle.start_shadow, m["model_id"], actor=NAME,
                                      reason="best candidate of its group (walk-forward score "
                                             f"{validation_score(m):.3f})",
                                      now=self.ctx.clock.now())
            except lifecycle.LifecycleError as exc:
                # another actor moved it since the read (training superseded it); the
                # registry refused the move, and the next pass picks from fresh rows
                self.log.info("candidate changed before it could enter shadow",
                              model=m["model_id"], error=str(exc))

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
            trials = await self.ctx.store.run(group_trials, store, m,
                                              now - self.trials_lookback_s)
            rec = await self.ctx.store.run(shadow_record, store, m, now, trials)
            prod_sharpe = None
            if prod is not None:  # over the same bars: the shadow's period
                prod_sharpe = await self.ctx.store.run(sharpe_over, store, prod,
                                                       m["mode_since"] or now)
            d = decide(rec, prod_sharpe, deploys_frozen=frozen,
                       prod_pinned=bool(prod and prod.get("pinned")), rules=self.rules)
            self.ctx.bus.publish(Event.SHADOW_CHECK, {"model_id": m["model_id"], "action": d.action,
                                                  "reason": d.reason, "sharpe": rec.sharpe,
                                                  "trades": rec.trades, "psr": rec.psr,
                                                  "dsr": rec.dsr, "trials": rec.trials,
                                                  "days": rec.days_in_shadow}, service=NAME,
                                 market_ts=now)
            verdicts.append((m, rec, d))
        passed = [v for v in verdicts if v[2].action == "promote"]
        best = max(passed, key=lambda v: v[1].sharpe)[0]["model_id"] if passed else None
        for m, rec, d in verdicts:
            figures = {"sharpe": rec.sharpe, "trades": rec.trades, "psr": rec.psr,
                       "dsr": rec.dsr, "trials": rec.trials}
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
        ``model_live``): their current books' Sharpe, P&L, trades and fills, days in shadow,
        parity."""
        store = self.ctx.store.store
        now = self.ctx.clock.now()
        live = {}
        for m in await self.ctx.store.run(list_models, store):
            figures = await self.ctx.store.run(live_figures, store, m)
            if figures is None:
                continue
            figures["days_in_shadow"] = ((now - m["mode_since"]) / 86_400
                                         if m["mode"] == "shadow" else None)
            figures["parity"] = self.parity.get(m["model_id"])
            live[m["model_id"]] = figures
        self.ctx.bus.put_snapshot(Snapshot.MODEL_LIVE, live)

    async def parity_audit(self, models: list[dict[str, Any]], now: float) -> None:
        """Each prod and shadow book's last day replayed at the venue's costs (fee, slippage,
        quoted spreads, funding) vs its recorded equity."""
        since_ms = int((now - 86_400) * 1000)
        books = [(m, current_book_id(m)) for m in models if m["mode"] in ("shadow", "prod")]
        books = [(m, b) for m, b in books if b is not None]
        if not books:
            return
        costs, funding = await self.venue_costs(
            sorted({s for m, _ in books for s in m["symbols"]}), since_ms, int(now * 1000))
        for m, book_id in books:
            div = await self.ctx.store.run(parity_divergence, self.ctx.store.store, book_id,
                                           since_ms, m.get("timeframe") or "5m", costs, funding)
            if div is None:
                continue
            self.ctx.metrics.parity_divergence.labels(m["model_id"]).set(div)
            self.parity[m["model_id"]] = div
            refused = await self.ctx.store.run(refused_orders, self.ctx.store.store, book_id,
                                               since_ms)
            if refused and div > self.ctx.cfg.shadow.parity_bound:
                # the risk limits kept the book from its targets: the replay, which trades
                # every target, is not the strategy that could trade; reported, not an incident
                self.log.info("parity not comparable: the risk limits refused orders",
                              book=book_id, refused=refused, divergence=round(div, 6))
            elif div > self.ctx.cfg.shadow.parity_bound:
                msg = (f"{m['model_id']}: backtest and realised P&L of {book_id} differ by "
                       f"{div:.2%} over the last day (bound "
                       f"{self.ctx.cfg.shadow.parity_bound:.2%})")
                await self.ctx.store.call("record_incident", NAME, "parity", msg, None)
                self.ctx.bus.publish(Event.INCIDENT, {"service": NAME, "kind": "parity",
                                                  "message": msg}, service=NAME)


    async def venue_costs(self, symbols: list[str], since_ms: int, now_ms: int
                          ) -> tuple[CostModel, dict[str, list[tuple[int, float]]]]:
        """The costs the venue charges now: quoted half spreads, the account's fee rates and
        the funding rates since
        ``since_ms`` (each left out, with a warning, when the venue cannot say)."""
        sim = self.ctx.cfg.sim
        costs = CostModel(sim.taker_fee, sim.slippage_bps / 10_000)
        funding: dict[str, list[tuple[int, float]]] = {}
        try:
            quotes = {t.symbol: quoted_half_spread(t.bid, t.ask)
                      for t in await self.ctx.exchange.tickers() if t.bid and t.ask}
            costs = costs.with_spreads({s: h for s, h in quotes.items() if h is not None})
            costs = costs.with_fees(await self.ctx.exchange.fee_rates())
            for symbol in symbols:
                funding[symbol] = await self.ctx.exchange.funding_rates(symbol, since_ms,
                                                                        now_ms)
        except ExchangeError as exc:
            self.log.warning("parity audit without the venue's spreads or funding",
                             error=str(exc))
        return costs, funding


async def run(ctx: ServiceContext, notifier: Notifier, life: lifecycle.Lifecycle) -> None:
    desk = ShadowDesk(ctx, notifier, life)
    while True:
        ctx.beat(NAME)
        await desk.start_shadows()
        if ctx.clock.now() >= desk.next_nightly:
            await desk.nightly()
        await desk.publish_live()
        await ctx.clock.sleep_until(min(ctx.clock.now() + 600, desk.next_nightly))

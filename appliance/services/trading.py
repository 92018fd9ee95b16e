"""The trading engine: closed bars → models → target positions → risk checks → orders.

On each closed bar of the trading timeframe (5m) it:

1. builds the bar from the exchange's closed 1m candles (the lake's aggregation, so live bars
   are the bars the models trained on) and updates each symbol's incremental features — the
   same ``models.features`` code as training;
2. runs every prod and shadow model once, batched over its symbols (ONNX, verified by sha256);
3. prod: sizes a target by confidence and volatility, rounds it to the lot, turns the difference
   into an order, checks it against the kill switch and the risk limits *right before sending*,
   and sends it to the broker; fills, positions, equity and a ``trade`` event are recorded;
4. shadow: the same targets at ``shadow.size_fraction`` (1%) of the size, unrounded, filled by a
   paper book per model — measurements, not orders.

Every model's per-bar target and equity are stored (``model_bars``, ``model_equity``) for the
shadow evaluation and the parity audit. Positions are reconciled with the exchange at start and
hourly; a mismatch is an incident and halts the symbol until the books agree again.
"""

from __future__ import annotations

import time
from collections import deque
from decimal import Decimal
from typing import Any

import numpy as np
import trio

from appliance.bars import INTERVAL_MS, bars_from_minutes
from appliance.bus import MAINTENANCE_MODE
from appliance.context import ServiceContext
from appliance.domain import Fill, Instrument, OrderIntent, Side
from appliance.exchange.paper import PaperBroker
from appliance.ledger_store import (load_positions, record_equity, record_fill,
                                    record_model_bars, record_model_equity, record_order,
                                    upsert_position)
from appliance.logs import service_logger
from appliance.lifecycle import REGISTRY_VERSION  # bus counter: bumped on mode changes
from appliance.risk import AccountView, RiskLimits, check_order
from appliance.sizing import order_for, round_qty, target_fraction, target_qty
from models.features import FEATURE_NAMES, WARMUP_BARS, FeatureState, latest_features
from models.registry import RegistryError, list_models, verified_onnx_path
from models.serving import OnnxModel

NAME = "trading"
VOL = FEATURE_NAMES.index("vol_12")
HOUR_MS = 3_600_000


class TradingEngine:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        cfg = ctx.cfg.trading
        self.step_ms = INTERVAL_MS[cfg.timeframe]
        self.limits = RiskLimits(
            max_symbol_notional=Decimal(str(cfg.max_symbol_notional)),
            max_gross_exposure=Decimal(str(cfg.max_gross_exposure)),
            max_leverage=Decimal(str(cfg.max_leverage)),
            max_orders_per_minute=cfg.max_orders_per_minute,
            max_daily_loss=Decimal(str(cfg.max_daily_loss)))
        self.log = service_logger(NAME)
        self.states: dict[str, FeatureState] = {}
        self.rows: dict[str, deque[np.ndarray]] = {}
        self.last_bar: dict[str, int] = {}
        self.closes: dict[str, Decimal] = {}
        self.instruments: dict[str, Instrument] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, OnnxModel] = {}
        self.books: dict[str, PaperBroker] = {}
        self.registry_version = -1
        self.order_times: deque[float] = deque()
        self.halted: set[str] = set()
        self.day_start_equity: tuple[int, Decimal] | None = None
        self.seq = int(time.time() * 1000)
        self.shadow_fills: list[tuple[Fill, str]] = []  # recorded with the bar
        self.shadow_scale = Decimal(str(ctx.cfg.shadow.size_fraction))

    # -- models ---------------------------------------------------------------------------

    async def reload_models(self) -> None:
        version = self.ctx.bus.counter(REGISTRY_VERSION)
        if version == self.registry_version:
            return
        self.registry_version = version
        rows = await self.ctx.store.run(list_models, self.ctx.store.store)
        wanted = {m["model_id"]: m for m in rows if m["mode"] in ("prod", "shadow")}
        for model_id in list(self.sessions):
            if model_id not in wanted:
                del self.sessions[model_id]
        for model_id, m in wanted.items():
            if model_id in self.sessions:
                continue
            try:
                path = await self.ctx.store.run(verified_onnx_path, self.ctx.store.store,
                                                model_id)
                self.sessions[model_id] = await self.ctx.io(OnnxModel, path)
            except (RegistryError, OSError) as exc:
                await self._incident("model_refused", str(exc))
                continue
            if m["mode"] == "shadow" and model_id not in self.books:
                sim = self.ctx.cfg.sim
                self.books[model_id] = PaperBroker(
                    lambda s: float(self.closes[s]) if s in self.closes else None,
                    taker_fee=sim.taker_fee, slippage_bps=sim.slippage_bps,
                    starting_balance=sim.starting_balance * self.ctx.cfg.shadow.size_fraction)
        self.models = {k: v for k, v in wanted.items() if k in self.sessions}

    # -- bars and features ----------------------------------------------------------------

    async def update_bars(self, symbols: list[str], end_ms: int) -> list[str]:
        """Push every newly closed bar; returns the symbols whose features are warm."""
        warm = []
        for symbol in symbols:
            state = self.states.setdefault(symbol, FeatureState())
            rows = self.rows.setdefault(symbol, deque(maxlen=64))
            last = self.last_bar.get(symbol)
            start = (last + self.step_ms if last is not None
                     else end_ms - (WARMUP_BARS + 40) * self.step_ms)
            if start >= end_ms:
                if state.warm:
                    warm.append(symbol)
                continue
            minutes = await self._fetch(symbol, start, end_ms)
            for bar in bars_from_minutes(minutes, self.step_ms, end_ms):
                state.push(bar)
                self.last_bar[symbol] = int(bar[0])
                self.closes[symbol] = Decimal(repr(float(bar[4])))
                if state.warm:
                    rows.append(latest_features([state])[0])
            if state.warm and rows:
                warm.append(symbol)
        return warm

    async def _fetch(self, symbol: str, start: int, end: int) -> np.ndarray:
        fast = getattr(self.ctx.exchange, "klines_array", None)
        if fast is not None:
            return await fast(symbol, start, end)
        candles = await self.ctx.exchange.klines(symbol, "1m", start, end)
        return np.array([(c.open_time, c.open, c.high, c.low, c.close, c.volume, c.turnover)
                         for c in candles]).reshape(-1, 7)

    # -- one bar --------------------------------------------------------------------------

    async def on_bar(self, end_ms: int) -> None:
        symbols = self.ctx.bus.tradable_pairs() or []
        warm = await self.update_bars(symbols, end_ms)
        await self.reload_models()
        bar_ts = end_ms - self.step_ms
        t0 = time.perf_counter()
        balance = await self.ctx.exchange.balance()
        equity = balance.equity
        positions = {p.symbol: p.qty for p in balance.positions}
        model_rows, model_equity = [], {}
        for model_id, m in self.models.items():
            mine = [s for s in m["symbols"] if s in warm]
            if not mine:
                continue
            probs = self.sessions[model_id].predict(
                np.stack([self._window(s, self.sessions[model_id]) for s in mine]))
            book_equity = self.books[model_id].equity() if m["mode"] == "shadow" else None
            # paper books read the kill switch once a bar; prod reads it before every order
            paused = m["mode"] == "shadow" and self.ctx.bus.switch(MAINTENANCE_MODE)
            for symbol, p in zip(mine, probs):
                vol = float(self.rows[symbol][-1][VOL])
                fraction = target_fraction(p, vol, threshold=self.ctx.cfg.trading.threshold)
                model_rows.append((bar_ts, model_id, symbol, m["mode"],
                                   float(self.closes[symbol]), fraction, *map(float, p)))
                if m["mode"] == "prod":
                    await self._trade_prod(model_id, symbol, fraction, equity, positions, t0)
                elif not paused:  # the kill switch stops every engine, paper ones too
                    self._trade_shadow(model_id, symbol, fraction, end_ms, book_equity)
            if m["mode"] == "shadow":
                model_equity[model_id] = ("shadow", float(self.books[model_id].equity()))
        balance = await self.ctx.exchange.balance()
        for m in self.models.values():
            if m["mode"] == "prod":
                model_equity[m["model_id"]] = ("prod", float(balance.equity))
        fills, self.shadow_fills = self.shadow_fills, []
        await self.ctx.store.run(self._record_bar, bar_ts, model_rows, model_equity,
                                 float(balance.equity), float(balance.wallet), fills)

    def _record_bar(self, ts: int, rows: list[tuple], equities: dict[str, tuple[str, float]],
                    equity: float, wallet: float, shadow_fills: list[tuple[Fill, str]]) -> None:
        store = self.ctx.store.store
        record_model_bars(store, rows)
        record_model_equity(store, ts, equities)
        record_equity(store, ts, equity, wallet)
        for fill, model_id in shadow_fills:
            record_fill(store, fill, model_id, "shadow")
            pos = self.books[model_id].positions[fill.symbol]
            upsert_position(store, fill.symbol, "shadow", model_id, pos.qty, pos.avg_price,
                            pos.realized_pnl, fill.ts)

    def _window(self, symbol: str, model: OnnxModel) -> np.ndarray:
        rows = list(self.rows[symbol])
        need = model.lookback or 1
        if len(rows) < need:
            rows = [rows[0]] * (need - len(rows)) + rows
        return np.asarray(rows[-need:], dtype=np.float32)

    def _account(self, equity: Decimal, positions: dict[str, Decimal]) -> AccountView:
        now = time.monotonic()
        while self.order_times and self.order_times[0] < now - 60:
            self.order_times.popleft()
        day_pnl = Decimal(0)
        if self.day_start_equity is not None:
            day_pnl = equity - self.day_start_equity[1]
        return AccountView(equity=equity, positions=dict(positions), prices=dict(self.closes),
                           orders_last_minute=len(self.order_times), daily_pnl=day_pnl,
                           maintenance_mode=self.ctx.bus.switch(MAINTENANCE_MODE))

    async def _trade_prod(self, model_id: str, symbol: str, fraction: float, equity: Decimal,
                          positions: dict[str, Decimal], t0: float) -> None:
        if symbol in self.halted:
            return
        inst = self.instruments.get(symbol)
        price = self.closes[symbol]
        if inst is None or price <= 0:
            return
        target = round_qty(target_qty(fraction, equity, price), inst.qty_step)
        current = positions.get(symbol, Decimal(0))
        order = order_for(current, target, step=inst.qty_step, min_qty=inst.min_order_qty)
        if order is None:
            return
        await self.send(symbol, *order, model_id=model_id, positions=positions,
                        equity=equity, t0=t0)

    async def send(self, symbol: str, side: Side, qty: Decimal, reduce_only: bool, *,
                   model_id: str, positions: dict[str, Decimal], equity: Decimal,
                   t0: float | None = None) -> Fill | None:
        """Check one prod order against the kill switch and the limits, then send it."""
        price = self.closes.get(symbol, Decimal(0))
        self.seq += 1
        order_id = f"mt-{self.seq}"
        ts = int(self.ctx.clock.now() * 1000)
        refusal = check_order(symbol, side, qty, reduce_only, price,
                              self._account(equity, positions), self.limits)
        if refusal is not None:
            self.ctx.metrics.orders_refused_total.labels(refusal).inc()
            self.log.info("order refused", symbol=symbol, side=side.value, qty=str(qty),
                          reason=refusal)
            await self.ctx.store.run(record_order, self.ctx.store.store, order_id, ts, symbol,
                                     side.value, qty, model_id, "prod", "refused", refusal)
            return None
        intent = OrderIntent(symbol, side, qty, reduce_only=reduce_only, model_id=model_id,
                             order_link_id=order_id)
        with trio.CancelScope(shield=True):  # an order in flight is never abandoned
            if t0 is not None:
                self.ctx.metrics.trade_latency_ms.observe((time.perf_counter() - t0) * 1000)
            self.order_times.append(time.monotonic())
            fill = await self.ctx.exchange.place_order(intent)
            signed = fill.qty if side is Side.BUY else -fill.qty
            positions[symbol] = positions.get(symbol, Decimal(0)) + signed
            pos = next((p for p in await self.ctx.exchange.positions() if p.symbol == symbol),
                       None)
            await self.ctx.store.run(self._record_fill, order_id, ts, fill, model_id, pos)
        self.ctx.bus.publish("trade", {
            "ts_ms": fill.ts, "symbol": symbol, "side": side.value, "qty": str(fill.qty),
            "price": str(fill.price), "fee": str(fill.fee), "pnl": None, "model_id": model_id,
            "mode": "prod", "reduce_only": reduce_only}, service=NAME,
            market_ts=self.ctx.clock.now())
        return fill

    def _record_fill(self, order_id: str, ts: int, fill: Fill, model_id: str, pos) -> None:
        store = self.ctx.store.store
        record_order(store, order_id, ts, fill.symbol, fill.side.value, fill.qty, model_id,
                     "prod", "filled", price=fill.price)
        record_fill(store, fill, model_id, "prod")
        upsert_position(store, fill.symbol, "prod", "account",
                        pos.qty if pos else Decimal(0), pos.avg_price if pos else Decimal(0),
                        pos.realized_pnl if pos else Decimal(0), ts)

    def _trade_shadow(self, model_id: str, symbol: str, fraction: float, end_ms: int,
                      book_equity: Decimal) -> None:
        """Sized off the book's equity at the bar's start, as prod is off the account's."""
        book = self.books[model_id]
        price = self.closes[symbol]
        target = target_qty(fraction, book_equity, price)
        current = book.positions[symbol].qty if symbol in book.positions else Decimal(0)
        inst = self.instruments.get(symbol)
        if inst is not None and abs(target - current) < inst.qty_step * self.shadow_scale:
            return  # below 1% of a lot: prod could not trade it either (the books stay alike)
        order = order_for(current, target, step=None, min_qty=Decimal(0))
        if order is None:
            return
        side, qty, reduce_only = order
        fill = book.fill(OrderIntent(symbol, side, qty, model_id=model_id), end_ms)
        self.ctx.bus.publish("trade", {
            "ts_ms": fill.ts, "symbol": symbol, "side": side.value, "qty": str(fill.qty),
            "price": str(fill.price), "fee": str(fill.fee), "pnl": None, "model_id": model_id,
            "mode": "shadow"}, service=NAME, market_ts=self.ctx.clock.now())
        self.shadow_fills.append((fill, model_id))

    # -- kill switch: flatten -------------------------------------------------------------

    async def flatten(self, reason: str) -> dict[str, Any]:
        """Close every prod position with reduce-only orders (allowed under the kill switch)."""
        balance = await self.ctx.exchange.balance()
        positions = {p.symbol: p.qty for p in balance.positions}
        closed = []
        for symbol, qty in list(positions.items()):
            if qty == 0:
                continue
            side = Side.SELL if qty > 0 else Side.BUY
            if symbol not in self.closes:
                last = await self._fetch(symbol, int(self.ctx.clock.now() * 1000) - 600_000,
                                         int(self.ctx.clock.now() * 1000))
                if len(last):
                    self.closes[symbol] = Decimal(repr(float(last[-1, 4])))
            fill = await self.send(symbol, side, abs(qty), True, model_id="flatten",
                                   positions=positions, equity=balance.equity)
            if fill is not None:
                closed.append(symbol)
        self.log.warning("flattened", symbols=closed, reason=reason)
        return {"closed": closed}

    # -- reconciliation -------------------------------------------------------------------

    async def reconcile(self) -> list[str]:
        """Compare our books with the exchange's; halt (and report) every symbol that differs."""
        ours = {p["symbol"]: Decimal(p["qty"]) for p in
                await self.ctx.store.run(load_positions, self.ctx.store.store, "prod")}
        theirs = {p.symbol: p.qty for p in await self.ctx.exchange.positions()}
        mismatched = sorted(s for s in set(ours) | set(theirs)
                            if ours.get(s, Decimal(0)) != theirs.get(s, Decimal(0)))
        for symbol in mismatched:
            if symbol not in self.halted:
                await self._incident("reconciliation", f"{symbol}: our books say "
                                     f"{ours.get(symbol, 0)}, the exchange says "
                                     f"{theirs.get(symbol, 0)}; trading in {symbol} halted")
        resolved = self.halted - set(mismatched)
        for symbol in resolved:
            self.log.info("reconciled again; trading resumes", symbol=symbol)
        self.halted = set(mismatched)
        return mismatched

    async def _incident(self, kind: str, message: str) -> None:
        self.log.error(message, kind=kind)
        await self.ctx.store.call("record_incident", NAME, kind, message, None)
        self.ctx.bus.publish("incident", {"service": NAME, "kind": kind, "message": message},
                             service=NAME, market_ts=self.ctx.clock.now())

    async def refresh_instruments(self) -> None:
        self.instruments = {i.symbol: i for i in await self.ctx.exchange.instruments()}


async def run(ctx: ServiceContext, engine: TradingEngine) -> None:
    await engine.refresh_instruments()
    await engine.reconcile()
    checked_at = ctx.clock.now()
    while True:
        ctx.beat(NAME)
        now_ms = int(ctx.clock.now() * 1000)
        end = now_ms - now_ms % engine.step_ms
        day = end - end % 86_400_000
        if engine.day_start_equity is None or engine.day_start_equity[0] != day:
            engine.day_start_equity = (day, (await ctx.exchange.balance()).equity)
        await engine.on_bar(end)
        if ctx.clock.now() - checked_at >= 3600:
            await engine.refresh_instruments()
            await engine.reconcile()
            checked_at = ctx.clock.now()
        await ctx.clock.sleep_until((end + engine.step_ms) / 1000 + 1)

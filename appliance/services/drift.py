"""Layer 6, feature drift: live feature distributions vs each model's training reference.

Per symbol the service keeps the live feature rows of the last ``drift.window`` (3 days of
market time) on the timeframe of the model that serves it (the prod model of its group, else
its newest model): bars come from the feed's bar channel (:class:`~appliance.bar_hub.BarHub`),
and a symbol's window is filled from stored candles when it is first served (at start, or when
a new model appears), so values are published at once, not a window later. The rule's history
is seeded the same way: when a model starts serving a symbol (or at start, when the stored
passes do not reach back over ``drift.history``), the passes it lacks are computed from stored
candles against that model's reference (:func:`models.drift.past_passes`), so the rule has a
verdict at the first pass and a new model is judged on its own reference rather than after
``drift.min_history`` blind passes (seeded passes are not written as ``drift`` rows). Features
are the same ``models.features`` code as training and trading (a
:class:`~appliance.bar_book.BarBook`).

Every ``drift.interval`` of market time (1 h) a pass computes, per symbol, the KL divergence of
each feature's live histogram from the model's reference (``feature_reference``,
:mod:`models.drift`) and their mean, and applies the user's rule: an aggregate more than
``drift.sigma`` (3) standard deviations above the mean of the symbol's own history (the passes
of the last ``drift.history``, 14 days, measured against the same model; no verdict before
``drift.min_history`` of them) for ``drift.persist`` passes in a row, on the log scale and with
the deviation at least ``drift.sigma_floor`` (:func:`models.drift.three_sigma` says why), is
drift. Each pass is a ``drift`` row per symbol, the gauges
``feature_drift{symbol}`` and ``feature_drift_feature{symbol,feature}``, and the ``drift``
snapshot. Drift queues an early retrain of the symbol's group (the serving model's kind and
timeframe, run id ``<day>-<group>-<kind>-drift<HHMM>``, tagged ``trigger: drift``), at most once
per ``drift.cooldown`` (24 h) a group, with a ``drift_retrain`` event, an audit row and one
notification naming the features that moved most; ``drift_retrains_total`` counts them.

The same pass judges each symbol's seasonal volatility (:mod:`models.vol_regime`): the last
day's 5m returns against the hour-of-week profile its model stored at training time, as
``vol_regime_ratio{symbol}``; a departure above ``drift.vol_high`` or below ``drift.vol_low``
sustained for ``drift.vol_sustain`` passes (and the return from one) is a ``vol_regime`` event.
It is context for the operator and never triggers a retrain.

The ``drift`` snapshot (read by ``methtrader drift`` and the TUI)::

    {"ts": market s of the pass, "sigma": 3.0, "persist": 6, "window_s": ..., "interval_s": ...,
     "symbols": {"BTCUSDT": {
         "model_id": "m-...", "group": "t1-a", "timeframe": "5m",
         "kl": 0.031,                         # the aggregate (mean over features)
         "features": {"ret_1": 0.012, ...},   # per-feature KL
         "verdict": "warming" | "ok" | "drift",
         "line": 0.042,                       # the 3σ line in KL units; None while warming
         "mean": -3.5, "std": 0.1, "zscore": 0.3,   # of log(kl) over the history
         "points": 120,                       # history points behind the verdict
         "above": 0,                          # passes in a row above the line (drift at
                                              # "persist" of them)
         "history": [[ts_s, kl], ...],        # the last HISTORY_POINTS passes (a sparkline)
         "moved": ["atr_14", "vol_12", "vol_48"],   # drifted: the features that rose most
                                              # over their history; else the largest KLs
         "bars": 864,                         # live rows in the window
         "vol_ratio": 1.1,                    # realised/profiled volatility (None: no profile)
         "vol_regime": "normal" | "high" | "low" | None,
         "last_retrain": {"ts": market s, "run_id": "..."} | None}},
     "retrains": [{"ts", "symbol", "group", "model_id", "kl", "line", "zscore", "features",
                   "run_id"}, ...]}          # the latest early retrains, newest first
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from appliance import lifecycle
from appliance.bar_book import BarBook, stored_bars
from appliance.bar_hub import BarBatch, BarHub
from appliance.context import ServiceContext
from appliance.contracts import Event, Snapshot
from appliance.drift_store import (PassRow, Served, kept_ms, last_retrains, load_history,
                                   recent_retrains, save_passes, serving)
from appliance.jobs import Jobs, JobsUnavailable
from appliance.logs import service_logger
from appliance.notify import Notifier
from appliance.paths import StatePaths
from appliance.schedule import day_tag, duration_s
from appliance.services.training import enqueue_run, queue_incident
from data.intervals import TRADING_INTERVALS, interval_ms
from data.lake import Lake
from models.drift import (Compiled, compile_reference, drift_pass, feature_kls_many,
                          past_passes, reference_from_json)
from models.features import FS2, FeatureBook
from models.registry import load_reference, load_vol_profiles
from models.vol_regime import NORMAL, next_regime, vol_ratio

NAME = "drift"
HISTORY_POINTS = 48  # passes in the snapshot's sparkline
FIVE_MINUTES_MS = 300_000
DAY_BARS = 288  # 5m bars in the volatility regime's day
RETRAINS_KEPT = 20  # early retrains in the snapshot (the Incidents screen)
MOVED = 3  # features named in a notification


@dataclass
class SymbolHistory:
    """A symbol's past passes against one model: (ts_ms, aggregate, per-feature KL)."""

    model_id: str
    points: deque[tuple[int, float, dict[str, float]]] = field(default_factory=deque)
    seeded: bool = False  # the passes it lacked were computed from stored candles

    def trim(self, since_ms: int) -> None:
        while self.points and self.points[0][0] < since_ms:
            self.points.popleft()


class DriftMonitor:
    def __init__(self, ctx: ServiceContext, jobs: Jobs | None, notifier: Notifier) -> None:
        self.ctx, self.jobs, self.notifier = ctx, jobs, notifier
        cfg = ctx.cfg.drift
        self.window_s = duration_s(cfg.window)
        self.interval_ms = int(duration_s(cfg.interval) * 1000)
        self.history_ms = int(duration_s(cfg.history) * 1000)
        self.span = max(2, self.history_ms // self.interval_ms)  # passes in drift.history
        # the rule's persistence judges the persist - 1 passes before this one on full
        # histories too: that many intervals more are kept (and read back at start)
        self.kept_ms = kept_ms(cfg)
        self.cooldown_ms = int(duration_s(cfg.cooldown) * 1000)
        self.books = {i: BarBook(i, rows_kept=max(2, int(self.window_s * 1000
                                                         // interval_ms(i))))
                      for i in TRADING_INTERVALS}
        self.lake = Lake(StatePaths(ctx.cfg.state_path).lake)
        self.served: dict[str, Served] = {}
        self.refs: dict[str, Compiled | None] = {}  # model_id -> its reference (None: none)
        self.profiles: dict[str, dict[str, list[float]]] = {}  # model_id -> symbol -> profile
        self.closes5: dict[str, deque[tuple[int, float]]] = {}  # the last day of 5m closes
        self.ratios: dict[str, deque[float]] = {}
        self.regimes: dict[str, str] = {}
        self.history: dict[str, SymbolHistory] = {}
        self.retrained: dict[str, tuple[int, str]] = {}  # group -> (ts_ms, run_id)
        self.retrains: deque[dict[str, Any]] = deque(maxlen=RETRAINS_KEPT)  # newest first
        self.next_ms = 0
        self.seen: int | None = None  # the registry version (bus mirror) last followed
        self.snapshot: dict[str, Any] = {}
        self.log = service_logger(NAME)

    def now_ms(self) -> int:
        return int(self.ctx.clock.now() * 1000)

    async def start(self) -> None:
        store = self.ctx.store
        now = self.now_ms()
        for ts, symbol, model_id, kl, kls in await store.run(load_history, store.store,
                                                             now - self.kept_ms):
            h = self.history.get(symbol)
            if h is None or h.model_id != model_id:
                h = self.history[symbol] = SymbolHistory(model_id)
            h.points.append((ts, kl, kls))
        self.retrained = {g: (t, "") for g, t in (await store.run(last_retrains,
                                                                  store.store)).items()}
        self.retrains.extend(await store.run(recent_retrains, store.store, RETRAINS_KEPT))
        self.seen = self.ctx.bus.counter(lifecycle.REGISTRY_VERSION)
        await self.refresh_models(now)
        self.next_ms = now - now % self.interval_ms

    async def refresh_models(self, end_ms: int) -> bool:
        """Follow the registry; a newly served symbol's window is filled from stored candles.
        True when what serves a symbol changed."""
        store = self.ctx.store
        served = await store.run(serving, store.store)
        changed = served != self.served
        for symbol, s in served.items():
            if s.model_id not in self.refs:
                data = await store.run(load_reference, store.store, s.model_id)
                self.refs[s.model_id] = (compile_reference(reference_from_json(data),
                                                           FS2.names) if data else None)
                self.profiles[s.model_id] = await store.run(load_vol_profiles, store.store,
                                                            s.model_id)
            await self.fill(symbol, s.timeframe, end_ms)
            await self.fill_closes(symbol, end_ms)
        self.served = served
        return changed

    async def fill(self, symbol: str, interval: str, end_ms: int) -> None:
        """Bars of ``symbol`` the window lacks before ``end_ms``, from stored candles."""
        book = self.books.get(interval)
        if book is None:
            return
        end_ms -= end_ms % book.step
        start = book.missing_from(symbol, end_ms + book.step)
        if start is None:
            return
        store = self.ctx.store
        bars = await store.run(stored_bars, store.store, self.lake, symbol, interval, start,
                               end_ms)
        book.extend(symbol, bars)

    async def fill_closes(self, symbol: str, end_ms: int) -> None:
        """The last day of 5m closes (the volatility regime's), from stored candles when the
        day held is not contiguous up to ``end_ms``."""
        step = FIVE_MINUTES_MS
        end_ms -= end_ms % step
        held = self.closes5.get(symbol)
        if held and held[-1][0] >= end_ms - step:
            return
        start = end_ms - DAY_BARS * step if not held else max(held[-1][0] + step,
                                                               end_ms - DAY_BARS * step)
        store = self.ctx.store
        bars = await store.run(stored_bars, store.store, self.lake, symbol, "5m", start, end_ms)
        closes = self.closes5.setdefault(symbol, deque(maxlen=DAY_BARS + 1))
        for t, c in bars[:, [0, 4]]:
            if not closes or t > closes[-1][0]:
                closes.append((int(t), float(c)))

    async def on_batch(self, batch: BarBatch) -> None:
        if batch.interval == "5m":
            for symbol in sorted(set(batch.bars) & set(self.served)):
                await self.fill_closes(symbol, batch.open_ms)
                closes = self.closes5[symbol]
                bar = batch.bars[symbol]
                if not closes or bar[0] > closes[-1][0]:
                    closes.append((int(bar[0]), float(bar[4])))
        book = self.books.get(batch.interval)
        if book is None:
            return
        mine = {s: b for s, b in batch.bars.items()
                if s in self.served and self.served[s].timeframe == batch.interval}
        for symbol in sorted(mine):
            await self.fill(symbol, batch.interval, batch.open_ms)
        book.push_many(mine)

    def window(self, symbol: str, served: Served) -> np.ndarray | None:
        book = self.books.get(served.timeframe)
        return book.kept_rows(symbol) if book is not None else None

    def measure(self) -> dict[str, dict[str, float]]:
        """Every served symbol's per-feature KL, the symbols of one model binned together."""
        by_model: dict[str, list[tuple[str, np.ndarray]]] = {}
        for symbol, served in sorted(self.served.items()):
            window = self.window(symbol, served)
            if self.refs.get(served.model_id) is not None and window is not None:
                by_model.setdefault(served.model_id, []).append((symbol, window))
        out = {}
        for model_id, items in by_model.items():
            kls = feature_kls_many([w for _, w in items], FS2.names, self.refs[model_id])
            out.update({symbol: k for (symbol, _), k in zip(items, kls)})
        return out

    async def run_pass(self, ts_ms: int) -> None:
        rows: list[PassRow] = []
        symbols: dict[str, Any] = {}
        for symbol, kls in sorted(self.measure().items()):
            served = self.served[symbol]
            h = self.history.get(symbol)
            if h is None or h.model_id != served.model_id:
                h = self.history[symbol] = SymbolHistory(served.model_id)
            if not h.seeded:
                h.seeded = True
                await self.seed(symbol, served, h, ts_ms)
            h.trim(ts_ms - self.kept_ms)
            cfg = self.ctx.cfg.drift
            p = drift_pass(kls, [(v, f) for _, v, f in h.points], min_history=cfg.min_history,
                           k=cfg.sigma, floor=cfg.sigma_floor, persist=cfg.persist,
                           span=self.span, moved=MOVED)
            if p is None:
                continue
            kl, verdict, moved = p.kl, p.verdict, p.moved
            retrain = None
            if verdict.fired:
                retrain = await self.act(symbol, served, kl, verdict, moved, ts_ms)
            h.points.append((ts_ms, kl, kls))
            self.ctx.metrics.feature_drift.labels(symbol).set(kl)
            for f, v in kls.items():
                self.ctx.metrics.feature_drift_feature.labels(symbol, f).set(v)
            vol = self.vol_regime(symbol, served, ts_ms)
            rows.append(PassRow(ts_ms, symbol, kl, verdict.zscore, served.model_id,
                                served.group, kls, verdict.line, verdict.state, retrain))
            last = self.retrained.get(served.group)
            symbols[symbol] = {
                "model_id": served.model_id, "group": served.group,
                "timeframe": served.timeframe, "kl": kl, "features": kls,
                "verdict": verdict.state, "mean": verdict.mean, "std": verdict.std,
                "line": verdict.line, "zscore": verdict.zscore, "points": verdict.points,
                "above": verdict.above,
                "history": [[t / 1000, v] for t, v, _ in list(h.points)[-HISTORY_POINTS:]],
                "moved": moved, "bars": self.books[served.timeframe].rows_count(symbol),
                "vol_ratio": vol, "vol_regime": self.regimes.get(symbol),
                "last_retrain": None if last is None else {"ts": last[0] / 1000,
                                                           "run_id": last[1] or None}}
        if rows:
            await self.ctx.store.run(save_passes, self.ctx.store.store, rows)
        self.snapshot = {"ts": ts_ms / 1000, "sigma": self.ctx.cfg.drift.sigma,
                         "persist": self.ctx.cfg.drift.persist,
                         "window_s": self.window_s, "interval_s": self.interval_ms / 1000,
                         "symbols": symbols, "retrains": list(self.retrains)}
        self.ctx.bus.put_snapshot(Snapshot.DRIFT, self.snapshot)

    async def seed(self, symbol: str, served: Served, h: SymbolHistory, ts_ms: int) -> None:
        """Fill the passes a symbol's history lacks before ``ts_ms`` (back to what the rule
        reads, on the pass times it would have had) from stored candles, against the serving
        model's reference: the rule has a verdict at once, and a new model is judged on its own
        reference rather than after ``drift.min_history`` blind passes. Once per
        history (a model serving the symbol again gets a new one); the seeded passes are not
        written (a restart seeds again what is missing)."""
        ref = self.refs.get(served.model_id)
        book = self.books.get(served.timeframe)
        oldest = h.points[0][0] if h.points else ts_ms
        times = [t for t in range(ts_ms - self.kept_ms, oldest, self.interval_ms)]
        if ref is None or book is None or not times:
            return
        step = book.step
        start = times[0] - times[0] % step - (book.warmup_bars + 1) * step
        store = self.ctx.store
        bars = await store.run(stored_bars, store.store, self.lake, symbol, served.timeframe,
                               start, times[-1])
        if not len(bars):
            return
        points = await self.ctx.io(seed_passes, bars, step, ref, times, book.rows_kept)
        h.points.extendleft(reversed(points))
        self.ctx.beat(NAME)  # a few tenths of a second a symbol: a fleet's start is longer
        self.log.info("drift history seeded from stored candles", symbol=symbol,
                      model_id=served.model_id, passes=len(points))

    def vol_regime(self, symbol: str, served: Served, ts_ms: int) -> float | None:
        """The symbol's realised/profiled volatility over the last day, its metric, and a
        ``vol_regime`` event when a sustained departure (or return) changes its regime. Context
        for the operator: it never retrains anything."""
        profile = self.profiles.get(served.model_id, {}).get(symbol)
        closes = self.closes5.get(symbol)
        if profile is None or not closes:
            return None
        t, c = np.array(closes, dtype=np.float64).T
        ratio = vol_ratio(t, c, profile, end_ms=ts_ms)
        if not np.isfinite(ratio):
            return None
        self.ctx.metrics.vol_regime_ratio.labels(symbol).set(ratio)
        cfg = self.ctx.cfg.drift
        ratios = self.ratios.setdefault(symbol, deque(maxlen=cfg.vol_sustain))
        ratios.append(ratio)
        before = self.regimes.get(symbol, NORMAL)
        after = next_regime(before, list(ratios), low=cfg.vol_low, high=cfg.vol_high,
                            sustain=cfg.vol_sustain)
        self.regimes[symbol] = after
        if after != before:
            self.ctx.bus.publish(Event.VOL_REGIME, {
                "symbol": symbol, "regime": after, "previous": before, "ratio": ratio,
                "ts": ts_ms / 1000}, service=NAME, market_ts=ts_ms / 1000)
            self.log.info("volatility regime", symbol=symbol, regime=after, previous=before,
                          ratio=round(ratio, 3))
        return ratio

    async def act(self, symbol: str, served: Served, kl: float, verdict: Any,
                  moved: list[str], ts_ms: int) -> str | None:
        """The rule fired: an early retrain of the group, once per cooldown. Returns the run
        id queued ("" when retraining is off), None inside the group's cooldown."""
        last = self.retrained.get(served.group)
        if last is not None and ts_ms - last[0] < self.cooldown_ms:
            return None
        cfg = self.ctx.cfg.drift
        run_id = ""
        if cfg.retrain and self.jobs is not None:
            hhmm = hhmm_of(ts_ms)
            run_id = (f"{day_tag(ts_ms / 1000)}-{served.group}-{served.kind}-drift{hhmm}"
                      + ("" if served.timeframe == "5m" else f"-{served.timeframe}"))
            try:
                await enqueue_run(self.ctx, self.jobs, served.group, list(served.symbols),
                                  served.kind, run_id, {"trigger": "drift", "symbol": symbol,
                                                        "features": moved}, served.timeframe)
                self.ctx.metrics.drift_retrains_total.inc()
            except JobsUnavailable as exc:  # not queued: the next drift pass tries again
                await queue_incident(self.ctx, NAME, f"early retrain {run_id} not queued: {exc}")
                return None
        self.retrained[served.group] = (ts_ms, run_id)
        what = (f"{symbol}: feature drift {kl:.3f} is {verdict.zscore:.1f}σ above its "
                f"{verdict.points}-pass history (3σ line {verdict.line:.3f}); moved most: "
                f"{', '.join(moved)}")
        action = (f"early retrain {run_id} of group {served.group} queued" if run_id
                  else "early retraining is off (drift.retrain)")
        details = {"symbol": symbol, "group": served.group, "model_id": served.model_id,
                   "kl": kl, "line": verdict.line, "zscore": verdict.zscore,
                   "features": moved, "run_id": run_id or None, "ts": ts_ms / 1000}
        self.retrains.appendleft(details)
        self.ctx.bus.publish(Event.DRIFT_RETRAIN, details, service=NAME,
                             market_ts=ts_ms / 1000)
        self.ctx.bus.audit(actor=NAME, action="drift_retrain", reason=what, details=details)
        # keyed by group: the group is what is retrained, so its repeats within the
        # notifier's dedupe_s (wall time; a fast sim passes many cooldowns in it) are one page
        self.notifier.notify("drift", f"{what}; {action}", details, key=served.group)
        self.log.warning("drift", symbol=symbol, group=served.group, kl=round(kl, 4),
                         line=round(verdict.line, 4), features=moved, run_id=run_id or None)
        return run_id


def seed_passes(bars: np.ndarray, step: int, ref: Compiled, times: list[int],
                window: int) -> list[tuple[int, float, dict[str, float]]]:
    """:func:`models.drift.past_passes` over stored bars, their features computed by the batch
    engine the bar book fills itself with (CPU work: run off the loop)."""
    book = FeatureBook(feature_set=FS2)  # the catalogue the bar book computes
    rows = np.array(book.prefill_rows("seed", bars), dtype=np.float64)
    rows[:book.feature_set.warmup] = np.nan  # as the bar book: no row before it is warm
    return past_passes(rows, bars[:, 0] + step, FS2.names, ref, times, window)


def hhmm_of(ts_ms: int) -> str:
    """HHMM (UTC) of a market time in ms."""
    minutes = ts_ms // 60_000 % 1440
    return f"{minutes // 60:02d}{minutes % 60:02d}"


async def run(ctx: ServiceContext, hub: BarHub, jobs: Jobs | None, notifier: Notifier) -> None:
    bars = hub.subscribe(NAME, TRADING_INTERVALS)
    monitor = DriftMonitor(ctx, jobs, notifier)
    await monitor.start()
    await monitor.run_pass(monitor.next_ms)  # values at once, from the prefilled windows
    monitor.next_ms += monitor.interval_ms
    while True:
        ctx.beat(NAME)
        batch = None
        with trio.move_on_after(1.0):  # wall time: beat even without bars
            try:
                batch = await bars.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise RuntimeError("cut off by the bar hub for falling behind; refilling "
                                   "from the store") from None
        if batch is None:
            continue
        await monitor.on_batch(batch)
        version = ctx.bus.counter(lifecycle.REGISTRY_VERSION)
        if version != monitor.seen:  # a model came or went: serve it from its next bar
            monitor.seen = version
            if await monitor.refresh_models(batch.end_ms):
                await monitor.run_pass(batch.end_ms)
        if batch.end_ms >= monitor.next_ms:
            due = batch.end_ms - batch.end_ms % monitor.interval_ms
            await monitor.refresh_models(batch.end_ms)
            await monitor.run_pass(due)
            monitor.next_ms = due + monitor.interval_ms

"""The trading engine: closed bars → models → targets → orders (prod) and paper fills (shadow).

Its parts, each in a module named for it:

* the **bar book** (:mod:`appliance.bar_book`): each trading interval's bars and incremental
  features, fed by the feed through the bar hub, filled from stored candles when bars are missing;
* the **model pool** (:mod:`appliance.model_pool`): the prod and shadow models as ONNX sessions,
  reloaded when the registry version changes;
* the **ledger** (:mod:`appliance.ledger`, :mod:`appliance.books`): one book per model and mode
  period, the house's free cash, the capital split across groups;
* the **order gateway** (:mod:`appliance.order_gateway`): the only road to the venue — kill
  switch, risk limits, write-ahead order rows, fills, flatten, reconciliation (layer 7);
* the **paper desk** (:mod:`appliance.services.paper_desk`): the shadow books' paper fills, at the
  venue's quoted spreads;
* the **funding clerk** (:mod:`appliance.book_funding`): every book pays the funding of what it
  held at each funding time, before the bar's fills (as the venue charges it), noted before
  the bar's orders and paid after they left.

On each closed bar of an interval the engine updates the bar book, lets the ledger follow the
registry (new books for new mode periods; books of models that left theirs are closed, prod ones
by reduce-only orders), funds pending books, runs every model of that interval once, batched
over its symbols, and sizes each target the same way for prod and shadow
(:mod:`appliance.sizing`): prod rounds to the lot and goes through the gateway, shadow is filled
on paper. The prod models run first and their orders leave before any shadow model runs, so the
paper books never delay an order, and only the indicators the prod models read are computed
before them (the rest of the bar's rows after). One transaction then records what every model wanted, the paper fills, the books that
changed, every book's equity and the account's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping

import numpy as np
import trio

from appliance.allocation import group_volatility, weights
from appliance.account_identity import IDENTITY_TOLERANCE, venue_as_of, venue_at
from appliance.bar_book import BarBook, stored_bars
from appliance.bar_hub import BarBatch, BarHub
from appliance.bus import StateWatch
from appliance.book_funding import FundingClerk
from appliance.books import ZERO, Book, Num
from appliance.clock import VirtualClock
from appliance.context import ServiceContext
from appliance.contracts import Event, Snapshot
from appliance.domain import Instrument
from appliance.exchange.base import REAL_TIME, ExchangeError
from appliance.ledger import CLOSING, OPEN, PENDING, Ledger
from appliance.ledger_store import book_fills_since, load_books, record_bars
from appliance.logs import service_logger
from appliance.model_pool import ModelPool, PooledModel
from appliance.outage import Outage
from appliance.order_gateway import OrderBatch, OrderGateway, books_of, trade_event
from appliance.order_journal import OrderJournal
from appliance.paths import StatePaths
from appliance.rehearsal import Rehearsals
from appliance.risk import RiskLimits
from appliance.services.paper_desk import PaperDesk
from appliance.sizing import lots_change, order_for, target_fractions, target_lots
from data.disk import is_disk_full
from data.intervals import DAY_MS, HOUR_MS, TRADING_INTERVALS, interval_ms
from data.lake import Lake
from models.costs import CostModel, quoted_half_spread
from models.funding import FUNDING_PERIOD_MS

NAME = "trading"
STALE_BARS = 3  # a bar older than this many of its interval is learned, not traded on
FLUSH_S = 0.5  # virtual clock: write pending bars at least this often (real seconds)
FLUSH_BARS = 64  # ... or once this many are pending
RECHECK_S = 60  # market seconds before an hourly check the venue failed is tried again
#: real seconds without a bar before the loop beats, flushes and reloads the model pool if the
#: registry moved: a reload reads DuckDB through the store's busy thread (10-30 ms inside
#: `run`), which a bar would otherwise wait for before its orders
IDLE_S = 0.25
BAR_STEP_MS = min(interval_ms(i) for i in TRADING_INTERVALS)  # bars close this often


@dataclass
class Pending:
    """Bars decided but not written yet (the order journal already holds their orders).

    On the virtual clock DuckDB's per-transaction cost would bound how fast a sim can run, so
    bars are written together; a SIGKILL can then lose the last fraction of a second of the
    shadow books' paper record, never a prod order or fill (the journal has them). On the real
    clock every bar is written as soon as it is decided.
    """

    since: float  # trio time of the last write
    bars: int = 0
    model_rows: list[tuple] = field(default_factory=list)
    paper: list[tuple[Book, Any]] = field(default_factory=list)
    orders: list[OrderBatch] = field(default_factory=list)
    book_equity: list[tuple[int, str, float, str]] = field(default_factory=list)
    accounts: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def then(self, later: "Pending") -> "Pending":
        """These bars followed by ``later``'s (what a failed write puts back)."""
        return Pending(self.since, self.bars + later.bars, self.model_rows + later.model_rows,
                       self.paper + later.paper, self.orders + later.orders,
                       self.book_equity + later.book_equity, self.accounts + later.accounts)


@dataclass(frozen=True, slots=True)
class Decided:
    """A model's decision on a bar: its book, the symbols, their class probabilities, target
    fractions and closes, and the book's equity before the bar's fills."""

    book: Book
    symbols: list[str]
    probs: np.ndarray
    fractions: np.ndarray
    closes: np.ndarray
    start_equity: Any


class TradingEngine:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        cfg = ctx.cfg.trading
        self.log = service_logger(NAME)
        self.gateway = OrderGateway(ctx, RiskLimits(
            max_symbol_notional=Decimal(str(cfg.max_symbol_notional)),
            max_gross_exposure=Decimal(str(cfg.max_gross_exposure)),
            max_leverage=Decimal(str(cfg.max_leverage)),
            max_orders_per_minute=cfg.max_orders_per_minute,
            max_daily_loss=Decimal(str(cfg.max_daily_loss))),
            OrderJournal(StatePaths(ctx.cfg.state_path).orders_journal))
        self.bar_books = {i: BarBook(i) for i in TRADING_INTERVALS}
        self.pool = ModelPool(ctx, self.gateway.incident)
        self.ledger = Ledger(ctx.cfg.shadow.size_fraction)
        sim = ctx.cfg.sim
        self.costs = CostModel(sim.taker_fee, sim.slippage_bps / 10_000)
        self.desk = PaperDesk(self.costs, ctx.cfg.shadow.size_fraction, self.lot)
        self.funding = FundingClerk(ctx.exchange.funding_rates,
                                    together=REAL_TIME in ctx.exchange.capabilities,
                                    interval_of=self.funding_interval)
        self.lake = Lake(StatePaths(ctx.cfg.state_path).lake)
        self.instruments: dict[str, Instrument] = {}
        self.marks: dict[str, Decimal] = {}
        self.fmarks: dict[str, float] = {}  # the same closes as floats (paper books, sizing)
        self.steps_f: dict[str, float] = {}  # each instrument's lot as a float (sizing)
        self._steps: dict[tuple[str, ...], np.ndarray] = {}  # (:meth:`steps_of`)
        self._tradable: frozenset[str] | None = None  # (:meth:`tradable`)
        self.tradable_watch = StateWatch()
        self.lots_f: dict[str, float] = {}  # ... and where it has one (the paper desk)
        self.weights: dict[str, float] = {}
        self.weighed: tuple[int, object] = (0, None)  # (bar, groups) the weights are from
        # (registry version, interval) → the indicators its prod models read
        self.prod_first: tuple[object, tuple[int, ...] | None] = (None, None)
        # (bar, groups, weights) weighed ahead for that bar (:meth:`prepare_allocation`)
        self.prepared: tuple[int, object, dict[str, float]] | None = None
        # each group's symbols, sorted, and what they were grouped from (registry version,
        # the books' groups)
        self.grouped: tuple[object, list[tuple[str, list[str]]]] = (None, [])
        self.delisted: set[str] = set()
        self.started = False
        self.started_ms = 0
        self.pending = Pending(0.0)
        self.decide_ms = 0.0
        self.decide_cpu_ms = 0.0
        self.answered_ms = 0.0
        self.decide_venue_ms = 0.0
        self.bar_ms: int | None = None  # close of the bar being decided (or the last one)
        self.identity_gap: Decimal | None = None  # books − venue, as last reported
        self.day_open: tuple[int, Decimal] | None = None  # (market day, equity at its start)
        self.held: list[str] | None = None  # the held symbols last told to the feed
        self.unwritten = False  # a flush met a full disk; what it held is still pending
        # per interval, the symbols a model could decide on its last decided bar: what
        # :meth:`rehearse` goes over again
        self.last_decided: dict[str, set[str]] = {}

    def lot(self, symbol: str) -> Decimal | None:
        inst = self.instruments.get(symbol)
        return inst.qty_step if inst is not None else None

    @property
    def halted(self) -> set[str]:
        return self.gateway.halted

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore the books, settle orders a crash left pending, reconcile with the venue.
        What an earlier run of the service left unwritten goes: the books are DuckDB's again,
        and the orders it held are in the order journal, which settles them."""
        store = self.ctx.store
        self.pending = Pending(trio.current_time())
        await self.refresh_instruments()
        books = await store.run(load_books, store.store)
        venue = await self.ctx.exchange.balance()
        for note in self.ledger.restore(books, venue, self.now_ms()):
            self.log.info(note)
        settled = await self.gateway.settle_pending(self.ledger)
        if settled:
            self.log.warning("settled orders left pending by a crash", orders=len(settled))
        await self.restore_funding_holdings()
        await self.reconcile()
        await self.save()
        await self.pool.refresh()  # the sessions open now, not on the first bar's clock
        self.started = True
        self.started_ms = self.now_ms() - self.now_ms() % 60_000

    async def restore_funding_holdings(self) -> None:
        """What the books held at each funding time they have not paid yet, from their recorded
        fills (:meth:`FundingClerk.restore`): what :meth:`hold_funding` noted died with the
        last process."""
        books = self.funded_books()
        now = self.now_ms()
        first = min((t for b in books for t, _ in self.funding.due(b, now)), default=None)
        if first is None:
            return
        store = self.ctx.store
        fills = await store.run(book_fills_since, store.store, first)
        self.funding.restore(books, now, fills)

    def hold_funding(self, upto_ms: int) -> None:
        """Note what every book holds at each funding time up to ``upto_ms`` it has not paid
        (:meth:`FundingClerk.hold`): called before fills that may follow such a time."""
        self.funding.hold(self.funded_books(), upto_ms)

    def funded_books(self) -> list[Book]:
        """Every book that pays funding: the house and the models' books."""
        assert self.ledger.house is not None
        return [self.ledger.house, *self.ledger.books.values()]

    def now_ms(self) -> int:
        return int(self.ctx.clock.now() * 1000)

    def is_history(self, batch: BarBatch, step: int) -> bool:
        if isinstance(self.ctx.clock, VirtualClock):
            return batch.end_ms < self.started_ms
        return self.now_ms() - batch.end_ms > STALE_BARS * step

    async def refresh_instruments(self) -> None:
        instruments = await self.ctx.exchange.instruments()
        self.instruments = {i.symbol: i for i in instruments}
        self.steps_f = {i.symbol: float(i.qty_step) for i in instruments}
        self._steps.clear()
        self.lots_f = {s: float(lot) for s in self.instruments
                       if (lot := self.lot(s)) is not None}
        lead = self.ctx.cfg.trading.delisting_lead_s * 1000
        now = self.now_ms()
        leaving = {i.symbol for i in instruments if i.status not in ("Trading", "PreLaunch")
                   or (i.delivery_time and now >= i.delivery_time - lead)}
        for symbol in sorted(leaving - self.delisted):
            self.ctx.bus.audit(actor=NAME, action=f"delisting {symbol}",
                               reason="the venue is delisting it: positions closed, no new "
                                      "orders", details={"market_ts": self.ctx.clock.now()})
            self.ctx.bus.publish(Event.DELISTING, {"symbol": symbol}, service=NAME,
                                 market_ts=self.ctx.clock.now())
        self.delisted = leaving
        await self.refresh_spreads()

    async def refresh_spreads(self) -> None:
        """The shadow books' costs from the venue: half spreads from its quoted top of book (a
        symbol without a quote keeps its last one; none at all: slippage only) and the
        account's taker fee per symbol where it gives one (else the configured fee)."""
        try:
            tickers = await self.ctx.exchange.tickers()
        except ExchangeError as exc:
            self.log.warning("no tickers for the spreads; keeping the last", error=str(exc))
            return
        spreads = dict(self.costs.half_spread)
        for t in tickers:
            h = quoted_half_spread(t.bid, t.ask) if t.bid and t.ask else None
            if h is not None:
                spreads[t.symbol] = h
        self.costs = self.costs.with_spreads(spreads)
        try:
            fees = await self.ctx.exchange.fee_rates()
        except ExchangeError as exc:
            self.log.warning("no fee rates from the venue; keeping the last", error=str(exc))
        else:
            if fees:
                self.costs = self.costs.with_fees(fees)
        self.desk.costs = self.costs

    async def reconcile(self) -> list[str]:
        return await self.gateway.reconcile(self.ledger)

    # -- one bar ---------------------------------------------------------------------------

    async def on_batch(self, batch: BarBatch) -> None:
        """Learn a closed bar and trade on it, unless it is history: a bar that closed before
        the engine started (the feed catching up), or on the real clock one that closed more
        than ``STALE_BARS`` of its interval ago. On the virtual clock every later bar is
        decided, in order, and the venue fills at the bar's close: a machine that lags behind
        the market clock must not change what the models do."""
        t0, c0 = time.perf_counter(), time.process_time()
        book = self.bar_books[batch.interval]
        await self.catch_up(book, batch)
        new = book.push_many(batch.bars, self.prod_indicators(book))
        if new:  # prices to Decimal once a bar (and as floats for sizing and the paper books)
            closes = book.closes_of(new).tolist()
            self.fmarks.update(zip(new, closes))
            self.marks.update(zip(new, map(Decimal, map(repr, closes))))
        if not new or self.is_history(batch, book.step):
            book.finish()  # nothing is decided: the whole rows now
            return
        self.gateway.new_day(batch.end_ms - batch.end_ms % DAY_MS,
                             lambda: self.ledger.equity(self.marks))
        await self.pool.refresh()
        pooled = list(self.pool.models.values())  # the bar's models (a reload may follow)
        self.bar_ms = batch.end_ms
        # a book opens at the bar it is first decided on: the venue fills its orders there
        # and charges them every funding time after, even when the engine decides it late
        opened, closing = self.ledger.sync(pooled, self.decided_at() or self.now_ms())
        # funding is charged on what each book held at the funding time, before this bar's
        # fills: noted now, paid once the orders have left (no order waits for the venue's
        # rates), except by books winding down, which pay before their cash goes home
        self.hold_funding(batch.end_ms)
        await self.settle_funding(batch.end_ms, [b for b in self.ledger.books.values()
                                                 if b.state == CLOSING])
        await self.wind_down()
        self.weights = self.allocation(batch.end_ms)
        if self.ledger.fund(self.weights, self.marks) or opened or closing:
            await self.save()  # a book exists in DuckDB before its first order is sent
        rows: list[tuple] = []
        paper: list[tuple[Book, Any]] = []
        live: list[Book] = []
        equity = self.ledger.account_equities(self.marks)  # before the bar's fills
        orders = self.gateway.begin(self.ledger, self.marks, batch.end_ms,
                                    equity=sum(equity.values(), ZERO))
        paused = orders.view.maintenance_mode  # paper books read the switch once a bar
        tradable = self.tradable()
        models = [m for m in pooled if m.timeframe == batch.interval]
        fresh = book.warm_of(new)  # what a model may decide on: a new bar and a row
        self.last_decided[batch.interval] = fresh
        # prod first: its orders leave before anything else of the bar (its model rows, the
        # next hour's weights, the shadow books' paper work)
        prod = [(m, self.targets(m, book, fresh, tradable, live, equity)) for m in models
                if m.mode == "prod"]
        for m, d in prod:
            if d is not None:
                self.ledger.dirty.add(d.book.book_id)
                self.plan_prod(orders, d.book, d.symbols, d.fractions, d.start_equity, d.closes)
        await self.gateway.send(orders, t0)
        answered = (time.perf_counter(), time.process_time())
        left = orders.left or answered
        self.decide_ms = (left[0] - t0) * 1000  # bar close → the last order handed to the venue
        self.decide_cpu_ms = (left[1] - c0) * 1000  # ... in CPU time
        self.answered_ms = (answered[0] - t0) * 1000  # ... → the venue's answers booked
        self.decide_venue_ms = orders.venue_s * 1000  # time inside the venue's calls
        book.finish()  # the rows' columns no prod model reads
        await self.settle_funding(batch.end_ms)
        for m, d in prod:
            if d is not None:
                self.model_rows(m, batch, d, rows)
        self.prepare_allocation(batch.end_ms + book.step)
        for m in [m for m in models if m.mode != "prod"]:
            d = self.targets(m, book, fresh, tradable, live)
            if d is None:
                continue
            self.ledger.dirty.add(d.book.book_id)
            self.model_rows(m, batch, d, rows)
            if not paused:
                paper += [(d.book, f) for f in self.desk.rebalance_many(
                    d.book, d.symbols, d.fractions, d.closes, float(d.start_equity),
                    np.array([self.lots_f.get(s, np.nan) for s in d.symbols]), batch.end_ms)]
        self.tell_held()
        await self.record(batch.end_ms, rows, paper,
                          {b.book_id: b.equity(self.marks_for(b)) for b in live}, orders)
        self.gateway.kill.read_ahead()  # for the next bar's batch, off its path

    def next_close_ms(self) -> int | None:
        """When the next bar closes (market ms): the shortest trading interval's next close
        after the last decided bar; None before the first."""
        if self.bar_ms is None:
            return None
        return self.bar_ms - self.bar_ms % BAR_STEP_MS + BAR_STEP_MS

    def rehearse(self) -> int:
        """Go over the path of the bars due at the next close (each interval's last decided
        bar) to their prod orders again, changing nothing:
        the bar book's feature step, each prod model on its symbols' windows, the sizing, the
        gateway's checks of every order and what it would journal and send (but no order id,
        no journal line, no order, no metric, no log). Returns the orders it checked (those
        the checks refuse included).

        Why: a bar comes minutes after the last, and meanwhile the caches have gone cold, so a
        bar's path from close to orders pays for fetching its code and data from memory: on
        this project's shared 2-core machine a third of its time (README, "Performance").
        Going over it shortly before a bar is due (the trading loop does, every
        ``trading.rehearse_ms`` from the bar's close until it arrives) keeps it warm; low-
        latency trading systems do the same (running the order path with a flag that stops
        short of the wire). The kill switch is not read and the bus not touched: a rehearsal
        cannot consume the reading the next bar's batch begins on (:mod:`~appliance.kill_guard`)."""
        close = self.next_close_ms()
        if close is None or not self.started:
            return 0
        checked = 0
        for interval, fresh in self.last_decided.items():
            if close % interval_ms(interval):
                continue  # that interval's next bar closes later
            book = self.bar_books[interval]
            book.rehearse()
            prods = [m for m in self.pool.models.values()
                     if m.mode == "prod" and m.timeframe == interval]
            if not prods:
                continue
            equity = self.ledger.account_equities(self.marks)
            orders = self.gateway.rehearsal(self.ledger, self.marks,
                                            sum(equity.values(), ZERO))
            for m in prods:
                d = self.targets(m, book, fresh, self._tradable, [], equity)
                if d is not None:
                    self.plan_prod(orders, d.book, d.symbols, d.fractions, d.start_equity,
                                   d.closes, rehearsal=True)
            checked += self.gateway.rehearse(orders) + len(orders.refused)
        return checked

    def tradable(self) -> frozenset[str] | None:
        """The tradable set discovery published (None: none yet), read again only when the
        bus's state token moved since (:meth:`appliance.bus.Bus.state_token`)."""
        if self.tradable_watch.moved(self.ctx.bus):
            pairs = self.ctx.bus.tradable_pairs()
            self._tradable = None if pairs is None else frozenset(pairs)
        return self._tradable

    def prod_indicators(self, book: BarBook) -> tuple[int, ...] | None:
        """The indicators the prod models of ``book``'s interval read: only these are
        computed before the bar's orders (:meth:`BarBook.push_many`). None (no split) when
        there is no prod model or they read every indicator."""
        key = (self.pool.version, book.interval)
        if self.prod_first[0] != key:
            columns = [m.columns for m in self.pool.models.values()
                       if m.mode == "prod" and m.timeframe == book.interval]
            first = book.indicators_of(np.concatenate(columns)) if columns else None
            whole = first is not None and len(first) == len(book.features.feature_set.indicators)
            self.prod_first = (key, None if whole else first)
        return self.prod_first[1]

    def targets(self, m: PooledModel, book: BarBook, fresh: set[str],
                tradable: frozenset[str] | None, live: list[Book],
                equity: Mapping[str, Num] | None = None) -> Decided | None:
        """Run model ``m`` on the bar's symbols it serves and size its targets (the same for
        prod and shadow); its book joins ``live``. None when its book is not open or it has
        nothing to decide (it changes nothing: the caller marks the book to be written).
        ``equity``: books' equity at the bar's marks, where known."""
        b = self.ledger.books.get(m.book_id)
        if b is None or b.state != OPEN:
            return None
        live.append(b)
        # a symbol that left the tradable set is only decided while the book holds it:
        # its target is flat, so the position is closed and no new one opens
        ok = fresh - self.delisted - m.excluded
        leaving = set() if tradable is None else ok - tradable
        if leaving:
            leaving = {s for s in leaving if b.qty(s)}
            ok = (ok & tradable) | leaving  # type: ignore[operator]
        mine = [s for s in m.row["symbols"] if s in ok]
        if not mine:
            return None
        probs = m.session.predict(book.windows(mine, m.lookback, m.columns))
        fractions = target_fractions(probs, book.vols(mine),
                                     threshold=self.ctx.cfg.trading.threshold)
        if leaving:
            fractions[[s in leaving for s in mine]] = 0.0
        closes = book.closes_of(mine)  # the bar's closes: fmarks
        start = (equity or {}).get(b.book_id)
        if start is None:
            start = b.equity(self.marks_for(b))
        return Decided(b, mine, probs, fractions, closes, start)

    @staticmethod
    def model_rows(m: PooledModel, batch: BarBatch, d: Decided, rows: list[tuple]) -> None:
        """What model ``m`` decided on the bar, a row per symbol (recorded with the bar)."""
        for symbol, p, fraction, close in zip(d.symbols, d.probs.tolist(), d.fractions.tolist(),
                                              d.closes.tolist()):
            rows.append((batch.open_ms, m.model_id, symbol, m.mode, close, fraction, *p,
                         d.book.book_id))

    def tell_held(self) -> None:
        """Tell the feed which symbols the books hold (when that changed)."""
        held = sorted({s for b in self.ledger.account_books() for s in b.open_symbols()}
                      | {s for b in self.ledger.books.values() for s in b.open_symbols()})
        if held != self.held:
            self.ctx.bus.set_held_symbols(held)
            self.held = held

    async def catch_up(self, book: BarBook, batch: BarBatch) -> None:
        """Bars the book lacks before this batch come from stored candles (the engine was
        restarted or cut off); never from the exchange."""
        store = self.ctx.store
        for symbol in book.lacking(sorted(batch.bars), batch.end_ms):
            start = book.missing_from(symbol, batch.end_ms)
            if start is None:
                continue
            bars = await store.run(stored_bars, store.store, self.lake, symbol, book.interval,
                                   start, batch.open_ms)
            book.extend(symbol, bars)

    async def settle_funding(self, upto_ms: int, books: list[Book] | None = None) -> None:
        """Every book (or ``books``) pays the funding times up to this bar on what it held
        then (before the bar's fills, as the venue charges it; :meth:`FundingClerk.hold`); an
        outage delays it to a later bar. The price is the close of the bar that closed at the
        funding time; where the bar book lacks it, the close of the last stored minute at or
        before it (the venue's own price)."""
        if books is None:
            books = self.funded_books()
        elif not books:
            return
        watched = {b.book_id: b for b in [*books, *(o[0] for o in self.funding.owed)]}
        before = {i: (b.funded_to, b.cash) for i, b in watched.items()}
        stored = await self.stored_closes(books, upto_ms)
        try:
            paid = await self.funding.settle(books, upto_ms, lambda s, t: self.close_at(
                s, t) or stored.get((s, t)))
        except ExchangeError as exc:
            self.log.warning("funding rates unavailable; the books pay them on a later bar",
                             error=str(exc))
            paid = 0
        self.ledger.dirty.update(i for i, b in watched.items()
                                 if (b.funded_to, b.cash) != before[i])
        if paid:
            self.log.debug("funding paid", payments=paid, upto_ms=upto_ms)

    async def stored_closes(self, books: list[Book], upto_ms: int
                            ) -> dict[tuple[str, int], float]:
        """For each funding time due and held symbol the bar books cannot price: the close of
        the last stored 1m candle at or before it, as the venue prices funding."""
        wanted = {(symbol, t) for b in books for t, symbols, _ in self.funding.owing(b, upto_ms)
                  for symbol in symbols}
        wanted |= {(symbol, t) for _, symbol, _, t, _ in self.funding.owed}
        wanted = {(s, t) for s, t in wanted if self.close_at(s, t) is None}
        if not wanted:
            return {}
        store = self.ctx.store
        out = {}
        for symbol, t in sorted(wanted):
            rows = await store.run(lambda st, s=symbol, t=t: st.sql(
                "SELECT close, (SELECT max(open_time) FROM candles WHERE symbol = ? AND "
                "interval = '1m') FROM candles WHERE symbol = ? AND interval = '1m' AND "
                "open_time <= ? ORDER BY open_time DESC LIMIT 1", [s, s, t - 60_000]),
                store.store)
            if rows and rows[0][1] >= t - 60_000:  # the feed is past the funding time
                out[(symbol, t)] = float(rows[0][0])
        return out

    def funding_interval(self, symbol: str) -> int:
        """How often ``symbol`` pays funding, as its instrument says (8 hours when unknown)."""
        inst = self.instruments.get(symbol)
        return inst.funding_interval_ms if inst is not None else FUNDING_PERIOD_MS

    def close_at(self, symbol: str, t_ms: int) -> float | None:
        """The close of ``symbol``'s bar that closed at ``t_ms``, from any interval's book."""
        for book in self.bar_books.values():
            close = book.close_at(symbol, t_ms)
            if close is not None:
                return close
        return None

    def plan_prod(self, orders: OrderBatch, b: Book, symbols: list[str],
                  fractions: np.ndarray, start_equity: Decimal, prices: np.ndarray,
                  rehearsal: bool = False) -> None:
        """The prod targets in whole lots, as one order per symbol (a flip is one order) into
        the bar's batch; the gateway checks each. Sized in float64 over all the symbols at
        once (:func:`appliance.sizing.target_lots`) at the bar's ``prices``; Decimal only for
        the orders that go. ``rehearsal``: ``orders`` is a rehearsal's (:meth:`rehearse`)."""
        steps = self.steps_of(tuple(symbols))
        positions = b.positions
        held = np.array([float(h.qty) if (h := positions.get(s)) is not None else 0.0
                         for s in symbols])
        target = target_lots(fractions, float(start_equity), prices, steps)
        lots = target.tolist()
        for i in np.flatnonzero(lots_change(target, held, steps)).tolist():
            symbol = symbols[i]
            inst = self.instruments[symbol]
            order = order_for(b.qty(symbol), Decimal(int(lots[i])) * inst.qty_step,
                              step=inst.qty_step, min_qty=inst.min_order_qty)
            if order is not None:
                self.gateway.add(orders, b, symbol, *order, rehearsal=rehearsal)

    def steps_of(self, symbols: tuple[str, ...]) -> np.ndarray:
        """The symbols' lots as floats (NaN: no instrument), kept until the instruments are
        refreshed: a bar asks for the same symbols as the last."""
        got = self._steps.get(symbols)
        if got is None:
            if len(self._steps) >= 16:
                self._steps.clear()
            got = self._steps[symbols] = np.array([self.steps_f.get(s, np.nan) for s in symbols])
            got.flags.writeable = False
        return got

    def marks_for(self, b: Book) -> dict[str, Decimal] | dict[str, float]:
        """The bar's marks in the book's number type (Decimal for prod and the house)."""
        return self.marks if b.exact else self.fmarks

    def decided_at(self) -> int | None:
        """The market moment closes are decided for: on the virtual clock the bar being
        decided (a lagging machine must not move them past a funding time the books have not
        reached); on the real clock now."""
        return self.bar_ms if isinstance(self.ctx.clock, VirtualClock) else None

    async def wind_down(self) -> None:
        """Close what no model stands behind: books of models that left their mode period (a
        prod book by reduce-only orders, then its cash returns to the house), positions the
        house holds, and every position in a symbol the venue is delisting."""
        assert self.ledger.house is not None
        closing = [b for b in self.ledger.books.values() if b.state == CLOSING]
        delisted = [(b, sorted(self.delisted.intersection(b.open_symbols())))
                    for b in self.ledger.prod_books() if b.state != CLOSING
                    ] if self.delisted else []
        if (any(b.mode == "prod" and b.open_symbols() for b in closing)
                or self.ledger.house.open_symbols() or any(s for _, s in delisted)):
            # a batch (and its read of the kill switch) only when there is something to close
            orders = self.gateway.begin(self.ledger, self.marks, self.decided_at())
            for b in closing:
                if b.mode == "prod":
                    self.gateway.add_closes(orders, b)
            self.gateway.add_closes(orders, self.ledger.house)
            for b, symbols in delisted:
                self.gateway.add_closes(orders, b, symbols)
            if orders.orders or orders.refused:
                await self.execute(orders)
        now = self.now_ms()
        for b in closing:
            if b.mode == "shadow" or not b.open_symbols():  # else: try again next bar
                self.ledger.close(b, now)
                self.log.info("book closed", book=b.book_id)

    def allocation(self, bar_ms: int) -> dict[str, float]:
        """Each group's share of the account (:mod:`appliance.allocation`). The volatilities
        are a day of bars, so they are weighed again hourly, or at once when the groups change
        or a book waits for its capital."""
        origin = (self.pool.version, frozenset(b.group for b in self.ledger.books.values()))
        if self.grouped[0] != origin:  # the models or the books changed: group them again
            groups: dict[str, list[str]] = {}
            for m in self.pool.models.values():
                groups.setdefault(m.row["group"], []).extend(m.row["symbols"])
            for g in origin[1]:
                groups.setdefault(g, [])
            self.grouped = (origin, sorted((g, sorted(set(symbols)))
                                           for g, symbols in groups.items()))
        key = self.grouped[1]
        if (bar_ms - self.weighed[0] < HOUR_MS and key == self.weighed[1]
                and not any(b.state == PENDING for b in self.ledger.books.values())):
            return self.weights
        self.weighed = (bar_ms, key)
        prepared, self.prepared = self.prepared, None
        if prepared is not None and prepared[:2] == (bar_ms, key):
            return prepared[2]
        return self.weigh(key)

    def weigh(self, key: list[tuple[str, list[str]]]) -> dict[str, float]:
        book = self.bar_books[TRADING_INTERVALS[0]]
        vols = {g: group_volatility(book.aligned_returns(symbols)) for g, symbols in key}
        return weights(vols, self.ctx.cfg.trading.allocation)

    def prepare_allocation(self, next_bar_ms: int) -> None:
        """Weigh the groups now, after a bar's orders left, when the next bar is due for its
        hourly reweighing: that bar's orders then do not wait for it (~1 ms at 150 symbols).
        Its weights come from the closes up to this bar, a day of bars less the newest one;
        a change of models or books, or a book waiting for capital, still weighs at once."""
        key = self.grouped[1]
        if next_bar_ms - self.weighed[0] >= HOUR_MS and key == self.weighed[1]:
            self.prepared = (next_bar_ms, key, self.weigh(key))

    async def record(self, marked_ts: int, rows: list[tuple], paper: list[tuple[Book, Any]],
                     equities: dict[str, Any], orders: OrderBatch) -> None:
        """Queue what a bar produced for DuckDB (see :class:`Pending`). Model rows carry their
        bar (its open time); equities are keyed by when they were marked (the bar's close)."""
        assert self.ledger.house is not None
        balance = await self.ctx.exchange.balance()
        venue = venue_as_of(balance, self.marks, marked_ts, self.now_ms())
        equity = self.ledger.equity(self.marks)
        self.export_account(marked_ts, equity)
        # while a payment is owed for want of its price, or a rate is not published yet, the
        # books lag what the venue charged: not a gap, and not comparable
        lagging = bool(self.funding.owed) or self.funding.waiting
        if venue is not None and not lagging:
            await self.check_identity(marked_ts, equity, venue)
        account = {"equity": equity, "cash": self.ledger.house.cash,
                   "venue": venue_at(balance, self.marks),
                   "venue_exact": None if lagging else venue,
                   "books": {b.book_id: b.equity(self.marks)
                             for b in self.ledger.account_books()}}
        p = self.pending
        p.model_rows += rows
        p.paper += paper
        p.orders.append(orders)
        p.book_equity += [(marked_ts, i, float(e), str(e)) for i, e in equities.items()]
        p.accounts.append((marked_ts, account))
        p.bars += 1
        self.ctx.bus.put_snapshot(Snapshot.ALLOCATION, {
            "rule": self.ctx.cfg.trading.allocation,
            **self.ledger.summary(self.marks, self.weights)})

    def export_account(self, marked_ts: int, equity: Decimal) -> None:
        """equity_usd, daily_pnl_usd (since the market day's first bar) and
        gross_exposure_usd for the dashboards and alert rules."""
        m = self.ctx.metrics
        day = marked_ts - marked_ts % DAY_MS
        if self.day_open is None or self.day_open[0] != day:
            self.day_open = (day, equity)
        m.equity_usd.set(float(equity))
        m.daily_pnl_usd.set(float(equity - self.day_open[1]))
        m.gross_exposure_usd.set(sum(abs(float(q)) * float(self.marks[s])
                                     for s, q in self.ledger.positions().items()
                                     if q and s in self.marks))

    async def check_identity(self, bar_ms: int, books: Decimal, venue: Decimal) -> None:
        """The account identity, checked at every comparable bar: the books' total must be
        the venue's account to the last digit. A gap (a charge, fee or fill one side does not
        know) is an incident when it opens or changes, not at every bar it persists."""
        gap = books - venue
        if abs(gap) <= IDENTITY_TOLERANCE:
            self.identity_gap = None
            return
        if self.identity_gap is not None and abs(gap - self.identity_gap) <= IDENTITY_TOLERANCE:
            return
        self.identity_gap = gap
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(bar_ms / 1000))
        await self.gateway.incident("reconciliation", (
            f"account identity: at the {when} UTC bar the books total {books:.6f} USDT but "
            f"the venue's account is {venue:.6f} ({gap:+.6f}): a charge, fee or fill that one "
            "side does not know; compare the fills and funding of both around that bar"))

    async def execute(self, batch: OrderBatch) -> bool:
        """Send a batch decided outside a bar's models (closes, a flatten) and write it with
        what is pending; False when the disk is full (then it is written later)."""
        await self.gateway.send(batch)
        self.pending.orders.append(batch)
        self.ledger.dirty.update(b.book_id for b in books_of(batch))
        return await self.flush()

    def flush_due(self) -> bool:
        """On the real clock every bar is written at once; on the virtual clock bars are
        written together (at most every ``FLUSH_S`` real seconds or ``FLUSH_BARS`` bars)."""
        if not isinstance(self.ctx.clock, VirtualClock):
            return True
        return (self.pending.bars >= FLUSH_BARS
                or trio.current_time() - self.pending.since >= FLUSH_S)

    async def flush(self) -> bool:
        """Write what is pending in one transaction, then empty the order journal and announce
        the trades (after the write: an event never names a fill DuckDB lacks).

        False when the disk is full (:mod:`appliance.disk_full`): then everything stays
        pending, the journal keeps the orders, and a later flush writes it all; meanwhile the
        gateway lets only reducing orders through."""
        p, self.pending = self.pending, Pending(trio.current_time())
        books = self.ledger.take_dirty()
        if not (p.bars or books or p.orders):
            return True
        store = self.ctx.store
        try:
            with trio.CancelScope(shield=True):
                await store.run(record_bars, store.store, p.model_rows, p.paper, books,
                                p.book_equity, p.accounts,
                                [o for b in p.orders for o in b.orders + b.refused],
                                self.now_ms())
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self.pending = p.then(self.pending)
            self.ledger.keep_dirty(books)
            if not self.unwritten:
                self.log.warning("disk full: bars kept in memory until they can be written; "
                                 "only reducing orders meanwhile", error=str(exc)[:300])
            self.unwritten = True
            return False
        if self.unwritten:
            self.log.info("pending bars written after the disk took writes again", bars=p.bars)
            self.unwritten = False
        for batch in p.orders:
            self.gateway.settled(batch)
        self.ctx.bus.publish_many(Event.TRADE, [trade_event(b, f) for b, f in p.paper],
                                  service=NAME, market_ts=self.ctx.clock.now())
        return True

    async def save(self) -> None:
        """Write now (new books before their first order, the books after a flatten)."""
        await self.flush()

    # -- operator --------------------------------------------------------------------------

    async def flatten(self, reason: str) -> dict[str, Any]:
        """Close every prod position with reduce-only orders (allowed under the kill switch)."""
        if not self.started:
            await self.start()
        batch = self.gateway.closing_all(self.ledger, self.marks, self.decided_at())
        recorded = await self.execute(batch)
        closed = sorted({o.fill.symbol for o in batch.orders if o.fill is not None})
        self.log.warning("flattened", symbols=closed, reason=reason, recorded=recorded)
        return {"closed": closed, "recorded": recorded}


async def run(ctx: ServiceContext, engine: TradingEngine, hub: BarHub) -> None:
    bars = hub.subscribe(NAME, TRADING_INTERVALS)
    engine.started = False
    outage = Outage(ctx, NAME)
    while not engine.started:  # the venue is needed to start: wait out an outage, degraded
        ctx.beat(NAME)
        try:
            await engine.start()
        except ExchangeError as exc:
            await outage.failed(exc)
    await outage.ok()
    checked_at = ctx.clock.now()
    virtual = isinstance(ctx.clock, VirtualClock)
    rehearsals = Rehearsals(ctx.cfg.trading.rehearse_ms / 1000)
    idle_at = trio.current_time()
    try:
        while True:
            ctx.beat(NAME)
            batch = None
            # wall time: beat, reload the pool and reconcile even without bars; once the
            # next bar has closed, rehearse its path until it comes (appliance.rehearsal)
            behind = virtual and ctx.clock.held  # the feed catching up: leave it the CPU
            wait, rehearse = rehearsals.wait_s(None if behind else engine.next_close_ms(),
                                               engine.now_ms(), trio.current_time(), IDLE_S,
                                               ctx.clock.speed)
            with trio.move_on_after(wait):
                try:
                    batch = await bars.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    raise RuntimeError("cut off by the bar hub for falling behind; catching "
                                       "up from the store") from None
            if batch is None and rehearse:  # nothing else until the bar or the window's end
                if virtual and ctx.clock.held:
                    continue
                try:
                    engine.rehearse()
                except Exception as exc:  # a rehearsal never takes trading down
                    engine.log.error("rehearsals stopped: one failed (bars are decided as "
                                     "without them)", error=repr(exc)[:300])
                    rehearsals.every_s = 0.0
                continue
            if batch is None and wait < IDLE_S and trio.current_time() - idle_at < IDLE_S:
                continue  # woken at a bar's close
            if batch is not None:
                if virtual:  # market time waits while bars are decided
                    ctx.clock.hold(NAME)
                for b in [batch, *drain(bars)]:
                    await engine.on_batch(b)
                if engine.flush_due():
                    await engine.flush()
                if virtual:
                    ctx.clock.release(NAME)
            else:  # between bars: a registry change is loaded now, not by the next bar
                await engine.pool.refresh()
                await engine.flush()
                idle_at = trio.current_time()
            if ctx.clock.now() - checked_at >= HOUR_MS / 1000:
                try:
                    await engine.refresh_instruments()
                    await engine.reconcile()
                except ExchangeError as exc:  # an outage: the hourly check waits for the venue
                    if getattr(exc, "fatal", False):
                        raise
                    engine.log.warning("hourly check with the venue postponed a minute",
                                       error=str(exc))
                    checked_at = ctx.clock.now() - HOUR_MS / 1000 + RECHECK_S
                    continue
                await engine.pool.refresh(force=True)
                checked_at = ctx.clock.now()
    finally:
        with trio.CancelScope(shield=True):
            if not await engine.flush():
                engine.log.error("stopped with bars unwritten: the disk is full (the order "
                                 "journal keeps their orders for the next start)")
        if virtual:
            ctx.clock.release(NAME)


def drain(bars: trio.MemoryReceiveChannel) -> list[BarBatch]:
    """Every batch already waiting, oldest first (decided under one hold of the clock)."""
    out = []
    while True:
        try:
            out.append(bars.receive_nowait())
        except trio.WouldBlock:
            return out

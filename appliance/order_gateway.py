"""The order gateway: the only road to the venue, and where layer 7 lives.

Every order of every prod book — a model's rebalance, a closing book, a flatten — passes here,
a bar's orders together as one :class:`OrderBatch`:

1. **Checks**, as each order is added: the symbol is not halted by reconciliation; the kill
   switch (``maintenance_mode``), a full disk (``disk_full``: nothing new could be recorded,
   :mod:`appliance.disk_full`) and the risk limits (:func:`appliance.risk.check_order`:
   daily loss, order rate, per-symbol notional, gross exposure, leverage) hold on the account as
   it would stand after the orders already in the batch. A refusal is recorded with its reason
   and counted, never sent.
2. **Write-ahead**: the batch's orders are appended to the order journal (keyed by the
   ``orderLinkId`` the venue sees, :mod:`appliance.order_journal`) *before* any is sent.
3. **Send**: shielded from cancellation (an order in flight is never abandoned); the kill
   switch (its bus token, read from a mapped file without a system call,
   :mod:`appliance.kill_guard`) and the disk are checked again right before each order leaves,
   so a switch thrown (or a disk filled) mid-batch stops every order that would add risk. A
   venue that fills locally (the paper venues: ``BATCH_FILLS``) takes what passes in one call,
   with nothing between its orders to throw a switch in; a network venue one order at a time.
4. **Book**: the fills go into their books; the orders as they ended, the fills and the books
   are written to DuckDB in one transaction, and the journal is emptied.

A crash between the venue's fill and step 4 loses nothing: at the next start
:meth:`OrderGateway.settle_pending` asks the venue for each journalled order DuckDB does not
know and adopts its fill.
Reconciliation compares the venue's positions with the books' (prod books plus the house): a
symbol that differs is an incident and is halted until they agree again.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

import trio

from appliance.books import Book, BookFill
from appliance.clock import VirtualClock
from appliance.contracts import Event
from appliance.domain import Fill, OrderIntent, Side
from appliance.exchange.base import BATCH_FILLS, ExchangeError
from appliance.ledger import Ledger
from appliance.ledger_store import known_orders, record_orders
from appliance.logs import service_logger
from appliance.kill_guard import KillGuard
from appliance.order_journal import OrderJournal
from appliance.risk import AccountView, RiskLimits, check_move, gross_exposure, moved_gross

NAME = "trading"
ZERO = Decimal(0)


@dataclass(slots=True)
class Order:
    book: Book
    symbol: str
    side: Side
    qty: Decimal
    reduce_only: bool
    order_id: str
    ts: int
    price: Decimal
    status: str = "pending"  # → filled, failed, refused
    reason: str = ""
    fill: BookFill | None = None


@dataclass
class OrderBatch:
    """A bar's orders, checked against the account as it would stand after each."""

    view: AccountView
    decided_ms: int | None = None  # the bar's close the orders answer (None: now)
    orders: list[Order] = field(default_factory=list)
    refused: list[Order] = field(default_factory=list)
    venue_s: float = 0.0  # wall time spent in the venue's place_order (the network's share)
    # when the last order was handed to the venue (perf_counter, process_time), and each
    # order's bar close → leaving latency (observed once the venue has answered)
    left: tuple[float, float] | None = None
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def positions(self) -> dict[str, Decimal]:
        return self.view.positions  # type: ignore[return-value]


def books_of(batch: OrderBatch) -> list[Book]:
    """The books a batch's fills changed."""
    return list({o.book.book_id: o.book for o in batch.orders if o.fill is not None}.values())


def trade_event(book: Book, f: BookFill, reduce_only: bool = False) -> dict[str, Any]:
    """The ``trade`` event of a fill (the trade feed's row)."""
    return {"ts_ms": f.ts, "symbol": f.symbol, "side": "Buy" if f.qty > 0 else "Sell",
            "qty": str(abs(f.qty)), "price": str(f.price), "fee": str(f.fee), "pnl": f.pnl,
            "trade": f.trade, "model_id": book.model_id, "book_id": book.book_id,
            "mode": book.mode, "reduce_only": reduce_only}


class OrderGateway:
    def __init__(self, ctx: Any, limits: RiskLimits, journal: OrderJournal) -> None:
        self.ctx = ctx
        self.limits = limits
        self.journal = journal
        self.log = service_logger(NAME)
        self.halted: set[str] = set()
        self.order_times: deque[float] = deque()
        self.day_start: tuple[int, Decimal] | None = None  # (UTC day ms, account equity)
        self.kill = KillGuard(ctx.bus)
        self._order_prefix = f"mt-{uuid.uuid4().hex[:16]}"
        self._order_seq = 0

    # -- the checks ------------------------------------------------------------------------

    def rate_time(self, decided_ms: int | None) -> float:
        """The moment an order counts at for the rate cap: market time, so that a sim at any
        speed sends what real time would; on the virtual clock the bar's own time, since a
        machine catching up decides many bars at one held moment."""
        if decided_ms is not None and isinstance(self.ctx.clock, VirtualClock):
            return decided_ms / 1000
        return self.ctx.clock.now()

    def new_day(self, day_ms: int, equity_of: Callable[[], Decimal]) -> None:
        """Start the daily loss limit's day at the account's equity (asked for only when a
        new UTC day begins)."""
        if self.day_start is None or self.day_start[0] != day_ms:
            self.day_start = (day_ms, equity_of())

    def begin(self, ledger: Ledger, marks: Mapping[str, Decimal],
              decided_ms: int | None = None, equity: Decimal | None = None) -> OrderBatch:
        """A batch over the account as it stands (a position without a bar yet is priced at
        its average price, so that exposure can always be measured). The kill switch is read
        here, once a batch (:meth:`KillGuard.begin`: on the reading the engine took after
        the last bar's orders, when nothing changed since); the gross exposure is summed once
        and kept running by :meth:`add`. ``equity``: the account's at ``marks``, when the
        caller has it."""
        now = self.rate_time(decided_ms)
        while self.order_times and self.order_times[0] < now - 60:
            self.order_times.popleft()
        self.kill.bus = self.ctx.bus  # a rebuilt bus is a new object on the context
        view = self.view(ledger, marks, equity)
        view.maintenance_mode = self.kill.begin()
        return OrderBatch(view, decided_ms)

    def view(self, ledger: Ledger, marks: Mapping[str, Decimal],
             equity: Decimal | None = None) -> AccountView:
        """The account as :meth:`begin` sees it, without reading the kill switch: its
        ``maintenance_mode`` is True (no order that adds risk) until the caller sets it."""
        if equity is None:
            equity = ledger.equity(marks)
        day_pnl = equity - self.day_start[1] if self.day_start is not None else Decimal(0)
        prices: Mapping[str, Decimal] = marks  # read only: copied when a position lacks a mark
        for book in ledger.account_books():
            for symbol in book.open_symbols():
                if symbol not in prices:
                    avg = Decimal(str(book.positions[symbol].avg_price))
                    prices = {**prices, symbol: avg}
        positions = ledger.positions()  # the batch's own dict
        if not all(isinstance(q, Decimal) for q in positions.values()):
            positions = {s: q if isinstance(q, Decimal) else Decimal(str(q))
                         for s, q in positions.items()}
        return AccountView(
            equity=equity, positions=positions, prices=prices,
            orders_last_minute=len(self.order_times), daily_pnl=day_pnl,
            maintenance_mode=True, disk_full=self.ctx.disk.full,
            gross=gross_exposure(positions, prices))

    def next_order_id(self) -> str:
        """A new ``orderLinkId``: this gateway's random prefix and a counter (unique across
        restarts without a uuid4 per order; 27 characters, the venue allows 36)."""
        self._order_seq += 1
        return f"{self._order_prefix}{self._order_seq:08x}"

    def add(self, batch: OrderBatch, book: Book, symbol: str, side: Side, qty: Decimal,
            reduce_only: bool, rehearsal: bool = False) -> bool:
        """Check one order against the account after the batch's earlier orders; True when it
        joins the batch (a refusal is kept, with its reason, to be recorded). The batch's
        positions and running gross exposure move with each order let through.

        ``rehearsal``: the batch is a rehearsal's (:meth:`rehearse`), never sent: the order
        takes no order id, and a refusal is neither counted nor logged."""
        if qty <= 0:
            raise ValueError(f"order qty must be positive, got {qty}")
        view = batch.view
        price = view.prices.get(symbol, ZERO)
        order = Order(book, symbol, side, qty, reduce_only,
                      "" if rehearsal else self.next_order_id(),
                      int(self.ctx.clock.now() * 1000), price)
        positions = view.positions  # the batch's own dict (begin made it)
        before = positions.get(symbol, ZERO)
        after = before + qty if side is Side.BUY else before - qty
        reason = "halted" if symbol in self.halted else check_move(
            symbol, before, after, reduce_only, price, view, self.limits)
        if reason is not None:
            order.status, order.reason = "refused", reason
            batch.refused.append(order)
            if rehearsal:
                return False
            self.ctx.metrics.orders_refused_total.labels(reason).inc()
            self.log.info("order refused", symbol=symbol, side=side.value, qty=str(qty),
                          book=book.book_id, reason=reason)
            return False
        positions[symbol] = after  # type: ignore[index]
        view.orders_last_minute += 1
        view.gross = moved_gross(view.gross, before, after, view.prices.get(symbol))
        batch.orders.append(order)
        return True

    def rehearsal(self, ledger: Ledger, marks: Mapping[str, Decimal],
                  equity: Decimal | None = None) -> OrderBatch:
        """A batch to rehearse a bar's orders in (:meth:`add` with ``rehearsal=True``, then
        :meth:`rehearse`): over the account as :meth:`begin` sees it, with the switch taken
        as off so that every check runs; nothing of the gateway changes."""
        view = self.view(ledger, marks, equity)
        view.maintenance_mode = False
        return OrderBatch(view)

    def rehearse(self, batch: OrderBatch) -> int:
        """What :meth:`send` does to a batch up to the venue, without doing it: the journal's
        lines and the venue's order intents are made and dropped (nothing is written or sent;
        no order id, rate-cap time or metric is taken). Returns the orders gone over."""
        self.journal.order_lines((o.order_id, o.book.book_id, o.symbol, o.side.value, o.qty,
                                  o.ts) for o in batch.orders)
        for o in batch.orders:
            self._intent(batch, o)
        return len(batch.orders)

    # -- sending ---------------------------------------------------------------------------

    async def send(self, batch: OrderBatch, t0: float | None = None) -> list[BookFill]:
        """Journal the batch and send it; the fills go into their books (in memory). The
        caller records the batch (:meth:`record_args`) and then calls :meth:`settled`.

        A venue that fills a batch in one local step (``BATCH_FILLS``: the paper venues) gets
        every order that passes the last check in one call; any other gets them one by one,
        each checked right before it leaves."""
        booked: list[BookFill] = []
        if not batch.orders:
            return booked
        with trio.CancelScope(shield=True):  # orders in flight are never abandoned
            self.journal.append_orders((o.order_id, o.book.book_id, o.symbol, o.side.value,
                                        o.qty, o.ts) for o in batch.orders)
            try:
                if BATCH_FILLS in self.ctx.exchange.capabilities:
                    # one call takes them all: nothing can throw a switch between two of
                    # them, so the last check is one for the whole batch
                    stop = self._stop_reason()
                    going = batch.orders if stop is None else [
                        o for o in batch.orders if not self._stopped(o, stop)]
                    at = self.rate_time(batch.decided_ms)
                    intents = [self._intent(batch, o) for o in going]
                    self.order_times.extend([at] * len(intents))
                    batch.left = time.perf_counter(), time.process_time()
                    sent = batch.left[0]
                    if t0 is not None:
                        batch.latencies_ms += [(sent - t0) * 1000] * len(intents)
                    try:
                        results = await self.ctx.exchange.place_orders(intents) if intents else []
                    finally:
                        batch.venue_s += time.perf_counter() - sent
                    for order, result in zip(going, results):
                        self._outcome(order, result, booked)
                    _raise_fatal(results)
                    return booked
                for order in batch.orders:
                    if self._stopped(order, self._stop_reason()):
                        continue
                    intent = self._leaving(batch, order, t0)
                    batch.left = time.perf_counter(), time.process_time()
                    sent = batch.left[0]
                    try:
                        result: Fill | ExchangeError = await self.ctx.exchange.place_order(intent)
                    except ExchangeError as exc:
                        result = exc
                    finally:
                        batch.venue_s += time.perf_counter() - sent
                    self._outcome(order, result, booked)
                    _raise_fatal([result])
            finally:
                observe = self.ctx.metrics.trade_latency_ms.observe
                for ms in batch.latencies_ms:
                    observe(ms)
                batch.latencies_ms.clear()
        return booked

    def _stop_reason(self) -> str | None:
        """Why no order that adds risk may leave now: the kill switch is on (the switch as
        read when the batch began, read again only when its token moved since) or the disk
        is full; None when they may."""
        return ("maintenance_mode" if self.kill.on()
                else "disk_full" if self.ctx.disk.full else None)

    def _stopped(self, order: Order, stop: str | None) -> bool:
        """Refuse ``order`` if it adds risk and ``stop`` (:meth:`_stop_reason`) says why."""
        if stop is None or order.reduce_only:
            return False
        metrics = self.ctx.metrics
        order.status, order.reason = "refused", stop
        metrics.orders_refused_total.labels(stop).inc()
        metrics.orders_total.labels("refused").inc()
        return True

    def _leaving(self, batch: OrderBatch, order: Order, t0: float | None) -> OrderIntent:
        """The order as the venue gets it; its latency (bar close → handed to the venue) and
        its place in the rate cap count from now."""
        if t0 is not None:
            batch.latencies_ms.append((time.perf_counter() - t0) * 1000)
        self.order_times.append(self.rate_time(batch.decided_ms))
        return self._intent(batch, order)

    @staticmethod
    def _intent(batch: OrderBatch, order: Order) -> OrderIntent:
        return OrderIntent(order.symbol, order.side, order.qty, reduce_only=order.reduce_only,
                           model_id=order.book.model_id, order_link_id=order.order_id,
                           decided_ms=batch.decided_ms)

    def _outcome(self, order: Order, result: Fill | ExchangeError, booked: list[BookFill]
                 ) -> None:
        metrics = self.ctx.metrics
        if isinstance(result, ExchangeError):
            order.status, order.reason = "failed", str(result)
            metrics.orders_total.labels("failed").inc()
            self.log.error("order failed", symbol=order.symbol, book=order.book.book_id,
                           error=str(result))
            return
        metrics.orders_total.labels("filled").inc()
        order.status, order.fill = "filled", self._book(order.book, result)
        booked.append(order.fill)

    def settled(self, batch: OrderBatch) -> None:
        """The batch is recorded in DuckDB: empty the journal, announce the trades."""
        if batch.orders:
            self.journal.clear()
        self.ctx.bus.publish_many(Event.TRADE, [
            trade_event(o.book, o.fill, o.reduce_only) for o in batch.orders
            if o.fill is not None], service=NAME, market_ts=self.ctx.clock.now())

    @staticmethod
    def _book(book: Book, fill: Fill) -> BookFill:
        signed = fill.qty if fill.side is Side.BUY else -fill.qty
        return book.apply(fill.symbol, signed, fill.price, fill.fee, fill.ts)

    def publish(self, book: Book, f: BookFill, reduce_only: bool = False) -> None:
        self.ctx.bus.publish(Event.TRADE, trade_event(book, f, reduce_only), service=NAME,
                             market_ts=self.ctx.clock.now())

    def add_closes(self, batch: OrderBatch, book: Book, symbols: list[str] | None = None
                   ) -> None:
        """Orders closing ``book``'s positions (all, or ``symbols``).

        The venue nets every book's position in a symbol into one, so a book's close is
        reduce-only only as far as it shrinks that net position (allowed under the kill switch,
        since it never adds risk); the rest — another book holds the other side — is a plain
        order, checked like any other. Sent whole as reduce-only, the venue refused it."""
        for symbol in symbols if symbols is not None else book.open_symbols():
            qty = Decimal(str(book.qty(symbol)))
            if not qty:
                continue
            side = Side.SELL if qty > 0 else Side.BUY
            net = batch.view.positions.get(symbol, Decimal(0))
            reducing = min(abs(qty), abs(net)) if net and (net > 0) == (qty > 0) else Decimal(0)
            if reducing:
                self.add(batch, book, symbol, side, reducing, True)
            if abs(qty) - reducing:
                self.add(batch, book, symbol, side, abs(qty) - reducing, False)

    def closing_all(self, ledger: Ledger, marks: Mapping[str, Decimal],
                    decided_ms: int | None = None) -> OrderBatch:
        """A batch closing every position of every account book (the kill switch's flatten);
        the engine sends and records it."""
        batch = self.begin(ledger, marks, decided_ms)
        for book in ledger.account_books():
            self.add_closes(batch, book)
        return batch

    # -- after a crash, and hourly ---------------------------------------------------------

    async def settle_pending(self, ledger: Ledger) -> list[str]:
        """Journalled orders DuckDB does not know (the process died between sending them and
        recording them): adopt the venue's fill into the order's book, or record the order as
        never executed. Returns their ids."""
        store = self.ctx.store
        entries = self.journal.entries()
        if self.journal.damaged:
            await self.incident("reconciliation", (
                f"order journal: {self.journal.damaged} damaged line(s) skipped at start; an "
                "order they held may have reached the venue unrecorded, so reconciliation "
                "halts any symbol whose position differs from the venue's"))
        known = await store.run(known_orders, store.store, [e["order_id"] for e in entries])
        books = {b.book_id: b for b in ledger.account_books()}
        orders = []
        for e in entries:
            if e["order_id"] in known:
                continue
            book = books.get(e["book_id"])
            if book is None:
                self.log.error("a journalled order's book is gone", order_id=e["order_id"],
                               book=e["book_id"])
                continue
            fill = await self.ctx.exchange.order_fill(e["symbol"], e["order_id"])
            order = Order(book, e["symbol"], Side(e["side"]), Decimal(e["qty"]), False,
                          e["order_id"], int(e["ts"]), Decimal(0))
            if fill is None:
                order.status, order.reason = "unfilled", "not executed by the venue"
            else:
                order.status, order.fill = "filled", self._book(book, fill)
                self.publish(book, order.fill)
                self.log.warning("adopted the venue's fill of an order a crash left unrecorded",
                                 order_id=e["order_id"], symbol=fill.symbol, book=book.book_id)
            orders.append(order)
        if orders:
            await store.run(record_orders, store.store, orders,
                            list({o.book.book_id: o.book for o in orders}.values()),
                            int(self.ctx.clock.now() * 1000))
        self.journal.clear()
        return [o.order_id for o in orders]

    async def reconcile(self, ledger: Ledger) -> list[str]:
        """Compare the books with the venue; halt (and report) every symbol that differs."""
        ours = ledger.positions()
        theirs = {p.symbol: p.qty for p in await self.ctx.exchange.positions()}
        mismatched = sorted(s for s in set(ours) | set(theirs)
                            if Decimal(str(ours.get(s, 0))) != theirs.get(s, Decimal(0)))
        for symbol in mismatched:
            if symbol not in self.halted:
                await self.incident("reconciliation", f"{symbol}: our books say "
                                    f"{ours.get(symbol, 0)}, the exchange says "
                                    f"{theirs.get(symbol, 0)}; trading in {symbol} halted")
        for symbol in self.halted - set(mismatched):
            self.log.info("reconciled again; trading resumes", symbol=symbol)
        self.halted = set(mismatched)
        return mismatched

    async def incident(self, kind: str, message: str) -> None:
        self.log.error(message, kind=kind)
        await self.ctx.store.call("record_incident", NAME, kind, message, None)
        self.ctx.bus.publish(Event.INCIDENT, {"service": NAME, "kind": kind, "message": message},
                             service=NAME, market_ts=self.ctx.clock.now())


def _raise_fatal(results: Sequence[object]) -> None:
    """Once the outcomes are recorded: an order refused for a reason no retry mends (Bybit
    refused the API key) stops ``run`` with maintenance mode ON, instead of failing every
    order of every bar after it."""
    fatal = next((r for r in results if getattr(r, "fatal", False)), None)
    if isinstance(fatal, BaseException):
        raise fatal

"""The money path's rows in DuckDB: orders, fills, books, their equity, per-model bars.

Books are stored with their numbers as decimal strings (``str(Decimal)``, ``repr(float)``), so
a prod book read back after a restart is the very book that was written — to the last digit —
and a restart changes no model's record.

Every write is a bulk insert of an Arrow table inside one transaction: a bar's rows (a few
hundred at 50 symbols) cost one statement per table, where row-by-row inserts cost a
millisecond each. The order gateway's write-ahead log is a file
(:mod:`appliance.order_journal`), not DuckDB, for the same reason.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Iterable, Sequence

import pyarrow as pa

from appliance.books import Book, BookFill, Holding
from appliance.store import Store

ORDER_COLUMNS = ("order_id", "ts", "symbol", "side", "qty", "model_id", "mode", "status",
                 "reason", "price", "book_id")
FILL_COLUMNS = ("order_id", "ts", "symbol", "side", "qty", "price", "fee", "model_id", "mode",
                "fill_id", "book_id", "pnl", "trade")
BOOK_COLUMNS = ("book_id", "model_id", "mode", "grp", "opened", "closed", "state", "exact",
                "capital", "cash", "fees", "trades", "fills", "next_fill", "updated", "funding",
                "funded_to")
BAR_COLUMNS = ("ts", "model_id", "symbol", "mode", "close", "target", "p_short", "p_flat",
               "p_long", "book_id")


def _s(value: object) -> str | None:
    if value is None:
        return None
    return repr(value) if isinstance(value, float) else str(value)


def _bulk(store: Store, table: str, columns: Sequence[str], rows: list[tuple],
          conflict: str = "") -> None:
    """INSERT the rows (tuples in ``columns`` order) in one statement."""
    if not rows:
        return
    data = pa.table({c: pa.array([r[i] for r in rows]) for i, c in enumerate(columns)})
    name = f"_bulk_{table}"
    store.con.register(name, data)
    try:
        cols = ", ".join(columns)
        store.sql(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {name} {conflict}")
    finally:
        store.con.unregister(name)


def _transaction(store: Store, fn: Any) -> None:
    store.sql("BEGIN TRANSACTION")
    try:
        fn()
        store.sql("COMMIT")
    except Exception:
        store.sql("ROLLBACK")
        raise


def _order_row(o: Any) -> tuple:
    return (o.order_id, o.ts, o.symbol, o.side.value, _s(o.qty), o.book.model_id, o.book.mode,
            o.status, o.reason, _s(o.fill.price if o.fill is not None else o.price),
            o.book.book_id)


def _fill_row(f: BookFill, order_id: str, model_id: str, mode: str) -> tuple:
    return (order_id, f.ts, f.symbol, "Buy" if f.qty > 0 else "Sell", _s(abs(f.qty)),
            _s(f.price), _s(f.fee), model_id, mode, f.fill_id, f.book_id, f.pnl, f.trade)


# -- orders and fills -------------------------------------------------------------------------

def record_orders(store: Store, orders: Iterable[Any], books: Iterable[Book], ts: int) -> None:
    """A batch's orders as they ended (filled, failed, refused, unfilled), their fills and the
    books they changed, in one transaction."""
    orders = list(orders)

    def write() -> None:
        _bulk(store, "orders", ORDER_COLUMNS, [_order_row(o) for o in orders],
              "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, "
              "reason = excluded.reason, price = excluded.price")
        _bulk(store, "fills", FILL_COLUMNS, [_fill_row(o.fill, o.order_id, o.book.model_id,
                                                       o.book.mode)
                                             for o in orders if o.fill is not None])
        _save_books(store, books, ts)

    _transaction(store, write)


def known_orders(store: Store, order_ids: Sequence[str]) -> set[str]:
    """Which of ``order_ids`` DuckDB already holds."""
    if not order_ids:
        return set()
    data = pa.table({"order_id": pa.array(list(order_ids), pa.string())})
    store.con.register("_ids", data)
    try:
        return {r[0] for r in store.sql("SELECT order_id FROM orders JOIN _ids USING (order_id)")}
    finally:
        store.con.unregister("_ids")


# -- books ------------------------------------------------------------------------------------

def _save_books(store: Store, books: Iterable[Book], ts: int) -> None:
    books = list(books)
    _bulk(store, "books", BOOK_COLUMNS,
          [(b.book_id, b.model_id, b.mode, b.group, b.opened_ms, b.closed_ms, b.state, b.exact,
            _s(b.capital), _s(b.cash), _s(b.fees), b.trades, b.fills, b.next_fill, ts,
            _s(b.funding), b.funded_to)
           for b in books],
          "ON CONFLICT (book_id) DO UPDATE SET closed = excluded.closed, state = excluded.state, "
          "capital = excluded.capital, cash = excluded.cash, fees = excluded.fees, "
          "trades = excluded.trades, fills = excluded.fills, next_fill = excluded.next_fill, "
          "funding = excluded.funding, funded_to = excluded.funded_to, "
          "updated = excluded.updated")
    rows = []
    for b in books:
        for symbol in sorted(b.touched):
            h = b.positions[symbol]
            rows.append((b.book_id, symbol, _s(h.qty), _s(h.cost), _s(h.realized), ts))
        b.touched.clear()
    _bulk(store, "book_positions", ("book_id", "symbol", "qty", "cost", "realized", "updated"),
          rows, "ON CONFLICT (book_id, symbol) DO UPDATE SET qty = excluded.qty, "
                "cost = excluded.cost, realized = excluded.realized, "
                "updated = excluded.updated")


def save_book(store: Store, b: Book, ts: int) -> None:
    _transaction(store, lambda: _save_books(store, [b], ts))


def book_fills_since(store: Store, since_ms: int) -> list[tuple[str, str, str, int]]:
    """Every book's fills at or after ``since_ms``: (book id, symbol, signed quantity as a
    decimal string, time in ms)."""
    return [(book_id, symbol, qty if side == "Buy" else f"-{qty}", int(ts))
            for book_id, symbol, side, qty, ts in store.sql(
                "SELECT book_id, symbol, side, CAST(qty AS VARCHAR), ts FROM fills "
                "WHERE ts >= ? AND book_id IS NOT NULL ORDER BY ts", [since_ms])]


def load_books(store: Store, states: tuple[str, ...] = ("pending", "open", "closing")
               ) -> list[Book]:
    """The books in ``states``, exactly as they were saved."""
    marks = ", ".join("?" for _ in states)
    rows = store._dicts(f"SELECT * FROM books WHERE state IN ({marks}) ORDER BY opened, book_id",
                        list(states))
    books = []
    for r in rows:
        conv = Decimal if r["exact"] else float
        b = Book(r["book_id"], r["model_id"], r["mode"], r["grp"], int(r["opened"]),
                 conv(r["capital"]), conv(r["cash"]), exact=bool(r["exact"]),
                 fees=conv(r["fees"]), trades=int(r["trades"]), fills=int(r["fills"]),
                 next_fill=int(r["next_fill"]), state=r["state"],
                 closed_ms=None if r["closed"] is None else int(r["closed"]),
                 funding=conv(r["funding"] or 0),
                 funded_to=None if r["funded_to"] is None else int(r["funded_to"]))
        for symbol, qty, cost, realized in store.sql(
                "SELECT symbol, qty, cost, realized FROM book_positions WHERE book_id = ?",
                [b.book_id]):
            b.positions[symbol] = Holding(conv(qty), conv(cost), conv(realized))
        books.append(b)
    return books


def record_bars(store: Store, model_rows: list[tuple],
                paper_fills: Iterable[tuple[Book, BookFill]], books: Iterable[Book],
                book_equity: list[tuple[int, str, float, str]],
                accounts: list[tuple[int, dict[str, Any]]], orders: Iterable[Any] = (),
                ts: int = 0) -> None:
    """What one or more bars produced, in one transaction: the orders as they ended and their
    fills, every model's targets, the paper fills, the books that changed (as they stand now),
    every book's equity and the account's. An account row holds the books' total, the house's
    cash, the venue's own equity at the same marks as of the bar (``venue_exact``; NULL where
    that cannot be known, see :func:`appliance.account_identity.venue_as_of`) and
    each account book's equity, so the identity ``equity = Σ books`` can be checked from the
    table."""
    orders = list(orders)

    def write() -> None:
        _bulk(store, "orders", ORDER_COLUMNS, [_order_row(o) for o in orders],
              "ON CONFLICT (order_id) DO UPDATE SET status = excluded.status, "
              "reason = excluded.reason, price = excluded.price")
        _bulk(store, "fills", FILL_COLUMNS,
              [_fill_row(o.fill, o.order_id, o.book.model_id, o.book.mode) for o in orders
               if o.fill is not None]
              + [_fill_row(f, f.fill_id, b.model_id, b.mode) for b, f in paper_fills])
        _bulk(store, "model_bars", BAR_COLUMNS, model_rows, "ON CONFLICT DO NOTHING")
        _save_books(store, books, ts)
        _bulk(store, "book_equity", ("ts", "book_id", "equity", "exact"), book_equity,
              "ON CONFLICT DO NOTHING")
        latest: dict[int, dict[str, Any]] = {}
        for at, a in accounts:  # the 5m and 1h bars of one moment share one row: the later
            latest[at] = a
        _bulk(store, "equity", ("ts", "equity", "wallet", "cash", "exact", "venue_exact",
                                "books"),
              [(at, float(a["equity"]), float(a["venue"]), float(a["cash"]), str(a["equity"]),
                None if a.get("venue_exact") is None else str(a["venue_exact"]),
                json.dumps({k: str(v) for k, v in a["books"].items()}))
               for at, a in sorted(latest.items())],
              "ON CONFLICT (ts) DO UPDATE SET equity = excluded.equity, "
              "wallet = excluded.wallet, cash = excluded.cash, exact = excluded.exact, "
              "venue_exact = excluded.venue_exact, books = excluded.books")

    _transaction(store, write)


# -- series -----------------------------------------------------------------------------------

def equity_since(store: Store, since_ms: int) -> list[tuple[int, float]]:
    return [(int(t), float(e)) for t, e in store.sql(
        "SELECT ts, equity FROM equity WHERE ts >= ? ORDER BY ts", [since_ms])]


def book_equity(store: Store, book_id: str, since_ms: int = 0,
                until_ms: int | None = None) -> list[tuple[int, float]]:
    until = "AND ts <= ?" if until_ms is not None else ""
    return [(int(t), float(e)) for t, e in store.sql(
        f"SELECT ts, equity FROM book_equity WHERE book_id = ? AND ts >= ? {until} ORDER BY ts",
        [book_id, since_ms, *([until_ms] if until_ms is not None else [])])]


def book_bars(store: Store, book_id: str, since_ms: int = 0) -> list[dict[str, Any]]:
    return store._dicts("SELECT ts, symbol, close, target FROM model_bars WHERE book_id = ? "
                        "AND ts >= ? ORDER BY symbol, ts", [book_id, since_ms])


def refused_orders(store: Store, book_id: str, since_ms: int = 0) -> int:
    """How many of the book's orders the risk limits refused since ``since_ms``."""
    return int(store.sql("SELECT count(*) FROM orders WHERE book_id = ? AND ts >= ? AND "
                         "status = 'refused'", [book_id, since_ms])[0][0])


def book_row(store: Store, book_id: str) -> dict[str, Any] | None:
    rows = store._dicts("SELECT * FROM books WHERE book_id = ?", [book_id])
    return rows[0] if rows else None

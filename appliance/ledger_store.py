"""The money path's rows in DuckDB: orders, fills, books, their equity, per-model bars.

Books are stored with their numbers as decimal strings (``str(Decimal)``, ``repr(float)``), so
a prod book read back after a restart is the very book that was written — to the last digit —
and a restart changes no model's record. Orders are written before they are sent (status
``pending``, keyed by the ``orderLinkId`` the venue also sees) so that a crash between the
venue's fill and our write loses nothing: reconciliation adopts the fill at the next start.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Iterable

from appliance.books import Book, BookFill, Holding
from appliance.store import Store


def _s(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


# -- orders and fills -------------------------------------------------------------------------

def record_orders(store: Store, orders: Iterable[Any]) -> None:
    """A batch's orders before they are sent (``pending``) and its refusals, in one
    transaction: the write-ahead log of the order gateway."""
    store.sql("BEGIN TRANSACTION")
    try:
        for o in orders:
            store.sql("INSERT INTO orders (order_id, ts, symbol, side, qty, model_id, mode, "
                      "status, reason, price, book_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT (order_id) DO NOTHING",
                      [o.order_id, o.ts, o.symbol, o.side.value, o.qty, o.book.model_id,
                       o.book.mode, o.status, o.reason, o.price, o.book.book_id])
        store.sql("COMMIT")
    except Exception:
        store.sql("ROLLBACK")
        raise


def record_fills(store: Store, orders: Iterable[Any]) -> None:
    """What became of a batch's orders, their fills and the books they changed, in one
    transaction."""
    orders = list(orders)
    store.sql("BEGIN TRANSACTION")
    try:
        books = {}
        for o in orders:
            price = o.fill.price if o.fill is not None else None
            store.sql("UPDATE orders SET status = ?, reason = ?, price = coalesce(?, price) "
                      "WHERE order_id = ?", [o.status, o.reason, None if price is None
                                             else _s(price), o.order_id])
            if o.fill is not None:
                _insert_fill(store, o.fill, o.order_id, o.book.model_id, o.book.mode)
                books[o.book.book_id] = o.book
        for book in books.values():
            save_book(store, book, max(o.ts for o in orders))
        store.sql("COMMIT")
    except Exception:
        store.sql("ROLLBACK")
        raise


def pending_orders(store: Store) -> list[dict[str, Any]]:
    return store._dicts("SELECT order_id, ts, symbol, side, qty, book_id, model_id FROM orders "
                        "WHERE status = 'pending' ORDER BY ts")


def _insert_fill(store: Store, f: BookFill, order_id: str, model_id: str, mode: str) -> None:
    store.sql("INSERT INTO fills (order_id, ts, symbol, side, qty, price, fee, model_id, mode, "
              "fill_id, book_id, pnl, trade) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              [order_id, f.ts, f.symbol, "Buy" if f.qty > 0 else "Sell", _s(abs(f.qty)),
               _s(f.price), _s(f.fee), model_id, mode, f.fill_id, f.book_id, f.pnl, f.trade])


# -- books ------------------------------------------------------------------------------------

def save_book(store: Store, b: Book, ts: int) -> None:
    store.sql("INSERT INTO books VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
              "ON CONFLICT (book_id) DO UPDATE SET closed = excluded.closed, "
              "state = excluded.state, capital = excluded.capital, cash = excluded.cash, "
              "fees = excluded.fees, trades = excluded.trades, fills = excluded.fills, "
              "next_fill = excluded.next_fill, updated = excluded.updated",
              [b.book_id, b.model_id, b.mode, b.group, b.opened_ms, b.closed_ms, b.state,
               b.exact, _s(b.capital), _s(b.cash), _s(b.fees), b.trades, b.fills, b.next_fill,
               ts])
    for symbol, h in b.positions.items():
        store.sql("INSERT INTO book_positions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT "
                  "(book_id, symbol) DO UPDATE SET qty = excluded.qty, cost = excluded.cost, "
                  "realized = excluded.realized, updated = excluded.updated",
                  [b.book_id, symbol, _s(h.qty), _s(h.cost), _s(h.realized), ts])


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
                 closed_ms=None if r["closed"] is None else int(r["closed"]))
        for symbol, qty, cost, realized in store.sql(
                "SELECT symbol, qty, cost, realized FROM book_positions WHERE book_id = ?",
                [b.book_id]):
            b.positions[symbol] = Holding(conv(qty), conv(cost), conv(realized))
        books.append(b)
    return books


def record_bar(store: Store, ts: int, model_rows: Iterable[tuple], paper_fills: Iterable[
        tuple[Book, BookFill]], books: Iterable[Book], book_equity: dict[str, tuple[float, str]],
               account: dict[str, Any] | None) -> None:
    """Everything one bar produced, in one transaction: every model's targets, the paper
    fills, the books they changed, every book's equity and the account's (``account``: the
    books' total, the house's cash, the venue's own equity at the same marks, and each account
    book's equity — the identity ``equity = Σ books`` can be checked from the row)."""
    store.sql("BEGIN TRANSACTION")
    try:
        for r in model_rows:
            store.sql("INSERT INTO model_bars (ts, model_id, symbol, mode, close, target, "
                      "p_short, p_flat, p_long, book_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                      "ON CONFLICT DO NOTHING", list(r))
        for book, f in paper_fills:
            _insert_fill(store, f, f.fill_id, book.model_id, book.mode)
        for b in books:
            save_book(store, b, ts)
        for book_id, (equity, exact) in book_equity.items():
            store.sql("INSERT INTO book_equity VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      [ts, book_id, equity, exact])
        if account is not None:
            a = account
            store.sql("INSERT INTO equity (ts, equity, wallet, cash, exact, venue_exact, books) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ts) DO UPDATE SET "
                      "equity = excluded.equity, wallet = excluded.wallet, cash = excluded.cash, "
                      "exact = excluded.exact, venue_exact = excluded.venue_exact, "
                      "books = excluded.books",
                      [ts, float(a["equity"]), float(a["venue"]), float(a["cash"]),
                       str(a["equity"]), str(a["venue"]),
                       json.dumps({k: str(v) for k, v in a["books"].items()})])
        store.sql("COMMIT")
    except Exception:
        store.sql("ROLLBACK")
        raise


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


def book_row(store: Store, book_id: str) -> dict[str, Any] | None:
    rows = store._dicts("SELECT * FROM books WHERE book_id = ?", [book_id])
    return rows[0] if rows else None


def books_of(store: Store, model_id: str) -> list[dict[str, Any]]:
    return store._dicts("SELECT * FROM books WHERE model_id = ? ORDER BY opened", [model_id])

"""The money path's rows in DuckDB: orders, fills, positions, equity, per-model bars.

Quantities and prices are DECIMAL columns fed from ``Decimal`` values, so the books in DuckDB
add up exactly as the engine's do.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Iterable

from appliance.domain import Fill
from appliance.store import Store


def record_order(store: Store, order_id: str, ts: int, symbol: str, side: str, qty: Decimal,
                 model_id: str, mode: str, status: str, reason: str = "",
                 price: Decimal | None = None) -> None:
    store.sql("INSERT INTO orders (order_id, ts, symbol, side, qty, model_id, mode, status, "
              "reason, price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) "
              "DO UPDATE SET status = excluded.status, reason = excluded.reason",
              [order_id, ts, symbol, side, qty, model_id, mode, status, reason, price])


def record_fill(store: Store, fill: Fill, model_id: str, mode: str) -> None:
    store.sql("INSERT INTO fills (order_id, ts, symbol, side, qty, price, fee, model_id, mode, "
              "fill_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
              [fill.order_id, fill.ts, fill.symbol, fill.side.value, fill.qty, fill.price,
               fill.fee, model_id, mode, f"{mode}:{model_id}:{fill.order_id}"])


def upsert_position(store: Store, symbol: str, mode: str, model_id: str, qty: Decimal,
                    avg_price: Decimal, realized: Decimal, ts: int) -> None:
    store.sql("INSERT INTO positions VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
              "(symbol, mode, model_id) DO UPDATE SET qty = excluded.qty, avg_price = "
              "excluded.avg_price, realized_pnl = excluded.realized_pnl, updated = "
              "excluded.updated", [symbol, mode, model_id, qty, avg_price, realized, ts])


def load_positions(store: Store, mode: str) -> list[dict[str, Any]]:
    return store._dicts("SELECT symbol, model_id, qty, avg_price, realized_pnl FROM positions "
                        "WHERE mode = ? AND qty <> 0", [mode])


def record_equity(store: Store, ts: int, equity: float, wallet: float) -> None:
    store.sql("INSERT INTO equity VALUES (?, ?, ?) ON CONFLICT (ts) DO UPDATE SET "
              "equity = excluded.equity, wallet = excluded.wallet", [ts, equity, wallet])


def equity_since(store: Store, since_ms: int) -> list[tuple[int, float]]:
    return [(int(t), float(e)) for t, e in store.sql(
        "SELECT ts, equity FROM equity WHERE ts >= ? ORDER BY ts", [since_ms])]


def record_model_bars(store: Store, rows: Iterable[tuple]) -> None:
    for r in rows:
        store.sql("INSERT INTO model_bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO "
                  "NOTHING", list(r))


def record_model_equity(store: Store, ts: int, values: dict[str, tuple[str, float]]) -> None:
    for model_id, (mode, equity) in values.items():
        store.sql("INSERT INTO model_equity VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                  [ts, model_id, mode, equity])


def model_equity(store: Store, model_id: str, since_ms: int = 0) -> list[tuple[int, float]]:
    return [(int(t), float(e)) for t, e in store.sql(
        "SELECT ts, equity FROM model_equity WHERE model_id = ? AND ts >= ? ORDER BY ts",
        [model_id, since_ms])]


def model_bars(store: Store, model_id: str, since_ms: int = 0) -> list[dict[str, Any]]:
    return store._dicts("SELECT ts, symbol, close, target FROM model_bars WHERE model_id = ? "
                        "AND ts >= ? ORDER BY symbol, ts", [model_id, since_ms])

"""Retention: old per-bar rows become daily aggregates, so the DuckDB file stops growing.

Rows older than ``store.retention_days`` (default 400) are compacted, one transaction a run:

* ``model_bars`` → ``model_bars_daily`` (per day, book and symbol: bars, mean target, last
  close), then deleted;
* ``fills`` → ``fills_daily`` (per day, book and symbol: fills, trades, quantity, notional,
  fees, P&L), then deleted;
* ``equity`` and ``book_equity`` keep each day's last row (a daily equity curve).

Idempotent: a second run over the same days finds nothing left to compact. Orders, books and
the audit log are kept whole (they are small, and the audit log is the record).
"""

from __future__ import annotations

from typing import Any

from appliance.store import Store

DAY = 86_400_000


def compact(store: Store, before_ms: int) -> dict[str, int]:
    """Compact every row older than ``before_ms``; returns how many rows went, per table."""
    day = f"(ts - ts % {DAY})"
    out: dict[str, Any] = {}
    store.sql("BEGIN TRANSACTION")
    try:
        store.sql(f"INSERT INTO model_bars_daily SELECT {day} AS d, book_id, any_value(model_id),"
                  " symbol, count(*), avg(target), arg_max(close, ts) FROM model_bars "
                  "WHERE ts < ? AND book_id IS NOT NULL GROUP BY d, book_id, symbol "
                  "ON CONFLICT DO NOTHING", [before_ms])
        out["model_bars"] = _delete(store, "DELETE FROM model_bars WHERE ts < ?", before_ms)
        store.sql(f"INSERT INTO fills_daily SELECT {day} AS d, book_id, any_value(model_id), "
                  "any_value(mode), symbol, count(*), count(*) FILTER (WHERE trade), "
                  "sum(CAST(qty AS DOUBLE)), sum(CAST(qty AS DOUBLE) * CAST(price AS DOUBLE)), "
                  "sum(CAST(fee AS DOUBLE)), sum(pnl) FROM fills WHERE ts < ? AND book_id IS "
                  "NOT NULL GROUP BY d, book_id, symbol ON CONFLICT DO NOTHING", [before_ms])
        out["fills"] = _delete(store, "DELETE FROM fills WHERE ts < ?", before_ms)
        out["equity"] = _delete(
            store, f"DELETE FROM equity WHERE ts < ? AND ts NOT IN (SELECT max(ts) FROM equity "
                   f"GROUP BY {day})", before_ms)
        out["book_equity"] = _delete(
            store, f"DELETE FROM book_equity WHERE ts < ? AND (book_id, ts) NOT IN (SELECT "
                   f"book_id, max(ts) FROM book_equity GROUP BY book_id, {day})", before_ms)
        store.sql("COMMIT")
    except Exception:
        store.sql("ROLLBACK")
        raise
    return out


def _delete(store: Store, sql: str, before_ms: int) -> int:
    return len(store.sql(sql + " RETURNING 1", [before_ms]))

"""Retention on a real DuckDB file: old per-bar rows become daily aggregates, once."""

import pytest

from appliance.retention import compact
from appliance.store import Store

DAY = 86_400_000
BAR = 300_000


def fill_days(store, days):
    for i in range(days * 288):
        ts = i * BAR
        store.sql("INSERT INTO model_bars (ts, model_id, symbol, mode, close, target, p_short, "
                  "p_flat, p_long, book_id) VALUES (?, 'm', 'BTCUSDT', 'prod', ?, ?, 0, 1, 0, "
                  "'prod:m:0')", [ts, 100.0 + i, 0.1])
        store.sql("INSERT INTO equity (ts, equity, wallet) VALUES (?, ?, ?)", [ts, 1e5 + i, 0])
        store.sql("INSERT INTO book_equity VALUES (?, 'prod:m:0', ?, NULL)", [ts, 1e5 + i])
        if i % 12 == 0:
            store.sql("INSERT INTO fills (order_id, ts, symbol, side, qty, price, fee, model_id, "
                      "mode, fill_id, book_id, pnl, trade) VALUES (?, ?, 'BTCUSDT', 'Buy', 1, "
                      "100, 0.05, 'm', 'prod', ?, 'prod:m:0', 1.5, ?)",
                      [f"o{i}", ts, f"f{i}", i % 24 == 0])


def test_old_rows_become_daily_aggregates_and_recent_ones_stay(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    fill_days(store, 3)
    gone = compact(store, 2 * DAY)  # the first two days are old
    assert gone == {"model_bars": 576, "fills": 48, "equity": 574, "book_equity": 574}
    daily = store.sql("SELECT day, bars, last_close FROM model_bars_daily ORDER BY day")
    assert daily == [(0, 288, 100.0 + 287), (DAY, 288, 100.0 + 575)]
    fills = store.sql("SELECT day, fills, trades, fees, pnl FROM fills_daily ORDER BY day")
    assert [(d, n, t) for d, n, t, _, _ in fills] == [(0, 24, 12), (DAY, 24, 12)]
    assert fills[0][3] == pytest.approx(24 * 0.05) and fills[0][4] == pytest.approx(24 * 1.5)
    assert store.sql("SELECT ts FROM equity WHERE ts < ? ORDER BY ts", [2 * DAY]) == [
        (DAY - BAR,), (2 * DAY - BAR,)]  # each old day's last point
    assert store.sql("SELECT count(*) FROM model_bars")[0][0] == 288  # the recent day, whole
    assert compact(store, 2 * DAY) == {"model_bars": 0, "fills": 0, "equity": 0,
                                       "book_equity": 0}
    store.close()

import duckdb
import numpy as np
import pytest

from appliance.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, migrate, schema_version


def candles(start_ms: int, n: int, price: float = 100.0) -> np.ndarray:
    t = start_ms + np.arange(n, dtype=np.int64) * 60_000
    c = price + np.arange(n, dtype=float)
    return np.column_stack([t, c, c + 1, c - 1, c + 0.5, np.full(n, 10.0), c * 10])


def test_candle_upsert_is_idempotent(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    rows = candles(1_700_000_000_000, 100)
    store.upsert_candles("BTCUSDT", "1m", rows)
    store.upsert_candles("BTCUSDT", "1m", rows)
    assert store.candle_count() == 100
    changed = rows.copy()
    changed[:10, 4] = 1.0  # a corrected close for the first ten minutes
    store.upsert_candles("BTCUSDT", "1m", changed[:10])
    assert store.candle_count() == 100
    closes = store.con.execute("SELECT close FROM candles ORDER BY open_time LIMIT 11").fetchall()
    assert [c[0] for c in closes] == [1.0] * 10 + [rows[10, 4]]
    store.upsert_candles("ETHUSDT", "1m", rows[:5])
    assert store.latest_open_times() == {"BTCUSDT": int(rows[-1, 0]), "ETHUSDT": int(rows[4, 0])}
    store.close()


def test_data_survives_reopening(tmp_path):
    path = tmp_path / "m.duckdb"
    store = Store(path)
    store.upsert_candles("BTCUSDT", "1m", candles(1_700_000_000_000, 10))
    store.record_incident("feed", "crash", "boom", "Traceback ...")
    store.close()
    again = Store(path)
    assert again.candle_count() == 10
    assert again.incidents()[0]["message"] == "boom"
    again.close()


def test_migration_from_an_older_schema_keeps_the_data(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, upto=1)  # a file written by the first release
    con.execute("INSERT INTO candles VALUES ('BTCUSDT', '1m', 0, 1, 2, 0.5, 1.5, 10)")
    con.execute("INSERT INTO audit_log (ts, actor, action, reason, bus_seq) "
                "VALUES (1, 'alice', 'maintenance_mode=on', 'test', 1)")
    assert schema_version(con) == 1
    con.close()

    store = Store(path)
    assert schema_version(store.con) == SCHEMA_VERSION == len(MIGRATIONS)
    row = store.con.execute("SELECT symbol, close, turnover FROM candles").fetchall()
    assert row == [("BTCUSDT", 1.5, 0.0)]
    assert store.audit_log()[0]["actor"] == "alice"
    assert store.model_counts() == {"prod": 0, "shadow": 0, "candidate": 0, "retired": 0,
                                    "rejected": 0, "archived": 0}
    store.close()


def test_read_only_open_refuses_an_unmigrated_file(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, upto=1)
    con.close()
    with pytest.raises(StoreError, match="schema version 1"):
        Store(path, read_only=True)


def test_a_newer_file_is_refused(tmp_path):
    path = tmp_path / "new.duckdb"
    Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_version VALUES (?, 0)", [SCHEMA_VERSION + 1])
    con.close()
    with pytest.raises(StoreError, match="newer than this methtrader"):
        Store(path)


def test_audit_copy_is_idempotent_on_bus_sequence(tmp_path):
    store = Store(tmp_path / "m.duckdb")
    entries = [{"seq": i, "ts": float(i), "actor": "bob", "action": "kill", "reason": "r",
                "details": {"n": i}} for i in (1, 2, 3)]
    assert store.copy_audit(entries[:2]) == 2
    assert store.copy_audit(entries) == 1
    assert store.max_audit_seq() == 3
    assert [r["bus_seq"] for r in store.audit_log()] == [3, 2, 1]
    store.close()


def test_an_injected_write_fault_inside_a_batch_rolls_the_whole_batch_back(tmp_path):
    from appliance.store import InjectedWriteFault

    store = Store(tmp_path / "m.duckdb")
    rows = candles(1_700_000_000_000, 10)
    store.inject_write_faults(1, after=1)  # the second symbol's INSERT fails
    with pytest.raises(InjectedWriteFault):
        store.upsert_candle_batches("1m", {"BTCUSDT": rows, "ETHUSDT": rows})
    assert store.candle_count() == 0  # the first symbol's rows went with the rollback
    assert store.upsert_candle_batches("1m", {"BTCUSDT": rows, "ETHUSDT": rows}) == 20
    assert store.candle_count() == 20  # one fault, then writes pass again
    store.close()

import contextlib
import errno
import os
import resource
import signal
import subprocess

import duckdb
import numpy as np
import pytest

from appliance.store import (MIGRATIONS, SCHEMA_VERSION, Store, StoreDamaged, StoreError, migrate,
                             schema_version)
from tests.statedir_helpers import damage_blocks


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


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes that would make a file of this process larger than ``limit`` fail with EFBIG, as
    they fail with ENOSPC on a full disk (the signal that would kill the process is ignored)."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


def test_a_database_invalidated_by_a_failed_checkpoint_is_reopened_with_its_data(tmp_path):
    """DuckDB invalidates the whole database when a checkpoint cannot write its file (a real
    write failure here: the file size limit), and every later statement failed, even once the
    writes went through again. The store opens the file again; nothing committed is lost."""
    path = tmp_path / "m.duckdb"
    store = Store(path)
    store.sql("CHECKPOINT")
    store.upsert_candles("BTCUSDT", "1m", candles(1_700_000_000_000, 300))  # in the WAL
    with file_size_limit(path.stat().st_size):
        with pytest.raises(duckdb.FatalException, match="File too large"):
            store.sql("CHECKPOINT")
    assert store.candle_count() == 300
    assert store.upsert_candles("ETHUSDT", "1m", candles(1_700_000_000_000, 300)) == 300
    store.sql("CHECKPOINT")
    assert store.reopened == 1
    store.close()
    again = Store(path, read_only=True)
    assert again.candle_count() == 600
    again.close()


def test_a_batch_whose_commit_invalidated_the_database_fails_whole_and_the_next_goes(tmp_path):
    """The commit's automatic checkpoint fails for real inside a batch: the batch raises its
    own error (not the rollback's, which has nothing left to roll back), none of it is stored,
    and the same batch goes through afterwards."""
    path = tmp_path / "m.duckdb"
    store = Store(path)
    store.sql("CHECKPOINT")
    store.sql("PRAGMA checkpoint_threshold = '1KB'")  # every commit checkpoints
    rows = candles(1_700_000_000_000, 300)
    with file_size_limit(path.stat().st_size):
        with pytest.raises(duckdb.Error, match="File too large"):
            store.upsert_candle_batches("1m", {"BTCUSDT": rows, "ETHUSDT": rows})
    assert store.candle_count() == 0
    assert store.upsert_candle_batches("1m", {"BTCUSDT": rows, "ETHUSDT": rows}) == 600
    assert store.candle_count() == 600
    store.close()


def test_a_real_enospc_is_a_full_disk_and_the_store_recovers_when_space_returns(tmp_path):
    """On a real full disk (a small tmpfs: needs root to mount it, skipped without)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs",
                                            str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    store = None
    try:
        store = Store(mnt / "m.duckdb")
        store.sql("CHECKPOINT")
        store.upsert_candles("BTCUSDT", "1m", candles(1_700_000_000_000, 300))
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)
        with pytest.raises(duckdb.FatalException, match="No space left"):
            store.sql("CHECKPOINT")
        assert store.disk.snapshot()["full"]
        filler.unlink()
        assert store.upsert_candles("ETHUSDT", "1m", candles(1_700_000_000_000, 300)) == 300
        assert store.candle_count() == 600 and not store.disk.snapshot()["full"]
    finally:
        if store is not None:
            store.close()
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_commit_while_the_disk_is_full_is_refused_and_the_episode_goes_on(tmp_path):
    """A transaction whose writes went through before the disk filled up cannot commit (its
    WAL write is refused): the episode goes on, nothing is stored, and the same write goes
    through once space is back. Before, the commit went through and ended the episode in the
    middle of it, and the next refused write began a second one (two disk-full incidents)."""
    store = Store(tmp_path / "m.duckdb")
    store.sql("BEGIN")
    store.sql("INSERT INTO incidents (ts, service, kind, message) VALUES (1, 'feed', 'x', 'y')")
    store.disk.inject(30)
    with pytest.raises(OSError) as refused:
        store.sql("COMMIT")
    assert refused.value.errno == errno.ENOSPC
    store.sql("ROLLBACK")
    assert store.disk.full and store.disk.episodes == 1
    store.disk.lift()
    assert store.incidents() == []
    store.record_incident("feed", "x", "y")
    assert len(store.incidents()) == 1 and not store.disk.full and store.disk.episodes == 1
    store.close()


def test_a_transaction_begun_after_an_invalidated_one_rolls_back_for_real(tmp_path):
    """The transaction the fatal error took needs no rollback; one begun afterwards does."""
    path = tmp_path / "m.duckdb"
    store = Store(path)
    store.sql("CHECKPOINT")
    store.sql("PRAGMA checkpoint_threshold = '1KB'")
    store.sql("BEGIN")
    store.upsert_candles("BTCUSDT", "1m", candles(1_700_000_000_000, 300))
    with file_size_limit(path.stat().st_size), pytest.raises(duckdb.Error):
        store.sql("COMMIT")
    store.sql("BEGIN")  # no ROLLBACK of the lost one first
    store.upsert_candles("ETHUSDT", "1m", candles(1_700_000_000_000, 10))
    store.sql("ROLLBACK")
    assert store.candle_count() == 0
    store.close()


def test_a_damaged_block_is_named_as_damage_and_never_read_as_data(tmp_path):
    path = tmp_path / "m.duckdb"
    store = Store(path)
    store.upsert_candles("BTCUSDT", "1m", candles(1_700_000_000_000, 50_000))
    store.sql("CHECKPOINT")
    store.close()
    assert damage_blocks(path, "candles")
    store = Store(path)  # the headers and the catalogue are intact: it opens
    with pytest.raises(StoreDamaged) as raised:
        store.sql("SELECT sum(close) FROM candles")
    message = str(raised.value)
    assert str(path) in message and "damaged" in message and "checksum" in message
    assert "maintenance mode ON" in message and "methtrader restore" in message
    assert raised.value.fatal and isinstance(raised.value, StoreError)
    assert store.damage == message  # kept: run's shutdown checks it after its last checkpoint
    store.close()

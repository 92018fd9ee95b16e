"""The DuckDB file: schema, forward migrations and the few writes the appliance makes.

Only ``methtrader run`` opens this file read-write (DuckDB lets no second process in while it
does). Everything here is synchronous; services call it through :class:`StoreRunner`, which
keeps one thread at a time on the connection (several threads on one connection have crashed
for others).

A fatal error inside DuckDB (a checkpoint that a full disk refused) invalidates the whole
database: every later statement on the connection fails, even once space is back. The store
then opens the file again (what was committed is in it and its WAL) before its next statement,
and keeps trying at each statement while that fails too.

Migrations are append-only: each entry of ``MIGRATIONS`` moves the schema from version ``i`` to
``i + 1`` inside one transaction, and ``schema_version`` records where a file stands. Never edit
a released migration; add the next one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import trio

from appliance.logs import service_logger
from data.disk import DiskState, is_disk_full

T = TypeVar("T")

MIGRATIONS: list[str] = [
    # v1: market data, incidents and the audit log
    """
    CREATE TABLE candles (
        symbol VARCHAR NOT NULL, interval VARCHAR NOT NULL, open_time BIGINT NOT NULL,
        open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
        volume DOUBLE NOT NULL,
        PRIMARY KEY (symbol, interval, open_time));
    CREATE SEQUENCE incident_id;
    CREATE TABLE incidents (
        id BIGINT PRIMARY KEY DEFAULT nextval('incident_id'), ts DOUBLE NOT NULL,
        service VARCHAR NOT NULL, kind VARCHAR NOT NULL, message VARCHAR NOT NULL,
        traceback VARCHAR, resolved_ts DOUBLE);
    CREATE SEQUENCE audit_id;
    CREATE TABLE audit_log (
        id BIGINT PRIMARY KEY DEFAULT nextval('audit_id'), ts DOUBLE NOT NULL,
        actor VARCHAR NOT NULL, action VARCHAR NOT NULL, reason VARCHAR NOT NULL,
        details JSON, bus_seq BIGINT UNIQUE);
    """,
    # v2: turnover on candles; the tables later layers fill (start minimal, grow by migration)
    """
    ALTER TABLE candles ADD COLUMN turnover DOUBLE DEFAULT 0;
    CREATE TABLE pairs (
        symbol VARCHAR PRIMARY KEY, status VARCHAR, turnover_24h DOUBLE, tradable BOOLEAN,
        first_seen DOUBLE, updated DOUBLE);
    CREATE TABLE pair_events (ts DOUBLE NOT NULL, symbol VARCHAR NOT NULL, event VARCHAR NOT NULL,
        turnover_24h DOUBLE);
    CREATE TABLE datasets (dataset_id VARCHAR PRIMARY KEY, symbol VARCHAR, interval VARCHAR,
        start_time BIGINT, end_time BIGINT, rows BIGINT, sha256 VARCHAR, created_at DOUBLE);
    CREATE TABLE training_runs (run_id VARCHAR PRIMARY KEY, kind VARCHAR, grp VARCHAR,
        params JSON, metrics JSON, tags JSON, dataset_sha256 VARCHAR, feature_set VARCHAR,
        parent_run_id VARCHAR, status VARCHAR, started DOUBLE, ended DOUBLE, loss_curve JSON);
    CREATE TABLE ml_models (model_id VARCHAR PRIMARY KEY, run_id VARCHAR, grp VARCHAR,
        symbols JSON, timeframe VARCHAR, kind VARCHAR, mode VARCHAR, onnx_path VARCHAR,
        onnx_sha256 VARCHAR, created DOUBLE, shadow_started DOUBLE, promoted DOUBLE,
        archived DOUBLE, metrics JSON, pinned BOOLEAN DEFAULT false);
    CREATE TABLE orders (order_id VARCHAR PRIMARY KEY, ts BIGINT, symbol VARCHAR, side VARCHAR,
        qty DECIMAL(38, 12), model_id VARCHAR, mode VARCHAR, status VARCHAR, reason VARCHAR);
    CREATE TABLE fills (order_id VARCHAR, ts BIGINT, symbol VARCHAR, side VARCHAR,
        qty DECIMAL(38, 12), price DECIMAL(38, 12), fee DECIMAL(38, 12), model_id VARCHAR,
        mode VARCHAR);
    CREATE TABLE positions (symbol VARCHAR, mode VARCHAR, model_id VARCHAR,
        qty DECIMAL(38, 12), avg_price DECIMAL(38, 12), realized_pnl DECIMAL(38, 12),
        updated BIGINT, PRIMARY KEY (symbol, mode, model_id));
    CREATE TABLE equity (ts BIGINT PRIMARY KEY, equity DOUBLE, wallet DOUBLE);
    CREATE TABLE drift (ts BIGINT, symbol VARCHAR, kl DOUBLE, zscore DOUBLE);
    CREATE TABLE feature_reference (model_id VARCHAR, feature VARCHAR, stats JSON);
    """,
    # v3: datasets say how complete they are
    """
    ALTER TABLE datasets ADD COLUMN missing BIGINT DEFAULT 0;
    ALTER TABLE datasets ADD COLUMN files INTEGER DEFAULT 0;
    """,
    # v4: what every model did on every bar (shadow scoring and the parity audit)
    """
    CREATE TABLE model_bars (ts BIGINT NOT NULL, model_id VARCHAR NOT NULL,
        symbol VARCHAR NOT NULL, mode VARCHAR NOT NULL, close DOUBLE, target DOUBLE,
        p_short DOUBLE, p_flat DOUBLE, p_long DOUBLE,
        PRIMARY KEY (ts, model_id, symbol));
    CREATE TABLE model_equity (ts BIGINT NOT NULL, model_id VARCHAR NOT NULL,
        mode VARCHAR NOT NULL, equity DOUBLE NOT NULL, PRIMARY KEY (ts, model_id));
    ALTER TABLE fills ADD COLUMN fill_id VARCHAR;
    ALTER TABLE orders ADD COLUMN price DECIMAL(38, 12);
    """,
    # v5: one model lifecycle (appliance/lifecycle.py): when each model entered its mode, every
    # transition on record, a registry version bumped by each; at most one prod per group
    # (a file that ever had two keeps the newest and retires the others)
    """
    ALTER TABLE ml_models ADD COLUMN mode_since DOUBLE;
    ALTER TABLE ml_models ADD COLUMN retired DOUBLE;
    UPDATE ml_models SET mode_since = coalesce(CASE mode WHEN 'prod' THEN promoted
        WHEN 'shadow' THEN shadow_started WHEN 'archived' THEN archived END, created);
    UPDATE ml_models SET mode = 'retired', retired = mode_since WHERE mode = 'prod'
        AND model_id NOT IN (SELECT arg_max(model_id, coalesce(promoted, created))
                             FROM ml_models WHERE mode = 'prod' GROUP BY grp);
    CREATE SEQUENCE transition_id;
    CREATE TABLE model_transitions (
        id BIGINT PRIMARY KEY DEFAULT nextval('transition_id'), ts DOUBLE NOT NULL,
        model_id VARCHAR NOT NULL, grp VARCHAR, from_mode VARCHAR, to_mode VARCHAR NOT NULL,
        actor VARCHAR NOT NULL, reason VARCHAR NOT NULL, version BIGINT NOT NULL);
    CREATE TABLE registry_version (version BIGINT NOT NULL);
    INSERT INTO registry_version VALUES (0);
    """,
    # v6: model paths relative to the state dir (the DuckDB file's folder), so a copy of a
    # state dir uses its own files: strip the state dir's prefix, else keep the path from its
    # last artifacts/ segment on (a file copied from another state dir)
    """
    UPDATE ml_models SET onnx_path = CASE
        WHEN starts_with(onnx_path, s.state || '/') THEN substr(onnx_path, length(s.state) + 2)
        WHEN regexp_matches(onnx_path, '/artifacts/')
            THEN regexp_extract(onnx_path, '^.*/(artifacts/.*)$', 1)
        ELSE onnx_path END
    FROM (SELECT regexp_replace(path, '/[^/]*$', '') AS state FROM duckdb_databases()
          WHERE database_name = current_database()) AS s
    WHERE starts_with(onnx_path, '/');
    """,
    # v7: one book per model and mode period (appliance/books.py), persisted exactly (decimal
    # strings), the house's free cash, write-ahead order rows; the old single account-level
    # positions and the per-model equity series that mixed books go
    """
    CREATE TABLE books (book_id VARCHAR PRIMARY KEY, model_id VARCHAR NOT NULL,
        mode VARCHAR NOT NULL, grp VARCHAR, opened BIGINT NOT NULL, closed BIGINT,
        state VARCHAR NOT NULL, exact BOOLEAN NOT NULL, capital VARCHAR NOT NULL,
        cash VARCHAR NOT NULL, fees VARCHAR NOT NULL, trades BIGINT NOT NULL,
        fills BIGINT NOT NULL, next_fill BIGINT NOT NULL, updated BIGINT);
    CREATE TABLE book_positions (book_id VARCHAR NOT NULL, symbol VARCHAR NOT NULL,
        qty VARCHAR NOT NULL, cost VARCHAR NOT NULL, realized VARCHAR NOT NULL, updated BIGINT,
        PRIMARY KEY (book_id, symbol));
    CREATE TABLE book_equity (ts BIGINT NOT NULL, book_id VARCHAR NOT NULL,
        equity DOUBLE NOT NULL, exact VARCHAR, PRIMARY KEY (ts, book_id));
    ALTER TABLE fills ADD COLUMN book_id VARCHAR;
    ALTER TABLE fills ADD COLUMN pnl DOUBLE;
    ALTER TABLE fills ADD COLUMN trade BOOLEAN;
    ALTER TABLE orders ADD COLUMN book_id VARCHAR;
    ALTER TABLE model_bars ADD COLUMN book_id VARCHAR;
    ALTER TABLE equity ADD COLUMN cash DOUBLE;
    ALTER TABLE equity ADD COLUMN exact VARCHAR;
    ALTER TABLE equity ADD COLUMN venue_exact VARCHAR;
    ALTER TABLE equity ADD COLUMN books JSON;
    DROP TABLE positions;
    DROP TABLE model_equity;
    CREATE TABLE model_bars_daily (day BIGINT NOT NULL, book_id VARCHAR NOT NULL,
        model_id VARCHAR, symbol VARCHAR NOT NULL, bars BIGINT, mean_target DOUBLE,
        last_close DOUBLE, PRIMARY KEY (day, book_id, symbol));
    CREATE TABLE fills_daily (day BIGINT NOT NULL, book_id VARCHAR NOT NULL,
        model_id VARCHAR, mode VARCHAR, symbol VARCHAR NOT NULL, fills BIGINT, trades BIGINT,
        qty DOUBLE, notional DOUBLE, fees DOUBLE, pnl DOUBLE,
        PRIMARY KEY (day, book_id, symbol));
    """,
    # v8: funding is a cash flow of every book (appliance/books.py): what each paid, and the
    # funding time it is settled up to (saved with its cash, so a restart never repeats one)
    """
    ALTER TABLE books ADD COLUMN funding VARCHAR;
    ALTER TABLE books ADD COLUMN funded_to BIGINT;
    UPDATE books SET funding = '0', funded_to = greatest(opened, coalesce(updated, opened));
    """,
    # v9: a drift pass per symbol (appliance/services/drift.py): ts is market ms, kl the
    # aggregate, zscore against the symbol's history; the model whose reference it was measured
    # against, the per-feature KL, the 3σ line, the verdict and the early retrain it queued;
    # each model's seasonal volatility profile per symbol (models/vol_regime.py)
    """
    CREATE TABLE vol_profile (model_id VARCHAR NOT NULL, symbol VARCHAR NOT NULL,
        profile JSON NOT NULL, PRIMARY KEY (model_id, symbol));
    ALTER TABLE drift ADD COLUMN model_id VARCHAR;
    ALTER TABLE drift ADD COLUMN grp VARCHAR;
    ALTER TABLE drift ADD COLUMN features JSON;
    ALTER TABLE drift ADD COLUMN line DOUBLE;
    ALTER TABLE drift ADD COLUMN verdict VARCHAR;
    ALTER TABLE drift ADD COLUMN retrain VARCHAR;
    """,
    # the device a run trained on ("cpu" or "cuda", picked once per run; training.device)
    """
    ALTER TABLE training_runs ADD COLUMN device VARCHAR;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
CANDLE_COLUMNS = ("symbol", "interval", "open_time", "open", "high", "low", "close", "volume",
                  "turnover")


class StoreError(RuntimeError):
    """The DuckDB file cannot be used as asked (locked, or at another schema version)."""


class StoreDamaged(StoreError):
    """The DuckDB file failed a checksum or could not be read back: it is damaged on disk.

    ``fatal``: the supervisor does not restart a service over it; ``run`` sets maintenance
    mode ON and stops, since fills, equity and the audit trail can no longer be trusted to
    the file (fail closed)."""

    fatal = True


DAMAGE_MARKS = ("corrupt database file", "does not match stored checksum",
                "could not read enough bytes")
"""How DuckDB words a damaged file (a block's checksum, a block cut short), lower case."""


class InjectedWriteFault(StoreError):
    """A write refused on purpose (``chaos_store_fault``, :mod:`appliance.chaos_hook`)."""


WRITES = ("INSERT", "UPDATE", "DELETE")


def run_sql(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
            ) -> list[tuple[Any, ...]]:
    """Execute and drain: DuckDB 2 streams results, and an undrained one blocks the
    connection for the next statement."""
    return con.execute(sql, params or []).fetchall()


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreError(f"{path} is open in another process (is `methtrader run` "
                             "running?)") from None
        raise


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = run_sql(con, "SELECT count(*) FROM information_schema.tables "
                     "WHERE table_name = 'schema_version'")[0][0]
    if not exists:
        return 0
    return int(run_sql(con, "SELECT max(version) FROM schema_version")[0][0] or 0)


def migrate(con: duckdb.DuckDBPyConnection, upto: int = SCHEMA_VERSION) -> int:
    """Apply the forward migrations the file lacks; returns the version reached."""
    run_sql(con, "CREATE TABLE IF NOT EXISTS schema_version "
            "(version INTEGER PRIMARY KEY, applied_at DOUBLE)")
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise StoreError(f"the database is at schema version {current}, newer than this "
                         f"methtrader ({SCHEMA_VERSION}); upgrade methtrader")
    for version in range(current + 1, upto + 1):
        run_sql(con, "BEGIN TRANSACTION")
        try:
            run_sql(con, MIGRATIONS[version - 1])
            run_sql(con, "INSERT INTO schema_version VALUES (?, ?)", [version, time.time()])
            run_sql(con, "COMMIT")
        except Exception:
            run_sql(con, "ROLLBACK")
            raise
    return max(current, upto)


def backup_before_migration(con: duckdb.DuckDBPyConnection, path: Path, version: int) -> Path:
    """Copy the file as it stands to ``<state>/backups/methtrader-v<version>-<stamp>.duckdb``
    (the state dir is the file's folder) before a migration touches it."""
    from appliance.paths import StatePaths

    run_sql(con, "CHECKPOINT")  # the file alone then holds everything committed
    folder = StatePaths(path.parent).backups
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = folder / f"methtrader-v{version}-{stamp}.duckdb"
    n = 1
    while dest.exists():
        n += 1
        dest = folder / f"methtrader-v{version}-{stamp}-{n}.duckdb"
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(path, tmp)
    tmp.chmod(0o600)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    tmp.replace(dest)
    service_logger("store").info("backed up the database before migrating it",
                                 backup=str(dest), from_version=version, to_version=SCHEMA_VERSION)
    return dest


class Store:
    """The appliance's DuckDB file (synchronous; use from one thread at a time)."""

    def __init__(self, path: Path | str, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._faults = (0, 0)  # (writes still let through, writes then refused): chaos only
        self.disk = DiskState()  # whether writes go through (the appliance's one; data/disk.py)
        #: writes of the transaction in progress (None outside BEGIN ... COMMIT/ROLLBACK): they
        #: are durable, and prove the disk takes writes, only once committed
        self._tx_writes: int | None = None
        self._invalidated: str | None = None  # DuckDB's fatal error, until the file is reopened
        self._tx_lost = False  # a transaction in progress went with the invalidated database
        self.damage: str | None = None  # the StoreDamaged message, once a read met damage
        self.reopened = 0
        self._con = connect(self.path, read_only=read_only)
        if not read_only:
            if 0 < (version := schema_version(self.con)) < SCHEMA_VERSION:
                backup_before_migration(self.con, self.path, version)
            migrate(self.con)
        elif (version := schema_version(self.con)) != SCHEMA_VERSION:
            self.con.close()
            raise StoreError(f"{self.path} is at schema version {version}, this methtrader "
                             f"expects {SCHEMA_VERSION}; start `methtrader run` once to migrate")

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        """The connection; opened again first when a fatal error invalidated the database
        (raising, and staying invalidated, while that fails too)."""
        if self._invalidated is not None:
            self._reopen()
        return self._con

    def close(self) -> None:
        self._con.close()

    # -- candles -----------------------------------------------------------------------------

    def upsert_candles(self, symbol: str, interval: str, rows: np.ndarray) -> int:
        """Insert or update candles; ``rows`` is (n, 7): open_time, o, h, l, c, volume,
        turnover. Idempotent on (symbol, interval, open_time)."""
        if len(rows) == 0:
            return 0
        table = pa.table({
            "symbol": pa.array([symbol] * len(rows)),
            "interval": pa.array([interval] * len(rows)),
            "open_time": pa.array(rows[:, 0].astype(np.int64)),
            **{name: pa.array(rows[:, i + 1]) for i, name in
               enumerate(("open", "high", "low", "close", "volume", "turnover"))},
        })
        return self.upsert_candle_table(table)

    def upsert_candle_batches(self, interval: str, batches: dict[str, np.ndarray]) -> int:
        """Several symbols' candles in one transaction: all are written or none."""
        self.sql("BEGIN TRANSACTION")
        try:
            n = sum(self.upsert_candles(symbol, interval, rows) for symbol, rows in batches.items())
            self.sql("COMMIT")
        except Exception:
            self.sql("ROLLBACK")
            raise
        return n

    def upsert_candle_table(self, table: pa.Table) -> int:
        self.con.register("_incoming", table)
        try:
            self.sql(
                "INSERT INTO candles (symbol, interval, open_time, open, high, low, close, "
                "volume, turnover) SELECT symbol, interval, open_time, open, high, low, close, "
                "volume, turnover FROM _incoming ON CONFLICT (symbol, interval, open_time) DO "
                "UPDATE SET open = excluded.open, high = excluded.high, low = excluded.low, "
                "close = excluded.close, volume = excluded.volume, turnover = excluded.turnover")
        finally:
            self.con.unregister("_incoming")
        return table.num_rows

    def latest_open_times(self, interval: str = "1m") -> dict[str, int]:
        rows = self.sql("SELECT symbol, max(open_time) FROM candles WHERE interval = ? "
                        "GROUP BY symbol ORDER BY symbol", [interval])
        return {s: int(t) for s, t in rows}

    def candle_count(self) -> int:
        return int(self.sql("SELECT count(*) FROM candles")[0][0])

    def prune_candles(self, before_ms: int) -> int:
        """Drop candles older than the hot window (the lake keeps the history)."""
        n = self.sql("SELECT count(*) FROM candles WHERE open_time < ?", [before_ms])[0][0]
        if n:
            self.sql("DELETE FROM candles WHERE open_time < ?", [before_ms])
        return int(n)

    # -- pairs -------------------------------------------------------------------------------

    def save_pairs(self, rows: list[Any], events: list[Any], ts: float) -> None:
        """Upsert the discovered pairs and append their change events, in one transaction."""
        pairs = pa.table({
            "symbol": [r.symbol for r in rows], "status": [r.status for r in rows],
            "turnover_24h": pa.array([float(r.turnover_24h) for r in rows], pa.float64()),
            "tradable": pa.array([bool(r.tradable) for r in rows], pa.bool_()),
            "ts": pa.array([ts] * len(rows), pa.float64())})
        self.sql("BEGIN TRANSACTION")
        try:
            self.con.register("_pairs", pairs)
            self.sql("INSERT INTO pairs SELECT symbol, status, turnover_24h, tradable, ts, ts "
                     "FROM _pairs ON CONFLICT (symbol) DO UPDATE SET status = excluded.status, "
                     "turnover_24h = excluded.turnover_24h, tradable = excluded.tradable, "
                     "updated = excluded.updated")
            for e in events:
                self.sql("INSERT INTO pair_events VALUES (?, ?, ?, ?)",
                         [ts, e.symbol, e.event, e.turnover_24h])
            self.sql("COMMIT")
        except Exception:
            self.sql("ROLLBACK")
            raise
        finally:
            self.con.unregister("_pairs")

    def load_pairs(self) -> list[tuple[str, str, float, bool]]:
        return [(s, st, float(t or 0), bool(tr)) for s, st, t, tr in self.sql(
            "SELECT symbol, status, turnover_24h, tradable FROM pairs ORDER BY symbol")]

    def pair_events(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._dicts("SELECT ts, symbol, event, turnover_24h FROM pair_events "
                           "ORDER BY ts DESC, symbol LIMIT ?", [limit])

    # -- datasets ----------------------------------------------------------------------------

    def save_dataset(self, m: Any) -> None:
        """Upsert a dataset manifest row (see data.lake.Manifest)."""
        self.sql("INSERT INTO datasets (dataset_id, symbol, interval, start_time, end_time, rows, "
                 "sha256, created_at, missing, files) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                 "ON CONFLICT (dataset_id) DO UPDATE SET start_time = excluded.start_time, "
                 "end_time = excluded.end_time, rows = excluded.rows, sha256 = excluded.sha256, "
                 "created_at = excluded.created_at, missing = excluded.missing, "
                 "files = excluded.files",
                 [m.dataset_id, m.symbol, m.interval, m.start_time, m.end_time, m.rows,
                  m.sha256, m.created_at, m.missing, m.files])

    def datasets(self) -> list[dict[str, Any]]:
        return self._dicts("SELECT dataset_id, symbol, interval, start_time, end_time, rows, "
                           "missing, files, sha256, created_at FROM datasets ORDER BY 1")

    # -- incidents and audit -----------------------------------------------------------------

    def record_incident(self, service: str, kind: str, message: str,
                        traceback: str | None = None, ts: float | None = None) -> int:
        return int(self.sql(
            "INSERT INTO incidents (ts, service, kind, message, traceback) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            [ts or time.time(), service, kind, message, traceback])[0][0])

    def incidents(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._dicts("SELECT id, ts, service, kind, message, traceback FROM incidents "
                           "ORDER BY id DESC LIMIT ?", [limit])

    def copy_audit(self, entries: Iterable[dict[str, Any]]) -> int:
        """Copy bus audit-journal entries; idempotent on their bus sequence number."""
        n = 0
        for e in entries:
            n += len(self.sql(
                "INSERT INTO audit_log (ts, actor, action, reason, details, bus_seq) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (bus_seq) DO NOTHING RETURNING id",
                [e["ts"], e["actor"], e["action"], e["reason"], json.dumps(e.get("details")),
                 e["seq"]]))
        return n

    def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._dicts("SELECT id, ts, actor, action, reason, details, bus_seq "
                           "FROM audit_log ORDER BY id DESC LIMIT ?", [limit])

    def max_audit_seq(self) -> int:
        return int(self.sql("SELECT coalesce(max(bus_seq), 0) FROM audit_log")[0][0])

    # -- status ------------------------------------------------------------------------------

    def model_counts(self) -> dict[str, int]:
        counts = {"prod": 0, "shadow": 0, "candidate": 0, "retired": 0, "rejected": 0,
                  "archived": 0}
        for mode, n in self.sql("SELECT mode, count(*) FROM ml_models GROUP BY mode"):
            counts[mode] = int(n)
        return counts

    def trade_count(self) -> int:
        """Prod trades: entries and flips (a fill that only adds to or trims a position is
        a fill, not a trade)."""
        return int(self.sql("SELECT count(*) FROM fills WHERE mode = 'prod' AND trade")[0][0])

    def fill_count(self) -> int:
        return int(self.sql("SELECT count(*) FROM fills WHERE mode = 'prod'")[0][0])

    def allocation(self) -> dict[str, Any]:
        """The house's free cash and each live prod book's capital, from the books table."""
        house = self.sql("SELECT cash FROM books WHERE mode = 'house'")
        books = self._dicts("SELECT book_id, model_id, grp AS \"group\", state, capital "
                            "FROM books WHERE mode = 'prod' AND state <> 'closed' "
                            "ORDER BY opened")
        return {"free_cash": float(house[0][0]) if house else None,
                "books": [{**b, "capital": float(b["capital"])} for b in books]}

    def day_summary(self, since_ms: int, until_ms: int, after_incident: int) -> dict[str, Any]:
        """The daily summary's figures over market time [since_ms, until_ms): equity at both
        ends, prod trades and fills, model mode changes, and the incidents recorded since id
        ``after_incident`` (incident times mix wall and market clocks, their ids do not)."""
        def equity_at(ms: int) -> float | None:
            rows = self.sql("SELECT equity FROM equity WHERE ts < ? ORDER BY ts DESC LIMIT 1",
                            [ms])
            return float(rows[0][0]) if rows else None

        trades, fills = self.sql(
            "SELECT count(*) FILTER (WHERE trade), count(*) FROM fills WHERE mode = 'prod' "
            "AND ts >= ? AND ts < ?", [since_ms, until_ms])[0]
        changes = self._dicts(
            "SELECT to_mode, count(*) AS n FROM model_transitions WHERE ts >= ? AND ts < ? "
            "GROUP BY to_mode ORDER BY to_mode", [since_ms / 1000, until_ms / 1000])
        incidents = self._dicts(
            "SELECT kind, count(*) AS n, max(id) AS last_id FROM incidents WHERE id > ? "
            "GROUP BY kind ORDER BY n DESC, kind", [after_incident])
        return {"equity_start": equity_at(since_ms), "equity_end": equity_at(until_ms),
                "trades": int(trades), "fills": int(fills),
                "model_changes": {c["to_mode"]: int(c["n"]) for c in changes},
                "incidents": {i["kind"]: int(i["n"]) for i in incidents},
                "last_incident_id": max([after_incident, *(int(i["last_id"]) for i in incidents)])}

    def last_equity(self) -> float | None:
        rows = self.sql("SELECT equity FROM equity ORDER BY ts DESC LIMIT 1")
        return float(rows[0][0]) if rows else None

    def sql(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement. Writes report to :attr:`disk`: a write or commit refused for want
        of space begins a disk-full episode, a committed write ends it."""
        head = sql.lstrip()[:10].upper()
        write = head[:6] in WRITES
        if self._tx_lost and head.startswith(("ROLLBACK", "BEGIN")):
            self._tx_lost = False  # nothing left to roll back: it went with the old database
            if head.startswith("ROLLBACK"):
                return []
        if self._faults[1] and write:
            self._fault_write()
        # a commit writes the transaction's WAL: a full disk refuses it as it refuses a write
        commits = head.startswith("COMMIT") and bool(self._tx_writes)
        ticket = self.disk.ticket()
        try:
            if write or commits or head.startswith("CHECKPOINT"):
                self.disk.check("duckdb")
            rows = run_sql(self.con, sql, params)
        except Exception as exc:
            if is_disk_full(exc):
                self.disk.failed("duckdb", exc, ticket)
            self._note_invalidated(exc)
            self._refuse_damage(exc)
            raise
        durable = head.startswith("CHECKPOINT") or (write and self._tx_writes is None)
        if head.startswith("BEGIN"):
            self._tx_writes = 0
        elif head.startswith(("COMMIT", "ROLLBACK")):
            durable = head.startswith("COMMIT") and bool(self._tx_writes)
            self._tx_writes = None
        elif write and self._tx_writes is not None:
            self._tx_writes += 1
        if durable:
            self.disk.ok(ticket)
        return rows

    def inject_write_faults(self, fail: int, after: int = 0) -> None:
        """Let the next ``after`` write statements (INSERT, UPDATE, DELETE) through, then make
        the ``fail`` after them raise :class:`InjectedWriteFault`; a write inside a
        transaction then meets its rollback. Chaos only (:mod:`appliance.chaos_hook`)."""
        self._faults = (max(0, int(after)), max(0, int(fail)))

    def _fault_write(self) -> None:
        skip, fail = self._faults
        if skip:
            self._faults = (skip - 1, fail)
            return
        self._faults = (0, fail - 1)
        raise InjectedWriteFault(f"injected store fault (chaos): write refused, {fail - 1} "
                                 "more to come")

    def _dicts(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        try:
            cur = self.con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        except Exception as exc:
            self._note_invalidated(exc)
            self._refuse_damage(exc)
            raise

    def _refuse_damage(self, exc: BaseException) -> None:
        """Raise :class:`StoreDamaged` (from ``exc``) when DuckDB says the file is damaged."""
        text = str(exc)
        if any(mark in text.lower() for mark in DAMAGE_MARKS):
            self.damage = (
                f"{self.path} is damaged ({text.splitlines()[0][:200]}); the appliance stopped "
                "with maintenance mode ON: move the file aside, `methtrader restore` a backup, "
                "then `methtrader resume`")
            raise StoreDamaged(self.damage) from exc

    def _note_invalidated(self, exc: BaseException) -> None:
        """After a fatal DuckDB error the database is unusable until it is opened again."""
        if self._invalidated is None and (isinstance(exc, duckdb.FatalException)
                                          or "database has been invalidated" in str(exc)):
            self._invalidated = str(exc).splitlines()[0]
            self._tx_lost = self._tx_writes is not None
            self._tx_writes = None
            service_logger("store").error("the database was invalidated by a fatal error; "
                                          "it is reopened before the next statement",
                                          error=self._invalidated)

    def _reopen(self) -> None:
        """Open the file again (raises, and stays invalidated, while that fails too)."""
        with contextlib.suppress(Exception):
            self._con.close()
        self._con = connect(self.path, read_only=self.read_only)
        self.reopened += 1
        service_logger("store").warning("database reopened after a fatal error",
                                        error=self._invalidated)
        self._invalidated = None


class StoreRunner:
    """Runs store calls in a worker thread, one at a time, from trio.

    Writes are shielded from cancellation: once a batch is handed to DuckDB it completes and
    its result is kept, so a shutdown in the middle of a write loses nothing acknowledged.

    ``inline=True`` runs the calls on the event loop instead: tests under trio's autojump clock
    use it, because that clock may jump while a worker thread is still busy.
    """

    def __init__(self, store: Store, *, inline: bool = False) -> None:
        self.store = store
        self.inline = inline
        self._limiter = trio.CapacityLimiter(1)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.inline:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        with trio.CancelScope(shield=True):
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def call(self, method: str, *args: Any) -> Any:
        return await self.run(getattr(self.store, method), *args)

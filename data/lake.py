"""The Parquet lake: ``<state>/lake/candles/interval=<1m|5m|1h>/symbol=<SYMBOL>/*.parquet``.

1m candles are stored one file per UTC day (``day=YYYYMMDD.parquet``), which is also the unit of
resumption: a backfill that dies keeps every day it finished, and a day file is only ever
replaced whole (temp file, fsync, rename). A day file carries in its metadata whether the day
was complete when written (it had fully closed); an incomplete one (today's) is refetched.

5m and 1h are derived from the 1m files by resampling in DuckDB, so the three always agree.
Columns: open_time (int64 ms UTC), open, high, low, close, volume, turnover.

A file that cannot be read (truncated, overwritten) is treated as missing: it is moved aside
to ``<lake>/quarantine/`` with a log line, and the backfill fetches its day again. Nothing that
reads the lake crash-loops on one damaged file. Damage that still decodes counts as unreadable
too: files are written with Parquet page checksums, which every read verifies, a read must
return the rows the footer counts, and the rows must be candles (:func:`data.candles.validate`;
a day file's rows inside its day), so flipped bits never come back as prices.

A lake given a :class:`~data.disk.DiskState` reports every write to it (a write refused for
want of space, real or injected by ``chaos_disk_full``, raises ``OSError`` ENOSPC and nothing
half-written is left in place).

Funding rates of a perpetual live next to its candles, in ``<state>/lake/funding/symbol=<SYMBOL>
/funding.parquet`` (columns time, int64 ms UTC, and rate): one small file per symbol (three rows
a day), merged with what it held and replaced whole, crash-safely, on every write. Its manifest
has the interval ``funding`` (dataset ``<SYMBOL>-funding``).
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.candles import CandleError, validate
from data.disk import DiskState
from data.files import fsync_path
from data.intervals import INTERVAL_MS, MINUTE_MS

T = TypeVar("T")

DAY_MS = 86_400_000
COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "turnover")
SCHEMA = pa.schema([("open_time", pa.int64())] + [(c, pa.float64()) for c in COLUMNS[1:]])
RESAMPLED = {"5m": 300_000, "1h": 3_600_000}
RESAMPLED_AND_1M = ("1m", *RESAMPLED)
FUNDING = "funding"  # the manifest interval of a funding-rate dataset
FUNDING_SCHEMA = pa.schema([("time", pa.int64()), ("rate", pa.float64())])


COMPRESSION = "snappy"  # 2x faster to write than zstd; the lake favours ingest speed
UNREADABLE = (pa.ArrowException, OSError, duckdb.Error, ValueError, KeyError)
log = logging.getLogger("methtrader.lake")


@dataclass(frozen=True)
class DayBatch:
    day_start_ms: int
    rows: np.ndarray  # (n, 7), sorted by open_time
    complete: bool  # the day had fully closed when fetched
    missing: int  # minutes the exchange had no candle for


@dataclass(frozen=True)
class Manifest:
    symbol: str
    interval: str
    start_time: int  # first open_time, ms
    end_time: int  # last open_time, ms
    rows: int
    missing: int  # minutes of the range the exchange had no candle for
    sha256: str  # over the files, in name order
    files: int
    created_at: float

    @property
    def dataset_id(self) -> str:
        return f"{self.symbol}-{self.interval}"


def day_name(day_start_ms: int) -> str:
    return "day=" + time.strftime("%Y%m%d", time.gmtime(day_start_ms / 1000)) + ".parquet"


class Lake:
    def __init__(self, root: Path, disk: DiskState | None = None) -> None:
        self.root = Path(root)
        self.disk = disk  # where its writes report (and meet an injected full disk)

    def _written(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, a write to the lake, reported to :attr:`disk` when there is one."""
        if self.disk is None:
            return fn(*args)
        return self.disk.write("lake", fn, *args)

    def dir(self, interval: str, symbol: str) -> Path:
        return self.root / "candles" / f"interval={interval}" / f"symbol={symbol}"

    def day_path(self, symbol: str, day_start_ms: int) -> Path:
        return self.dir("1m", symbol) / day_name(day_start_ms)

    # -- writing -----------------------------------------------------------------------------

    def write_day(self, symbol: str, day_start_ms: int, rows: np.ndarray, *, complete: bool,
                  missing: int) -> Path:
        """Write one day of 1m candles crash-safely; ``rows`` is (n, 7), sorted."""
        return self.write_days(symbol, [DayBatch(day_start_ms, rows, complete, missing)])[0]

    def write_days(self, symbol: str, days: list["DayBatch"]) -> list[Path]:
        """Write several day files crash-safely, encoding them in parallel.

        Each file is written under a temporary name and fsynced, then all are renamed and the
        directory is fsynced once: a crash leaves either the old file or the new one, never
        half of one. Parquet encoding releases the GIL, so a small thread pool uses the cores.
        """
        return self._written(self._write_days, symbol, days)

    def _write_days(self, symbol: str, days: list["DayBatch"]) -> list[Path]:
        targets = [self.day_path(symbol, d.day_start_ms) for d in days]
        if not targets:
            return []
        targets[0].parent.mkdir(parents=True, exist_ok=True)

        def encode(i: int) -> Path:
            d = days[i]
            meta = {b"methtrader": json.dumps({"complete": d.complete,
                                               "missing": d.missing}).encode()}
            tmp = targets[i].with_name(f".{targets[i].name}.tmp")
            pq.write_table(to_table(d.rows).replace_schema_metadata(meta), tmp,
                           compression=COMPRESSION, use_dictionary=False,
                           write_page_checksum=True)
            fsync_path(tmp)
            return tmp

        with ThreadPoolExecutor(max_workers=min(len(days), os.cpu_count() or 1)) as pool:
            temps = list(pool.map(encode, range(len(days))))
        for tmp, target in zip(temps, targets):
            os.replace(tmp, target)
        fsync_path(targets[0].parent)
        return targets

    def day_status(self, symbol: str, day_start_ms: int) -> tuple[bool, int] | None:
        """(complete, missing) of a stored day, or None when it is not stored (or was damaged:
        then it is quarantined, so the caller fetches the day again)."""
        path = self.day_path(symbol, day_start_ms)
        if not path.exists():
            return None
        try:
            meta = pq.read_schema(path).metadata or {}
            info = json.loads(meta.get(b"methtrader", b'{"complete": false, "missing": 0}'))
            return bool(info["complete"]), int(info["missing"])
        except UNREADABLE as exc:
            self.quarantine(path, exc)
            return None

    # -- damaged files -----------------------------------------------------------------------

    def quarantine(self, path: Path, why: BaseException | str) -> Path:
        """Move a damaged file out of the lake's data (to ``quarantine/``), with a log line."""
        rel = Path(path).resolve().relative_to(self.root.resolve())
        target = self.root / "quarantine" / rel.parent / (
            f"{rel.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        reason = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
        log.warning("damaged lake file moved aside; it is treated as missing",
                    extra={"service": "lake", "fields": {"file": str(path),
                                                         "moved_to": str(target),
                                                         "reason": reason[:300]}})
        return target

    def sweep(self, interval: str, symbol: str) -> list[Path]:
        """Read every file of a series in full, checked as every read checks it (and a day
        file's rows inside its day), and quarantine the ones that fail."""
        moved = []
        for f in self.files(interval, symbol):
            try:
                rows = self._checked_rows([f], interval)
                pq.read_schema(f)
                if f.name.startswith("day=") and len(rows):
                    day = _day_start_ms(f)
                    if rows[0, 0] < day or rows[-1, 0] >= day + DAY_MS:
                        raise CandleError(f"rows outside the day {f.name} names")
            except UNREADABLE as exc:
                moved.append(self.quarantine(f, exc))
        return moved

    def _retrying(self, interval: str, symbol: str, fn):
        """Run ``fn``; if it fails on a damaged file, quarantine those and run it once more."""
        try:
            return fn()
        except UNREADABLE:
            if not self.sweep(interval, symbol):
                raise
        return fn()

    # -- reading and deriving ----------------------------------------------------------------

    def files(self, interval: str, symbol: str) -> list[Path]:
        d = self.dir(interval, symbol)
        return sorted(d.glob("*.parquet")) if d.exists() else []

    def symbols(self, interval: str = "1m") -> list[str]:
        d = self.root / "candles" / f"interval={interval}"
        if not d.exists():
            return []
        return sorted(p.name.split("=", 1)[1] for p in d.iterdir() if p.name.startswith("symbol="))

    def read(self, interval: str, symbol: str, start_ms: int | None = None,
             end_ms: int | None = None) -> np.ndarray:
        """Candles as an (n, 7) array, oldest first, open_time in [start_ms, end_ms)."""
        return self._retrying(interval, symbol,
                              lambda: self._read(interval, symbol, start_ms, end_ms))

    def _read(self, interval: str, symbol: str, start_ms: int | None,
              end_ms: int | None) -> np.ndarray:
        files = self.files(interval, symbol)
        if not files:
            return np.zeros((0, 7))
        arr = self._checked_rows(files, interval)
        if start_ms is not None:
            arr = arr[arr[:, 0] >= start_ms]
        if end_ms is not None:
            arr = arr[arr[:, 0] < end_ms]
        return arr

    def read_minutes(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        """1m candles with open time in [start_ms, end_ms), reading only the day files that
        overlap the range (the trading engine's history at start)."""
        return self._retrying("1m", symbol,
                              lambda: self._read_minutes(symbol, start_ms, end_ms))

    def _read_minutes(self, symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
        files = [f for f in self.files("1m", symbol)
                 if start_ms - DAY_MS < _day_start_ms(f) < end_ms]
        if not files:
            return np.zeros((0, 7))
        arr = self._checked_rows(files, "1m")
        return arr[(arr[:, 0] >= start_ms) & (arr[:, 0] < end_ms)]

    @staticmethod
    def _checked_rows(files: list[Path], interval: str) -> np.ndarray:
        """The candles of ``files`` as one (n, 7) array sorted by open time, or an UNREADABLE
        error: a page whose checksum fails, fewer rows than the footers count (a damaged row
        group), or rows that are not candles on the interval's grid."""
        table = pq.read_table(files, schema=SCHEMA, page_checksum_verification=True)
        counted = sum(pq.read_metadata(f).num_rows for f in files)
        if table.num_rows != counted:
            raise CandleError(f"{table.num_rows} rows read where the footers count {counted}")
        arr = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in COLUMNS])
        arr = arr[np.argsort(arr[:, 0], kind="stable")]
        validate(arr, INTERVAL_MS.get(interval, MINUTE_MS))
        return arr

    def resample(self, symbol: str) -> dict[str, int]:
        """Derive 5m and 1h from the 1m files (DuckDB, in memory, over the minutes as every read
        checks them); returns rows per interval."""
        return self._written(self._retrying, "1m", symbol, lambda: self._resample(symbol))

    def _resample(self, symbol: str) -> dict[str, int]:
        files = self.files("1m", symbol)
        out: dict[str, int] = {}
        if not files:
            return out
        minutes = to_table(self._checked_rows(files, "1m"))
        con = duckdb.connect()
        try:
            con.register("minutes", minutes)
            for interval, ms in RESAMPLED.items():
                table = con.sql(
                    f"SELECT (open_time // {ms}) * {ms} AS open_time, "
                    "arg_min(open, open_time) AS open, max(high) AS high, min(low) AS low, "
                    "arg_max(close, open_time) AS close, sum(volume) AS volume, "
                    "sum(turnover) AS turnover FROM minutes "
                    "GROUP BY 1 ORDER BY 1").to_arrow_table()
                table = table.cast(SCHEMA)
                write_table_atomic(table, self.dir(interval, symbol) / "data.parquet")
                out[interval] = table.num_rows
        finally:
            con.close()
        return out

    def manifest(self, symbol: str, interval: str = "1m") -> Manifest | None:
        return self._retrying(interval, symbol, lambda: self._manifest(symbol, interval))

    def _manifest(self, symbol: str, interval: str) -> Manifest | None:
        files = self.files(interval, symbol)
        if not files:
            return None
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode())
            digest.update(hashlib.sha256(f.read_bytes()).digest())
        arr = self._read(interval, symbol, None, None)
        missing = 0
        if interval == "1m":
            for f in files:
                info = json.loads((pq.read_schema(f).metadata or {}).get(
                    b"methtrader", b'{"missing": 0}'))
                missing += int(info.get("missing", 0))
        return Manifest(symbol, interval, int(arr[0, 0]) if len(arr) else 0,
                        int(arr[-1, 0]) if len(arr) else 0, len(arr), missing,
                        digest.hexdigest(), len(files), time.time())

    def size_bytes(self) -> int:
        """Bytes the lake's files take on disk."""
        return sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())

    def trim_days(self, before_ms: int) -> tuple[int, list[str]]:
        """Delete every symbol's 1m day files that start before ``before_ms``, re-derive its 5m
        and 1h files and manifests; returns (bytes freed, symbols trimmed). The disk guard's
        last resort when market data is what fills the disk."""
        freed, trimmed = 0, []
        for symbol in self.symbols("1m"):
            old = [f for f in self.files("1m", symbol) if _day_start_ms(f) < before_ms]
            if not old:
                continue
            for f in old:
                freed += f.stat().st_size
                f.unlink()
            fsync_path(self.dir("1m", symbol))
            self.resample(symbol)
            for interval in RESAMPLED_AND_1M:
                if (m := self.manifest(symbol, interval)) is not None:
                    self.save_manifest(m)
            trimmed.append(symbol)
        return freed, trimmed

    # -- funding rates -------------------------------------------------------------------

    def funding_path(self, symbol: str) -> Path:
        return self.root / FUNDING / f"symbol={symbol}" / "funding.parquet"

    def write_funding(self, symbol: str, rows: np.ndarray) -> Path:
        """Merge (time ms, rate) rows into the symbol's funding file (a row for a time already
        stored replaces it) and replace the file crash-safely. Rows must have strictly
        increasing times and finite rates."""
        new = np.asarray(rows, dtype=np.float64).reshape(-1, 2)
        if not np.isfinite(new).all() or np.any(np.diff(new[:, 0]) <= 0):
            raise ValueError(f"{symbol}: funding rows need finite values and strictly "
                             "increasing times")
        return self._written(self._write_funding, symbol, new)

    def _write_funding(self, symbol: str, new: np.ndarray) -> Path:
        old = self.read_funding(symbol)
        merged = np.concatenate([old[~np.isin(old[:, 0], new[:, 0])], new])
        merged = merged[np.argsort(merged[:, 0], kind="stable")]
        table = pa.table([pa.array(merged[:, 0].astype(np.int64)),
                          pa.array(merged[:, 1], pa.float64())], schema=FUNDING_SCHEMA)
        return write_table_atomic(table, self.funding_path(symbol))

    def read_funding(self, symbol: str, start_ms: int | None = None,
                     end_ms: int | None = None) -> np.ndarray:
        """Funding rates as an (n, 2) array [time_ms, rate], oldest first, with time in
        ``(start_ms, end_ms]`` (the funding times a position held over that span pays)."""
        path = self.funding_path(symbol)
        if not path.exists():
            return np.zeros((0, 2))
        table = pq.read_table(path, schema=FUNDING_SCHEMA)
        arr = np.column_stack([table.column("time").to_numpy().astype(np.float64),
                               table.column("rate").to_numpy()])
        if start_ms is not None:
            arr = arr[arr[:, 0] > start_ms]
        if end_ms is not None:
            arr = arr[arr[:, 0] <= end_ms]
        return arr

    def funding_manifest(self, symbol: str) -> Manifest | None:
        """The manifest of the symbol's funding file (interval ``funding``), or None."""
        path = self.funding_path(symbol)
        if not path.exists():
            return None
        digest = hashlib.sha256()
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
        arr = self.read_funding(symbol)
        return Manifest(symbol, FUNDING, int(arr[0, 0]) if len(arr) else 0,
                        int(arr[-1, 0]) if len(arr) else 0, len(arr), 0, digest.hexdigest(), 1,
                        time.time())

    def save_manifest(self, m: Manifest) -> Path:
        path = self.root / "manifests" / f"{m.dataset_id}.json"
        return self._written(write_bytes_atomic, path,
                             json.dumps(m.__dict__, sort_keys=True).encode())

    def manifests(self) -> list[Manifest]:
        d = self.root / "manifests"
        if not d.exists():
            return []
        return [Manifest(**json.loads(p.read_text())) for p in sorted(d.glob("*.json"))]


def _day_start_ms(path: Path) -> int:
    """The day a ``day=YYYYMMDD.parquet`` file holds, as ms since the epoch."""
    stamp = path.name.removeprefix("day=").removesuffix(".parquet")
    return int(calendar.timegm(time.strptime(stamp, "%Y%m%d"))) * 1000


def to_table(rows: np.ndarray) -> pa.Table:
    return pa.table([pa.array(rows[:, 0].astype(np.int64))] +
                    [pa.array(rows[:, i], pa.float64()) for i in range(1, 7)], schema=SCHEMA)


def write_table_atomic(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression=COMPRESSION, use_dictionary=False,
                   write_page_checksum=True)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)
    return path

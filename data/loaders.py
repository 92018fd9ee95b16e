"""Real candle files → validated numpy series, for the ``replay`` exchange and for datasets.

One file becomes a :class:`CandleSeries`: rows ``(n, 7)`` float64 of open_time_ms, open, high,
low, close, volume, turnover, oldest first, its interval, and a symbol taken from the file's
name. Formats (``tests/fixtures/real/README.md`` lists real examples of each):

* ccxt JSON (freqtrade, ``ETH_BTC-5m.json``): ``[[open_time_ms, o, h, l, c, v], ...]``
* Feather (freqtrade) and Parquet: columns open_time|date|timestamp, open, high, low, close,
  volume and optionally turnover and symbol
* QuantConnect Lean zips holding one header-less CSV: minute trade files
  ``<YYYYMMDD>_trade.zip`` (ms since midnight, the date from the name) and hour/daily trade
  files ``<symbol>_trade.zip`` (``YYYYMMDD HH:MM``)
* CSV with a header naming date, open, high, low, close, volume (backtesting.py's BTCUSD.csv)

Turnover (quote units) is volume × close where the file has none. For inverse contracts, whose
volume counts USD contracts, that number is not a turnover; replay does not apply the volume
bar (quote currencies differ between files anyway).

Refused, with a message that names the file and what is wrong (:class:`CandleFileError`):
anything that fails :func:`data.candle_checks.check_candles` (funding rates, shuffled or
duplicated rows, broken OHLC), Lean bid/ask quote bars, and mark-price, index and premium-index
candles. Mark prices are refused even where they have numbers in every column: they are an
index the exchange computes, not trades, so no order could have filled at them, and they would
shadow the traded candles of the same symbol (``XRP_USDT_USDT-1h-mark.json`` beside
``XRP_USDT_USDT-1h-futures.json``).

:func:`load_folder` loads every file under a folder and merges files of one series (Lean's
one-file-per-day minute data, a ``.json`` and a ``.feather`` copy of the same candles). The
pure parsing lives in :mod:`data.candle_formats`; this module is the file-reading edge.

Funding-rate files are not candles, but replay charges what they say: :func:`load_funding_folder`
reads them as :class:`FundingSeries` of (funding time, rate), matched to candles by symbol and
market — freqtrade's ``XRP_USDT_USDT-8h-funding_rate.json`` (ccxt rows with the rate in the
"open" slot; its millisecond jitter is rounded to the minute) and Lean's
``cryptofuture/<exchange>/margin_interest/<symbol>.csv`` (``YYYYMMDD HH:MM:SS,rate``).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from data.candle_checks import InvalidCandles, check_candles, close_times, fmt_ms
from data.candle_formats import (FileInfo, describe_path, parse_ccxt_json, parse_csv_text,
                                 parse_times, split_pair, table_rows)

SUFFIXES = (".json", ".feather", ".parquet", ".csv", ".zip")
#: what reading a damaged zip raises besides BadZipFile: a torn deflate stream (zlib.error),
#: one that ends early (EOFError), a flipped method or encryption flag (NotImplementedError,
#: RuntimeError)
_DAMAGED_ZIP = (zlib.error, EOFError, NotImplementedError, RuntimeError)

_KIND_REASONS = {
    "mark": "mark-price candles (freqtrade candle type 'mark'), not traded OHLCV: no order "
            "fills at a mark price; replay the -futures file of the pair instead",
    "index": "index-price candles (freqtrade candle type 'index'), not traded OHLCV",
    "premiumindex": "premium-index candles (freqtrade candle type 'premiumIndex'), not traded "
                    "OHLCV",
    "funding_rate": "not OHLCV candles: a funding-rate file (freqtrade candle type "
                    "'funding_rate')",
    "quote": "not OHLCV trade candles: bid/ask quote bars (a Lean *_quote.zip)",
}


class CandleFileError(ValueError):
    """A file that is not usable candles; the message names the file and what is wrong."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True, eq=False)
class CandleSeries:
    """Validated candles of one symbol on one interval, from one or more files.

    ``market`` tells apart series of one symbol from different venues or markets
    (``bybit-perp``, ``coinbase-spot``; ``spot``/``perp`` for freqtrade; ``""`` when the file
    does not say).
    """

    symbol: str
    interval: str
    rows: np.ndarray
    market: str = ""
    base: str = ""
    quote: str = ""
    sources: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def open_ms(self) -> np.ndarray:
        return self.rows[:, 0].astype(np.int64)

    @property
    def close_ms(self) -> np.ndarray:
        return close_times(self.open_ms, self.interval)


FUNDING_KINDS = ("funding_rate", "margin_interest")
MAX_FUNDING_RATE = 1.0  # a rate beyond ±100% per interval is not a funding rate


@dataclass(frozen=True, eq=False)
class FundingSeries:
    """Funding rates of one perpetual: ``rows`` (n, 2) of funding time (ms, on the minute) and
    rate, oldest first, strictly increasing in time."""

    symbol: str
    market: str
    rows: np.ndarray
    sources: tuple[Path, ...] = ()

    def __len__(self) -> int:
        return len(self.rows)


def is_funding_file(path: str | Path) -> bool:
    """Whether the file's name says it holds funding rates (not candles)."""
    return describe_path(Path(path)).kind.lower() in FUNDING_KINDS


def _funding_rows(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".json":
        raw = parse_ccxt_json(json.loads(path.read_text(encoding="utf-8")))
        return raw[:, :2]
    if suffix == ".csv":
        lines = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig")))
                 if r and any(f.strip() for f in r)]
        bad = next((i for i, r in enumerate(lines) if len(r) != 2), None)
        if bad is not None:
            raise InvalidCandles(f"line {bad + 1} has {len(lines[bad])} fields; a funding file "
                                 "has two: time, rate")
        if not lines:
            return np.zeros((0, 2))
        try:
            rates = np.array([r[1] for r in lines], dtype=np.float64)
        except ValueError:
            raise InvalidCandles("a rate is not a number") from None
        return np.column_stack([parse_times([r[0] for r in lines]), rates])
    raise InvalidCandles(f"not a funding file type ({suffix or 'no suffix'}); funding is read "
                         "from .json (freqtrade) and .csv (Lean)")


def load_funding_file(path: str | Path) -> FundingSeries:
    """Load and validate one funding-rate file, or raise :class:`CandleFileError`."""
    path = Path(path)
    info = describe_path(path)
    try:
        rows = _funding_rows(path)
    except InvalidCandles as exc:
        raise CandleFileError(path, f"not a funding-rate file: {exc.reason}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CandleFileError(path, f"cannot read it: {exc}") from None
    except (ValueError, OverflowError, csv.Error, RecursionError) as exc:  # never a traceback
        raise CandleFileError(path, f"not a readable {path.suffix} file: {exc}") from None
    if not len(rows):
        raise CandleFileError(path, "no funding rates in the file")
    times = np.round(rows[:, 0] / 60_000) * 60_000
    rates = rows[:, 1]
    if not np.isfinite(rows).all():
        raise CandleFileError(path, "a funding time or rate is missing or not finite")
    if np.any(np.abs(rates) >= MAX_FUNDING_RATE):
        i = int(np.argmax(np.abs(rates) >= MAX_FUNDING_RATE))
        raise CandleFileError(path, f"row {i + 1}: rate {rates[i]} is not a funding rate "
                                    f"(|rate| >= {MAX_FUNDING_RATE})")
    if np.any(np.diff(times) <= 0):
        i = int(np.argmax(np.diff(times) <= 0)) + 2
        raise CandleFileError(path, f"row {i}: funding times are not strictly increasing")
    return FundingSeries(info.symbol, info.market, np.column_stack([times, rates]), (path,))


def load_funding_folder(path: str | Path, recursive: bool = True
                        ) -> tuple[list[FundingSeries], list[tuple[Path, str]]]:
    """Every funding-rate file under a folder: ``(series, refused)``. Files of one symbol and
    market merge; where they overlap they must agree, else the later file is refused."""
    root = Path(path)
    merged: dict[tuple[str, str], FundingSeries] = {}
    refused: list[tuple[Path, str]] = []
    for file in candle_files(root, recursive):
        if not is_funding_file(file):
            continue
        try:
            f = load_funding_file(file)
        except CandleFileError as exc:
            refused.append((file, exc.reason))
            continue
        key = (f.symbol, f.market)
        have = merged.get(key)
        if have is None:
            merged[key] = f
            continue
        common, ia, ib = np.intersect1d(have.rows[:, 0], f.rows[:, 0], return_indices=True)
        if not np.array_equal(have.rows[ia, 1], f.rows[ib, 1]):
            refused.append((file, f"overlaps {have.sources[0].name} with different rates"))
            continue
        rows = np.concatenate([have.rows, f.rows[~np.isin(f.rows[:, 0], common)]])
        merged[key] = replace(have, rows=rows[np.argsort(rows[:, 0], kind="stable")],
                              sources=have.sources + f.sources)
    return list(merged.values()), refused


def read_rows(path: Path, info: FileInfo) -> tuple[np.ndarray, str | None]:
    """The raw rows of a file (not yet validated) and a symbol written inside it, if any."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return parse_ccxt_json(json.loads(path.read_text(encoding="utf-8"))), None
    if suffix == ".csv":
        return parse_csv_text(path.read_text(encoding="utf-8-sig"), info.day_ms), None
    if suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise InvalidCandles(f"the zip holds {len(members)} files; expected one "
                                         "CSV")
                data = zf.read(members[0])
        except _DAMAGED_ZIP as exc:
            raise zipfile.BadZipFile(f"{type(exc).__name__}: {exc}") from None
        return parse_csv_text(data.decode("utf-8-sig"), info.day_ms), None
    if suffix == ".feather":
        import pyarrow.feather as feather
        return table_rows(feather.read_table(path))
    if suffix == ".parquet":
        import pyarrow.parquet as pq
        return table_rows(pq.ParquetFile(path).read())
    raise InvalidCandles(f"not a candle file type ({suffix or 'no suffix'}); replay reads "
                         f"{', '.join(SUFFIXES)}")


def load_file(path: str | Path) -> CandleSeries:
    """Load and validate one candle file, or raise :class:`CandleFileError`."""
    path = Path(path)
    info = describe_path(path)
    try:
        raw, inner_symbol = read_rows(path, info)
        interval, rows = check_candles(raw, info.interval)
    except InvalidCandles as exc:
        raise CandleFileError(path, exc.reason) from None
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise CandleFileError(path, f"cannot read it: {exc}") from None
    except (ValueError, csv.Error, RecursionError, pa.ArrowException) as exc:
        # json, csv and pyarrow parse errors (json recurses once per nesting level; a damaged
        # Feather or Parquet file may ask for an absurd buffer: ArrowMemoryError)
        raise CandleFileError(path, f"not a readable {path.suffix} file: {exc}") from None
    if info.kind != "trade":
        raise CandleFileError(path, _KIND_REASONS.get(
            info.kind.lower(), f"not OHLCV trade candles: Lean {info.kind!r} data"))
    if rows.shape[1] == 6:
        with np.errstate(over="ignore"):
            turnover = rows[:, 5] * rows[:, 4]
        if not np.isfinite(turnover).all():
            bad = np.flatnonzero(~np.isfinite(turnover))
            raise CandleFileError(path, f"volume × close (the turnover) is too large for a "
                                        f"float in {len(bad)} rows (first "
                                        f"{fmt_ms(rows[bad[0], 0])})")
        rows = np.column_stack([rows, turnover])
    symbol = inner_symbol or info.symbol
    base, quote = (info.base, info.quote) if symbol == info.symbol else split_pair(symbol)
    return CandleSeries(symbol=symbol, interval=interval, rows=rows, market=info.market,
                        base=base, quote=quote, sources=(path,))


def candle_files(root: Path, recursive: bool = True) -> list[Path]:
    """Every visible file under ``root`` (hidden files and folders left out), sorted."""
    found = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in found if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def load_folder(path: str | Path, recursive: bool = True
                ) -> tuple[list[CandleSeries], list[tuple[Path, str]]]:
    """Load every candle file under a folder: ``(series, refused)``.

    ``refused`` lists each file that was skipped with the reason, other file types included,
    so a user sees exactly what was left out. Files holding the same series (same symbol,
    market and interval) are merged; where their candles overlap they must agree, else the
    later file (in path order) is refused.
    """
    root = Path(path)
    if not root.is_dir():
        raise CandleFileError(root, "not a folder")
    loaded: list[CandleSeries] = []
    refused: list[tuple[Path, str]] = []
    for file in candle_files(root, recursive):
        if file.suffix.lower() not in SUFFIXES:
            refused.append((file, f"not a candle file type ({file.suffix or 'no suffix'}); "
                                  f"replay reads {', '.join(SUFFIXES)}"))
            continue
        try:
            loaded.append(load_file(file))
        except CandleFileError as exc:
            refused.append((file, exc.reason))
    series, conflicts = merge_series(loaded)
    return series, sorted(refused + conflicts)


def merge_series(loaded: list[CandleSeries]
                 ) -> tuple[list[CandleSeries], list[tuple[Path, str]]]:
    """Merge series with the same (symbol, market, interval); refuse conflicting files."""
    merged: dict[tuple[str, str, str], CandleSeries] = {}
    conflicts: list[tuple[Path, str]] = []
    for s in loaded:
        key = (s.symbol, s.market, s.interval)
        if key not in merged:
            merged[key] = s
            continue
        try:
            merged[key] = _merge_two(merged[key], s)
        except InvalidCandles as exc:
            conflicts.extend((src, exc.reason) for src in s.sources)
    return list(merged.values()), conflicts


def _merge_two(a: CandleSeries, b: CandleSeries) -> CandleSeries:
    common, ia, ib = np.intersect1d(a.rows[:, 0], b.rows[:, 0], assume_unique=True,
                                    return_indices=True)
    if len(common):
        ra, rb = a.rows[ia], b.rows[ib]
        same = (np.isclose(ra[:, 1:5], rb[:, 1:5], rtol=1e-9, atol=0).all(axis=1)
                & np.isclose(ra[:, 5], rb[:, 5], rtol=1e-6, atol=1e-12))
        if not same.all():
            first = common[np.flatnonzero(~same)[0]]
            names = ", ".join(p.name for p in a.sources)
            raise InvalidCandles(f"overlaps {names} ({a.symbol} {a.interval}) with different "
                                 f"candles at {int((~same).sum())} open times (first "
                                 f"{fmt_ms(first)})")
    fresh = b.rows[~np.isin(b.rows[:, 0], common)]
    rows = np.concatenate([a.rows, fresh])
    rows = rows[np.argsort(rows[:, 0], kind="stable")]
    return replace(a, rows=rows, sources=a.sources + b.sources)

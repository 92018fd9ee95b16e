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
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data.candle_checks import InvalidCandles, check_candles, close_times, fmt_ms
from data.candle_formats import (FileInfo, describe_path, parse_ccxt_json, parse_csv_text,
                                 split_pair, table_rows)

SUFFIXES = (".json", ".feather", ".parquet", ".csv", ".zip")

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


def read_rows(path: Path, info: FileInfo) -> tuple[np.ndarray, str | None]:
    """The raw rows of a file (not yet validated) and a symbol written inside it, if any."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return parse_ccxt_json(json.loads(path.read_text(encoding="utf-8"))), None
    if suffix == ".csv":
        return parse_csv_text(path.read_text(encoding="utf-8-sig"), info.day_ms), None
    if suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) != 1:
                raise InvalidCandles(f"the zip holds {len(members)} files; expected one CSV")
            text = zf.read(members[0]).decode("utf-8-sig")
        return parse_csv_text(text, info.day_ms), None
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
    except ValueError as exc:  # json and pyarrow parse errors
        raise CandleFileError(path, f"not a readable {path.suffix} file: {exc}") from None
    if info.kind != "trade":
        raise CandleFileError(path, _KIND_REASONS.get(
            info.kind.lower(), f"not OHLCV trade candles: Lean {info.kind!r} data"))
    if rows.shape[1] == 6:
        rows = np.column_stack([rows, rows[:, 5] * rows[:, 4]])
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

"""Pure parsing of real candle file formats into raw rows, and what a file's path tells.

Raw rows are ``(n, 6)`` or ``(n, 7)`` float64 (open_time_ms, open, high, low, close, volume[,
turnover]), not yet validated: :func:`data.candle_checks.check_candles` does that. Problems
of layout raise :class:`data.candle_checks.InvalidCandles`. No function here touches a file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.candle_checks import DAY_MS, InvalidCandles

QUOTE_COINS = ("USDT", "USDC", "BUSD", "FDUSD", "TUSD", "USD", "EUR", "BTC", "ETH", "BNB")
_CCXT_ROW = "[open_time_ms, open, high, low, close, volume]"
_FREQTRADE = re.compile(r"^(?P<pair>[A-Za-z0-9]+(?:_[A-Za-z0-9]+){1,2})-(?P<tf>\d+[mhdwM])"
                        r"(?:-(?P<kind>[A-Za-z_]+))?$")
_LEAN_MINUTE = re.compile(r"^(?P<day>\d{8})_(?P<kind>[a-z]+)$")
_LEAN_DATED = re.compile(r"^(?P<sym>[a-z0-9]+)_(?P<kind>[a-z]+)$")
_LEAN_RES = {"minute": "1m", "hour": "1h", "daily": "1d"}
_LEAN_OTHER = ("second", "tick", "margin_interest", "openinterest", "universes")
_STEM_TF = re.compile(r"^(?P<sym>.+?)[-_](?P<tf>\d+[mhdwM])$")
_LEAN_TIME = re.compile(r"^(\d{8}) (\d{2}):(\d{2})(?::(\d{2}))?$")
_TIME_COLUMNS = ("open_time", "timestamp", "date", "datetime", "time", "start")
_TURNOVER_COLUMNS = ("turnover", "quote_volume")


@dataclass(frozen=True)
class FileInfo:
    """What a file's path says: symbol, market, interval and the kind of data."""

    symbol: str
    base: str
    quote: str
    market: str = ""
    interval: str | None = None
    day_ms: int | None = None  # Lean minute files: the day their ms-since-midnight count from
    kind: str = "trade"  # trade candles, or e.g. mark, funding_rate, quote


def split_pair(symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` → ``("BTC", "USDT")`` by the known quote coins; ``(symbol, "")`` if none."""
    for quote in QUOTE_COINS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, ""


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", name).upper()


def describe_path(path: PurePath) -> FileInfo:
    """Symbol, market, interval and kind from the file's name and folders.

    freqtrade ``XRP_USDT_USDT-5m-futures.json`` → XRPUSDT perp 5m; Lean
    ``Data/cryptofuture/bybit/minute/btcusdt/20221213_trade.zip`` → BTCUSDT bybit-perp 1m on
    2022-12-13; anything else → its cleaned stem (``BTCUSD.csv`` → BTCUSD), with the
    interval from a ``-1h`` suffix or a hive ``interval=1h`` folder and the symbol from a
    ``symbol=`` folder when there is one.
    """
    name = path.name
    stem = name[: -len(path.suffix)] if path.suffix else name
    m = _FREQTRADE.match(stem)
    if m:
        coins = m["pair"].upper().split("_")
        kind = (m["kind"] or "trade").lower()
        perp = len(coins) == 3 or kind != "trade"
        return FileInfo(symbol="".join(coins[:2]), base=coins[0], quote=coins[1],
                        market="perp" if perp else "spot", interval=m["tf"],
                        kind="trade" if kind == "futures" else kind)
    lean = _describe_lean(path, stem)
    if lean is not None:
        return lean
    hive = dict(part.split("=", 1) for part in path.parts[:-1] if "=" in part)
    tf = _STEM_TF.match(stem)
    symbol = _clean(hive.get("symbol") or (tf["sym"] if tf else stem))
    base, quote = split_pair(symbol)
    return FileInfo(symbol=symbol, base=base, quote=quote,
                    interval=hive.get("interval") or (tf["tf"] if tf else None))


def _describe_lean(path: PurePath, stem: str) -> FileInfo | None:
    parts = [p.lower() for p in path.parts]
    for i, part in enumerate(parts[:-3]):
        if part not in ("crypto", "cryptofuture"):
            continue
        exchange, res = parts[i + 1], parts[i + 2]
        if res not in _LEAN_RES and res not in _LEAN_OTHER:
            continue
        market = f"{exchange}-{'perp' if part == 'cryptofuture' else 'spot'}"
        m = _LEAN_MINUTE.match(stem.lower())
        if res in _LEAN_RES and m and len(parts) > i + 4:
            day = np.datetime64(f"{m['day'][:4]}-{m['day'][4:6]}-{m['day'][6:]}", "ms")
            symbol = _clean(parts[i + 3])
            return FileInfo(symbol, *split_pair(symbol), market=market, interval=_LEAN_RES[res],
                            day_ms=int(day.astype(np.int64)), kind=m["kind"])
        m = _LEAN_DATED.match(stem.lower())
        if res in _LEAN_RES and m:
            symbol = _clean(m["sym"])
            return FileInfo(symbol, *split_pair(symbol), market=market, interval=_LEAN_RES[res],
                            kind=m["kind"])
        symbol = _clean(stem)
        return FileInfo(symbol, *split_pair(symbol), market=market, kind=res)
    return None


def parse_ccxt_json(data: Any) -> np.ndarray:
    """Rows from a decoded ccxt/freqtrade JSON array; ``null`` becomes NaN."""
    if not isinstance(data, list):
        raise InvalidCandles(f"not OHLCV candles: a JSON {type(data).__name__}, expected an "
                             f"array of {_CCXT_ROW} rows")
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != 6:
            shown = repr(row)[:60]
            raise InvalidCandles(f"not OHLCV candles: row {i + 1} is {shown}, expected "
                                 f"{_CCXT_ROW}")
    try:
        return np.array(data, dtype=np.float64).reshape(len(data), 6)
    except (TypeError, ValueError):
        raise InvalidCandles(f"not OHLCV candles: non-numeric values in {_CCXT_ROW} "
                             "rows") from None
    except OverflowError:  # an integer beyond float range: JSON has no limit on digits
        raise InvalidCandles(f"not OHLCV candles: a number too large for a float in "
                             f"{_CCXT_ROW} rows") from None


def parse_csv_text(text: str, day_ms: int | None = None) -> np.ndarray:
    """Rows from CSV text: with a header naming the columns, or Lean's header-less layout."""
    lines = [row for row in csv.reader(io.StringIO(text)) if row and any(f.strip() for f in row)]
    if not lines:
        raise InvalidCandles("no candles in the file")
    if any(re.search(r"[A-Za-z]", f) for f in lines[0][1:]):
        return _header_rows(lines)
    return _lean_rows(lines, day_ms)


def _header_rows(lines: list[list[str]]) -> np.ndarray:
    header = [h.strip().lower() for h in lines[0]]
    time_col = next((header.index(c) for c in _TIME_COLUMNS if c in header),
                    0 if header[0] == "" else None)
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in header]
    if time_col is None or missing:
        what = ", ".join(missing) if missing else "a date or time"
        raise InvalidCandles(f"not OHLCV candles: the header {','.join(lines[0])!r} has no "
                             f"{what} column")
    body = lines[1:]
    if not body:
        raise InvalidCandles("no candles in the file, only a header")
    bad = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
    if bad is not None:
        raise InvalidCandles(f"line {bad + 2} has {len(body[bad])} fields, the header "
                             f"{len(header)}")
    cols = list(zip(*body))
    names = ["open", "high", "low", "close", "volume"]
    turnover = next((c for c in _TURNOVER_COLUMNS if c in header), None)
    if turnover:
        names.append(turnover)
    values = [_floats(cols[header.index(n)], n) for n in names]
    return np.column_stack([parse_times(list(cols[time_col])), *values])


def _lean_rows(lines: list[list[str]], day_ms: int | None) -> np.ndarray:
    width = len(lines[0])
    bad = next((i for i, r in enumerate(lines) if len(r) != width), None)
    if bad is not None:
        raise InvalidCandles(f"line {bad + 1} has {len(lines[bad])} fields, line 1 {width}")
    if width == 11:
        raise InvalidCandles("not OHLCV trade candles: 11 columns of bid and ask bars "
                             "(a Lean quote file)")
    if width != 6:
        raise InvalidCandles(f"not OHLCV candles: {width} columns per row and no header; "
                             "expected time, open, high, low, close, volume")
    cols = list(zip(*lines))
    first = cols[0]
    if all(f.strip().isdigit() for f in first):
        if day_ms is None:
            raise InvalidCandles("times count milliseconds since midnight but the file name "
                                 "carries no YYYYMMDD date")
        ms = _floats(first, "time")
        if ms.max() >= DAY_MS:
            raise InvalidCandles("milliseconds since midnight run past the end of the day")
        times = day_ms + ms
    else:
        times = parse_times(list(first))
    names = ("open", "high", "low", "close", "volume")
    return np.column_stack([times, *(_floats(cols[i + 1], n) for i, n in enumerate(names))])


def _floats(values: Any, name: str) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        out = np.empty(len(values))
        for i, v in enumerate(values):
            text = str(v).strip().lower()
            if text in ("", "null", "none", "nan"):
                out[i] = np.nan
                continue
            try:
                out[i] = float(text)
            except ValueError:
                raise InvalidCandles(f"not OHLCV candles: {name} {v!r} in data row {i + 1} is "
                                     "not a number") from None
        return out


def _epoch_ms(nums: np.ndarray) -> np.ndarray:
    """Numbers as ms since the epoch; values that look like seconds are scaled."""
    finite = nums[np.isfinite(nums)]
    if len(finite) and np.abs(finite).max() < 1e11:
        return nums * 1000.0
    return nums.astype(np.float64)


def parse_times(values: list[str]) -> np.ndarray:
    """Open times (float64 ms, UTC) from epoch numbers, ISO dates or Lean's YYYYMMDD HH:MM."""
    with contextlib.suppress(ValueError):  # not all numbers: parse each as a date
        return _epoch_ms(np.array(values, dtype=np.float64))
    out = np.empty(len(values))
    for i, v in enumerate(values):
        out[i] = _parse_time(v.strip(), i)
    return out


def _parse_time(text: str, i: int) -> float:
    m = _LEAN_TIME.match(text)
    try:
        if m:
            t = datetime.strptime(f"{m[1]} {m[2]}:{m[3]}:{m[4] or '00'}", "%Y%m%d %H:%M:%S")
        else:
            t = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidCandles(f"not OHLCV candles: {text!r} in data row {i + 1} is not a "
                             "date or time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp() * 1000.0


def table_rows(table: pa.Table) -> tuple[np.ndarray, str | None]:
    """Rows from an Arrow table (Feather, Parquet) and the symbol in its ``symbol`` column."""
    cols = {name.lower(): name for name in table.column_names}
    time_name = next((cols[c] for c in _TIME_COLUMNS if c in cols), None)
    missing = [c for c in ("open", "high", "low", "close", "volume") if c not in cols]
    if time_name is None or missing:
        what = ", ".join(missing) if missing else "open_time, date or timestamp"
        raise InvalidCandles(f"not OHLCV candles: no {what} column (columns: "
                             f"{', '.join(table.column_names)})")
    symbol = None
    if "symbol" in cols:
        symbols = pc.unique(table.column(cols["symbol"]).drop_null()).to_pylist()
        if len(symbols) > 1:
            raise InvalidCandles(f"holds {len(symbols)} symbols; replay expects one symbol per "
                                 "file")
        symbol = _clean(str(symbols[0])) if symbols else None
    names = ["open", "high", "low", "close", "volume"]
    turnover = next((c for c in _TURNOVER_COLUMNS if c in cols), None)
    if turnover:
        names.append(turnover)
    values = [_arrow_floats(table.column(cols[n]), n) for n in names]
    return np.column_stack([_arrow_times(table.column(time_name)), *values]), symbol


def _arrow_floats(col: pa.ChunkedArray, name: str) -> np.ndarray:
    try:
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise InvalidCandles(f"not OHLCV candles: column {name} is {col.type}, not "
                             "numbers") from None


def _arrow_times(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
        ms = pc.cast(col, pa.timestamp("ms", tz=getattr(col.type, "tz", None)))
        return pc.cast(ms, pa.int64()).to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return _epoch_ms(_arrow_floats(col, "open time"))
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return parse_times([str(v) for v in col.to_pylist()])
    raise InvalidCandles(f"not OHLCV candles: the time column is {col.type}")

"""Fuzz of the candle readers (issue 11): damaged copies of valid candle files either load as
validated candles or are refused with :class:`CandleFileError` naming the file (replay's
loaders), or are treated as missing and moved to quarantine (the Parquet lake). Never another
exception, never a junk row."""

from __future__ import annotations

import copy
import io
import json
import logging
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from data.candle_checks import MONTH
from data.intervals import INTERVAL_MS
from data.lake import Lake
from data.loaders import CandleFileError, load_file
from tests.conftest import REAL_DATA as REAL

pytestmark = pytest.mark.slow

EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])

# -- valid files, one of each format replay reads ------------------------------------------------

ROWS: list[list[float]] = json.loads((REAL / "freqtrade" / "XRP_ETH-5m.json").read_text())[:40]
_LEAN = REAL / "quantconnect_lean" / "Data" / "crypto" / "bybit" / "minute" / "btcusdt"
with zipfile.ZipFile(_LEAN / "20221213_trade.zip") as _zf:
    LEAN_CSV = "".join(_zf.read(_zf.infolist()[0]).decode().splitlines(keepends=True)[:40])
BACKTESTING_CSV = "".join(
    (REAL / "backtesting_py" / "BTCUSD.csv").read_text().splitlines(keepends=True)[:25])
HEADER_CSV = "timestamp,open,high,low,close,volume\n" + "".join(
    f"{np.datetime64(int(r[0]), 'ms')}Z," + ",".join(repr(float(x)) for x in r[1:]) + "\n"
    for r in ROWS)

#: a Lean minute file: its folders name the venue and symbol, its name the day
LEAN_NAME = "Data/crypto/bybit/minute/btcusdt/20221213_trade.zip"


def zipped(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("20221213_btcusdt_minute_trade.csv", text)
    return buf.getvalue()


def arrow_table(rows: np.ndarray, time_type: str = "int") -> pa.Table:
    """Candles as an Arrow table: ``open_time`` in ms (int64, or float64 where a time is not
    an integer), or freqtrade's ``date`` as a UTC timestamp."""
    times = rows[:, 0]
    whole = np.isfinite(times).all() and np.array_equal(times, np.floor(times)) \
        and np.abs(times).max(initial=0) < 2**62
    col = pa.array(times.astype(np.int64)) if whole else pa.array(times)
    if time_type == "timestamp" and whole:
        col = col.cast(pa.timestamp("ms", tz="UTC"))
    names = ["open", "high", "low", "close", "volume"]
    return pa.table({"date" if time_type == "timestamp" else "open_time": col,
                     **{n: pa.array(rows[:, k + 1]) for k, n in enumerate(names)}})


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def feather_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    feather.write_feather(table, buf)
    return buf.getvalue()


VALID: dict[str, tuple[str, bytes]] = {
    "json": ("XRP_ETH-5m.json", json.dumps(ROWS).encode()),
    "header_csv": ("XRPETH-5m.csv", HEADER_CSV.encode()),
    "backtesting_csv": ("BTCUSD.csv", BACKTESTING_CSV.encode()),
    "lean_zip": (LEAN_NAME, zipped(LEAN_CSV)),
    "parquet": ("XRPETH-5m.parquet", parquet_bytes(arrow_table(np.array(ROWS)))),
    "feather": ("XRP_ETH-5m.feather", feather_bytes(arrow_table(np.array(ROWS), "timestamp"))),
}

# -- damage --------------------------------------------------------------------------------------

def flipped(data: bytes, index: int, bit: int) -> bytes:
    """``data`` with one bit flipped at ``index`` (negative: from the end): a regression
    example at a byte whose meaning is known."""
    out = bytearray(data)
    out[index] ^= 1 << bit
    return bytes(out)


NASTY_TEXT = ["", " ", "nan", "NaN", "null", "inf", "-inf", "1e400", "-1", "0", "-0", "abc",
              '"', "'", "2100-01-01", "1900-01-01", "2019-13-45", "9" * 400, "²", "1,2",
              "\x00", "\ufeff", "0x10", "1_0", "1e-400", "99999999999999999999", "None"]
NASTY_JSON: list[Any] = [None, True, False, "x", "1", "", 0, -1, 1e308, -1e308, 10**400,
                         float("nan"), float("inf"), [], {}, [1, 2], 1570752000000.5]


@dataclass(frozen=True)
class Damage:
    """What happens to a file's bytes: replaced by ``junk``, truncated at ``at``, the ``flips``
    (place, bit) flipped, ``junk`` written over them or inserted at ``at``, or ``span`` bytes
    deleted there; places are fractions of the file's length."""

    kind: str
    at: float = 0.0
    flips: tuple[tuple[float, int], ...] = ()
    junk: bytes = b""
    span: int = 0

    def apply(self, data: bytes) -> bytes:
        i = int(self.at * len(data))
        if self.kind == "random":
            return self.junk
        if self.kind == "truncate":
            return data[:i]
        if self.kind == "flip":
            out = bytearray(data)
            for where, bit in self.flips:
                out[int(where * len(data))] ^= 1 << bit
            return bytes(out)
        if self.kind == "overwrite":
            return data[:i] + self.junk + data[i + len(self.junk):]
        if self.kind == "insert":
            return data[:i] + self.junk + data[i:]
        return data[:i] + data[i + self.span:]


_place = st.floats(0, 1, exclude_max=True)
damages = st.one_of(
    st.builds(Damage, st.just("random"), junk=st.binary(max_size=256)),
    st.builds(Damage, st.just("truncate"), _place),
    st.builds(Damage, st.just("flip"),
              flips=st.lists(st.tuples(_place, st.integers(0, 7)), min_size=1,
                             max_size=4).map(tuple)),
    st.builds(Damage, st.sampled_from(["overwrite", "insert"]), _place,
              junk=st.binary(min_size=1, max_size=16)),
    st.builds(Damage, st.just("delete"), _place, span=st.integers(1, 64)))


@st.composite
def damaged_csv(draw: st.DrawFn, text: str) -> str:
    """CSV text with one field replaced, or a line dropped, duplicated, swapped or cut."""
    lines = text.splitlines()
    kind = draw(st.sampled_from(["field", "field", "drop", "duplicate", "swap", "cut",
                                 "garbage"]))
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "field":
        fields = lines[i].split(",")
        fields[draw(st.integers(0, len(fields) - 1))] = draw(
            st.sampled_from(NASTY_TEXT) | st.text(max_size=6))
        lines[i] = ",".join(fields)
    elif kind == "drop":
        del lines[i]
    elif kind == "duplicate":
        lines.insert(i, lines[i])
    elif kind == "swap":
        j = draw(st.integers(0, len(lines) - 1))
        lines[i], lines[j] = lines[j], lines[i]
    elif kind == "cut":
        lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
    else:
        lines.insert(i, draw(st.text(max_size=30)))
    return "\n".join(lines) + "\n"


@st.composite
def damaged_rows(draw: st.DrawFn) -> list[Any]:
    """The ccxt rows with one value replaced, a row dropped, duplicated, swapped, shortened or
    repeated into a long list."""
    rows = copy.deepcopy(ROWS)
    i = draw(st.integers(0, len(rows) - 1))
    kind = draw(st.sampled_from(["value", "value", "drop", "duplicate", "swap", "short",
                                 "huge"]))
    if kind == "value":
        rows[i][draw(st.integers(0, 5))] = draw(st.sampled_from(NASTY_JSON)
                                                | st.floats() | st.integers())
    elif kind == "drop":
        del rows[i]
    elif kind == "duplicate":
        rows.insert(i, list(rows[i]))
    elif kind == "swap":
        j = draw(st.integers(0, len(rows) - 1))
        rows[i], rows[j] = rows[j], rows[i]
    elif kind == "short":
        rows[i] = rows[i][:draw(st.integers(0, 5))]
    else:
        rows[i:i + 1] = [list(rows[i]) for _ in range(5000)]
    return rows


NASTY_FLOATS = [np.nan, np.inf, -np.inf, -1.0, 0.0, -0.0, 1e308, 2.0**62, 1e-300, 0.5]


@st.composite
def damaged_table(draw: st.DrawFn, time_type: str) -> pa.Table:
    """An Arrow table of the candles with one damage: a bad value, rows dropped, duplicated,
    swapped or repeated, or a column of nulls, of another type, dropped or renamed, or a symbol
    column that is not one symbol."""
    rows = np.array(ROWS)
    i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
    kind = draw(st.sampled_from(["value", "value", "drop", "duplicate", "swap", "huge",
                                 "nulls", "strings", "bools", "remove", "rename", "symbols"]))
    if kind == "value":
        rows[i, draw(st.integers(0, 5))] = draw(st.sampled_from(NASTY_FLOATS) | st.floats())
    elif kind == "drop":
        rows = np.delete(rows, i, axis=0)
    elif kind == "duplicate":
        rows = np.insert(rows, i, rows[i], axis=0)
    elif kind == "swap":
        rows[[i, j]] = rows[[j, i]]
    elif kind == "huge":
        rows = np.repeat(rows, 200, axis=0)
    table = arrow_table(rows, time_type)
    k = draw(st.integers(0, table.num_columns - 1))
    name = table.column_names[k]
    if kind == "nulls":
        return table.set_column(k, name, pa.nulls(table.num_rows, table.column(k).type))
    if kind == "strings":
        return table.set_column(k, name, table.column(k).cast(pa.string()))
    if kind == "bools":
        return table.set_column(k, name, pa.array([True] * table.num_rows))
    if kind == "remove":
        return table.remove_column(k)
    if kind == "rename":
        return table.rename_columns([n if n != name else "x" for n in table.column_names])
    if kind == "symbols":
        symbols = draw(st.sampled_from([["XRPETH", "ADABTC"], [None], ["xrp/eth"], [""]]))
        return table.append_column("symbol", pa.array(
            [symbols[r % len(symbols)] for r in range(table.num_rows)], pa.string()))
    return table


def damaged(fmt: str) -> st.SearchStrategy[bytes]:
    raw = VALID[fmt][1]
    if fmt == "json":
        structured = damaged_rows().map(lambda r: json.dumps(r).encode())
    elif fmt == "lean_zip":
        structured = damaged_csv(LEAN_CSV).map(zipped)
    elif fmt.endswith("csv"):
        structured = damaged_csv(raw.decode()).map(str.encode)
    elif fmt == "parquet":
        structured = damaged_table("int").map(parquet_bytes)
    else:
        structured = damaged_table("timestamp").map(feather_bytes)
    return damages.map(lambda d: d.apply(raw)) | structured


# -- what a reader may hand back ----------------------------------------------------------------

def assert_candles(rows: np.ndarray) -> None:
    """Validated candles: finite, positive OHLC that hold together, no negative volume, open
    times strictly increasing."""
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float64
    assert rows.ndim == 2 and rows.shape[1] == 7 and len(rows) > 0
    assert np.isfinite(rows).all()
    t, o, h, lo, c, v, turnover = rows.T
    assert np.all(np.diff(t) > 0)
    assert np.all(lo > 0) and np.all(h >= np.maximum(o, c)) and np.all(lo <= np.minimum(o, c))
    assert np.all(v >= 0) and np.all(turnover >= 0)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = Path(tempfile.mkdtemp(dir=tmp_path)) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def check_load(tmp_path: Path, fmt: str, data: bytes) -> None:
    path = _write(tmp_path, VALID[fmt][0], data)
    try:
        series = load_file(path)
    except CandleFileError as exc:
        assert str(exc).startswith(f"{path}: ") and exc.reason
        return
    assert_candles(series.rows)
    assert series.interval == MONTH or series.interval in INTERVAL_MS
    assert series.symbol and series.sources == (path,)


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_the_valid_files_load(tmp_path: Path, fmt: str) -> None:
    series = load_file(_write(tmp_path, *VALID[fmt]))
    assert_candles(series.rows)
    assert len(series) == {"backtesting_csv": 24, "lean_zip": 40}.get(fmt, 40)


@FUZZ
@given(damaged("json"))
@example(json.dumps([[ROWS[0][0], 1, 2, 1, 1, 10**400]]).encode())
@example(b"[" * 100_000 + b"]" * 100_000)
@example(json.dumps([[r[0], 10.0, 11.0, 9.0, 10.0, 1e308] for r in ROWS]).encode())
def test_json_reader(tmp_path: Path, data: bytes) -> None:
    check_load(tmp_path, "json", data)


@FUZZ
@given(damaged("header_csv"))
@example(HEADER_CSV.replace(",", ',"', 1).encode() + b"9" * 140_000)
def test_header_csv_reader(tmp_path: Path, data: bytes) -> None:
    check_load(tmp_path, "header_csv", data)


@FUZZ
@given(damaged("backtesting_csv"))
def test_backtesting_csv_reader(tmp_path: Path, data: bytes) -> None:
    check_load(tmp_path, "backtesting_csv", data)


LEAN_ZIP = VALID["lean_zip"][1]


@FUZZ
@given(damaged("lean_zip"))
@example(flipped(LEAN_ZIP, 28, 0))  # the local header's extra length: a torn deflate stream
@example(flipped(LEAN_ZIP, 29, 2))  # ... or one that ends early (EOFError)
@example(flipped(LEAN_ZIP, -95, 6))  # the central directory's version: NotImplementedError
@example(flipped(LEAN_ZIP, -93, 0))  # its encryption flag: RuntimeError
def test_lean_zip_reader(tmp_path: Path, data: bytes) -> None:
    check_load(tmp_path, "lean_zip", data)


@FUZZ
@given(damaged("parquet"))
def test_parquet_reader(tmp_path: Path, data: bytes) -> None:
    check_load(tmp_path, "parquet", data)


@FUZZ
@given(damaged("feather"))
@example(Damage("delete", 0.75, span=1).apply(VALID["feather"][1]))  # ArrowMemoryError
def test_feather_reader(tmp_path: Path, data: bytes) -> None:
    check_load(tmp_path, "feather", data)


# -- the lake ------------------------------------------------------------------------------------

DAY = EPOCH_MS + 500 * DAY_MS
_MINUTES = SimMarket(3).candles("BTCUSDT", DAY, DAY + 2 * DAY_MS)
FIRST = _MINUTES[:60]  # the day file the fuzz damages
SECOND = _MINUTES[1440:1500]  # an intact day


def _lake_with_damaged_day(tmp_path: Path, damage: Damage) -> Lake:
    lake = Lake(Path(tempfile.mkdtemp(dir=tmp_path)) / "lake")
    victim = lake.write_day("BTCUSDT", DAY, FIRST, complete=True, missing=0)
    lake.write_day("BTCUSDT", DAY + DAY_MS, SECOND, complete=True, missing=0)
    victim.write_bytes(damage.apply(victim.read_bytes()))
    return lake


def _quarantined(lake: Lake) -> int:
    return len(list((lake.root / "quarantine").rglob("day=*.parquet.corrupt-*")))


def _one_of_the_written(rows: np.ndarray, lake: Lake, read: Callable[[], np.ndarray]) -> None:
    """Every day as written, or the damaged day missing (and moved to quarantine)."""
    if _quarantined(lake):
        assert np.array_equal(rows, SECOND), "the damaged day is gone, the other one stays"
        assert not lake.day_path("BTCUSDT", DAY).exists()
    else:
        assert np.array_equal(rows, np.vstack([FIRST, SECOND])), "rows changed in the lake"
    assert np.array_equal(read(), rows)  # and a second read agrees


@pytest.fixture(autouse=True)
def _quiet_lake() -> Iterator[None]:
    """Each quarantine logs a warning; hundreds of them are noise here."""
    log = logging.getLogger("methtrader.lake")
    was, log.disabled = log.disabled, True
    yield
    log.disabled = was


#: damage to a day file that came back as changed rows: bits flipped in data pages and bytes
#: written over them (before page checksums), and, in today's layout, the row group's row
#: count in the footer (60 rows read as 56, which the checksums do not cover)
JUNK_BEFORE = [Damage("flip", flips=((0.5, 0),)), Damage("flip", flips=((0.3125, 0),)),
               Damage("overwrite", 0.5, junk=b")6\xcc\xd9"),
               Damage("flip", flips=((3915.5 / 4751, 3),))]


def regressions(test: Callable[..., None]) -> Callable[..., None]:
    for damage in JUNK_BEFORE + [Damage("random", junk=b"")]:
        test = example(damage=damage)(test)
    return test


@FUZZ
@regressions
@given(damages)
def test_lake_day_file_reader(tmp_path: Path, damage: Damage) -> None:
    lake = _lake_with_damaged_day(tmp_path, damage)
    status = lake.day_status("BTCUSDT", DAY)
    assert status is None or (type(status[0]) is bool and type(status[1]) is int
                              and status[1] >= 0)
    assert (status is None) == (_quarantined(lake) == 1)
    rows = lake.read("1m", "BTCUSDT")
    _one_of_the_written(rows, lake, lambda: lake.read("1m", "BTCUSDT"))


@FUZZ
@regressions
@given(damages)
def test_lake_minutes_reader(tmp_path: Path, damage: Damage) -> None:
    lake = _lake_with_damaged_day(tmp_path, damage)
    rows = lake.read_minutes("BTCUSDT", DAY, DAY + 2 * DAY_MS)
    _one_of_the_written(rows, lake, lambda: lake.read_minutes("BTCUSDT", DAY, DAY + 2 * DAY_MS))


@settings(FUZZ, max_examples=EXAMPLES // 3)
@regressions
@given(damages)
def test_lake_resamples_only_intact_minutes(tmp_path: Path, damage: Damage) -> None:
    lake = _lake_with_damaged_day(tmp_path, damage)
    counts = lake.resample("BTCUSDT")
    hours = lake.read("1h", "BTCUSDT")
    assert_candles(hours)
    want = [_hour(SECOND)] if _quarantined(lake) else [_hour(FIRST), _hour(SECOND)]
    assert counts["1h"] == len(hours) and np.allclose(hours, want, rtol=1e-12, atol=0)


def _hour(minutes: np.ndarray) -> list[float]:
    return [minutes[0, 0], minutes[0, 1], minutes[:, 2].max(), minutes[:, 3].min(),
            minutes[-1, 4], minutes[:, 5].sum(), minutes[:, 6].sum()]

"""The real candle files of tests/fixtures/real load as their README describes them; bad ones are
refused with a message that names the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.candle_checks import InvalidCandles, check_candles, fmt_ms
from data.candle_formats import describe_path
from data.loaders import CandleFileError, load_file, load_folder
from tests.conftest import REAL_DATA as REAL

FT, LEAN = "freqtrade", "quantconnect_lean/Data"


# file, symbol, market, interval, rows, first open, last open (tests/fixtures/real/README.md)
OHLCV = [
    (f"{FT}/ADA_BTC-5m.json", "ADABTC", "spot", "5m", 5720, "2018-01-10 04:55", "2018-01-30 04:50"),
    (f"{FT}/DASH_BTC-5m.json", "DASHBTC", "spot", "5m", 5758, "2018-01-10 04:55",
     "2018-01-30 04:50"),
    (f"{FT}/ETC_BTC-5m.json", "ETCBTC", "spot", "5m", 5759, "2018-01-10 04:55", "2018-01-30 04:45"),
    (f"{FT}/ETH_BTC-5m.json", "ETHBTC", "spot", "5m", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    (f"{FT}/ETH_BTC-5m.feather", "ETHBTC", "spot", "5m", 5760, "2018-01-10 04:55",
     "2018-01-30 04:50"),
    (f"{FT}/LTC_BTC-5m.json", "LTCBTC", "spot", "5m", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    (f"{FT}/NXT_BTC-5m.json", "NXTBTC", "spot", "5m", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    (f"{FT}/TRX_BTC-5m.json", "TRXBTC", "spot", "5m", 5754, "2018-01-10 04:55", "2018-01-30 04:50"),
    (f"{FT}/XLM_BTC-5m.json", "XLMBTC", "spot", "5m", 5760, "2018-01-10 04:55", "2018-01-30 04:50"),
    (f"{FT}/XMR_BTC-5m.json", "XMRBTC", "spot", "5m", 5758, "2018-01-10 04:55", "2018-01-30 04:50"),
    (f"{FT}/ZEC_BTC-5m.json", "ZECBTC", "spot", "5m", 5757, "2018-01-10 04:55", "2018-01-30 04:45"),
    (f"{FT}/UNITTEST_BTC-1m.json", "UNITTESTBTC", "spot", "1m", 13681, "2017-11-04 23:02",
     "2017-11-14 22:59"),
    (f"{FT}/UNITTEST_BTC-30m.json", "UNITTESTBTC", "spot", "30m", 1920, "2017-12-03 13:00",
     "2018-01-12 12:30"),
    (f"{FT}/XRP_ETH-1m.json", "XRPETH", "spot", "1m", 3560, "2019-10-11 00:00", "2019-10-13 11:19"),
    (f"{FT}/XRP_ETH-5m.json", "XRPETH", "spot", "5m", 712, "2019-10-11 00:00", "2019-10-13 11:15"),
    (f"{FT}/futures/XRP_USDT_USDT-5m-futures.json", "XRPUSDT", "perp", "5m", 1999,
     "2021-11-15 00:00", "2021-11-21 22:30"),
    (f"{FT}/futures/XRP_USDT_USDT-5m-futures.feather", "XRPUSDT", "perp", "5m", 1999,
     "2021-11-15 00:00", "2021-11-21 22:30"),
    (f"{FT}/futures/XRP_USDT_USDT-1h-futures.json", "XRPUSDT", "perp", "1h", 100,
     "2021-11-17 01:00", "2021-11-21 04:00"),
    (f"{LEAN}/crypto/bybit/minute/btcusdt/20221213_trade.zip", "BTCUSDT", "bybit-spot", "1m",
     1440, "2022-12-13 00:00", "2022-12-13 23:59"),
    (f"{LEAN}/cryptofuture/bybit/minute/btcusdt/20221213_trade.zip", "BTCUSDT", "bybit-perp",
     "1m", 721, "2022-12-13 00:00", "2022-12-13 12:00"),
    (f"{LEAN}/cryptofuture/bybit/minute/btcusd/20221213_trade.zip", "BTCUSD", "bybit-perp", "1m",
     721, "2022-12-13 00:00", "2022-12-13 12:00"),
    (f"{LEAN}/crypto/binance/minute/btcbusd/20221213_trade.zip", "BTCBUSD", "binance-spot", "1m",
     1440, "2022-12-13 00:00", "2022-12-13 23:59"),
    (f"{LEAN}/cryptofuture/binance/minute/btcusd/20221213_trade.zip", "BTCUSD", "binance-perp",
     "1m", 1439, "2022-12-13 00:00", "2022-12-13 23:59"),
    (f"{LEAN}/cryptofuture/binance/minute/adausdt/20221213_trade.zip", "ADAUSDT", "binance-perp",
     "1m", 1440, "2022-12-13 00:00", "2022-12-13 23:59"),
    (f"{LEAN}/crypto/binance/hour/btcusdt_trade.zip", "BTCUSDT", "binance-spot", "1h", 120,
     "2018-05-01 00:00", "2018-05-05 23:00"),
    (f"{LEAN}/crypto/bitfinex/hour/btcusd_trade.zip", "BTCUSD", "bitfinex-spot", "1h", 733,
     "2013-10-01 00:00", "2013-10-31 21:00"),
    (f"{LEAN}/crypto/coinbase/daily/btcusd_trade.zip", "BTCUSD", "coinbase-spot", "1d", 1318,
     "2014-12-01 00:00", "2018-08-13 00:00"),
    (f"{LEAN}/crypto/coinbase/minute/btcusd/20180404_trade.zip", "BTCUSD", "coinbase-spot", "1m",
     1007, "2018-04-04 00:00", "2018-04-04 16:47"),
    (f"{LEAN}/crypto/coinbase/minute/btcusd/20180405_trade.zip", "BTCUSD", "coinbase-spot", "1m",
     1440, "2018-04-05 00:00", "2018-04-05 23:59"),
    (f"{LEAN}/crypto/coinbase/minute/btcusd/20180406_trade.zip", "BTCUSD", "coinbase-spot", "1m",
     1440, "2018-04-06 00:00", "2018-04-06 23:59"),
    (f"{LEAN}/crypto/coinbase/minute/ethusd/20180404_trade.zip", "ETHUSD", "coinbase-spot", "1m",
     1009, "2018-04-04 00:00", "2018-04-04 16:52"),
    (f"{LEAN}/crypto/coinbase/minute/ethusd/20180405_trade.zip", "ETHUSD", "coinbase-spot", "1m",
     1440, "2018-04-05 00:00", "2018-04-05 23:59"),
    (f"{LEAN}/crypto/coinbase/minute/ltcusd/20180404_trade.zip", "LTCUSD", "coinbase-spot", "1m",
     1008, "2018-04-04 00:00", "2018-04-04 16:50"),
    (f"{LEAN}/crypto/coinbase/minute/ltcusd/20180405_trade.zip", "LTCUSD", "coinbase-spot", "1m",
     1439, "2018-04-05 00:00", "2018-04-05 23:59"),
    (f"{LEAN}/crypto/coinbase/minute/ltcusd/20180406_trade.zip", "LTCUSD", "coinbase-spot", "1m",
     1440, "2018-04-06 00:00", "2018-04-06 23:59"),
    # month-end labels (2012-01-31 … 2024-12-31) become the months' open times
    ("backtesting_py/BTCUSD.csv", "BTCUSD", "", "1M", 156, "2012-01-01 00:00",
     "2024-12-01 00:00"),
]

# file, words its refusal must carry
REFUSED = [
    ("README.md", "not a candle file type (.md)"),
    (f"{FT}/futures/XRP_USDT_USDT-8h-funding_rate.json",
     "not OHLCV candles: high below open or close, or low above them, in 91 rows "
     "(a funding-rate file?)"),
    (f"{FT}/futures/XRP_USDT_USDT-1h-mark.json", "volume is null"),
    (f"{FT}/futures/XRP_USDT_USDT-8h-mark.json", "mark-price candles"),
    (f"{LEAN}/crypto/bybit/minute/btcusdt/20221213_quote.zip", "bid and ask bars"),
    (f"{LEAN}/cryptofuture/bybit/minute/btcusdt/20221213_quote.zip", "bid and ask bars"),
    (f"{LEAN}/cryptofuture/bybit/margin_interest/btcusdt.csv", "not OHLCV candles"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rel, symbol, market, interval, n, first, last", OHLCV,
                         ids=[row[0].rsplit("Data/", 1)[-1] for row in OHLCV])
def test_every_ohlcv_file_loads_as_sources_md_says(rel, symbol, market, interval, n, first,
                                                   last):
    s = load_file(REAL / rel)
    assert (s.symbol, s.market, s.interval, len(s)) == (symbol, market, interval, n)
    assert fmt_ms(s.rows[0, 0]) == first and fmt_ms(s.rows[-1, 0]) == last
    assert s.rows.shape == (n, 7) and s.sources == (REAL / rel,)
    o, h, lo, c, v, turnover = s.rows[:, 1:].T
    assert np.all(np.diff(s.rows[:, 0]) > 0)
    assert np.all(h >= np.maximum(o, c)) and np.all(lo <= np.minimum(o, c)) and np.all(lo > 0)
    np.testing.assert_allclose(turnover, v * c)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["ETH_BTC-5m", "futures/XRP_USDT_USDT-5m-futures"])
def test_feather_and_json_copies_hold_the_same_rows(name):
    a, b = load_file(REAL / FT / f"{name}.json"), load_file(REAL / FT / f"{name}.feather")
    assert np.array_equal(a.rows[:, 0], b.rows[:, 0])
    np.testing.assert_allclose(a.rows, b.rows, rtol=1e-12)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("rel, words", REFUSED[1:], ids=[r[0].rsplit("/", 1)[-1]
                                                         for r in REFUSED[1:]])
def test_non_candle_files_are_refused_naming_the_file(rel, words):
    with pytest.raises(CandleFileError) as info:
        load_file(REAL / rel)
    assert str(info.value).startswith(f"{REAL / rel}: ")
    assert words in str(info.value)


@pytest.mark.timeout(60)
def test_the_real_folder_loads_every_ohlcv_file_and_says_why_it_skipped_the_rest():
    series, refused = load_folder(REAL)
    assert sorted(p for s in series for p in s.sources) == sorted(REAL / r[0] for r in OHLCV)
    expected = sorted(REFUSED)
    assert [p for p, _ in refused] == [REAL / rel for rel, _ in expected]
    for (_, reason), (_, words) in zip(refused, expected):
        assert words in reason
    by_key = {(s.symbol, s.market, s.interval): s for s in series}
    assert len(by_key) == len(series) == 29
    # one series per symbol, market and interval; intervals stay apart
    assert len(by_key[("XRPETH", "spot", "1m")]) == 3560
    assert len(by_key[("XRPETH", "spot", "5m")]) == 712
    # copies merge into one series; Lean's day files join up
    assert len(by_key[("ETHBTC", "spot", "5m")]) == 5760
    assert len(by_key[("XRPUSDT", "perp", "5m")]) == 1999
    btc = by_key[("BTCUSD", "coinbase-spot", "1m")]
    assert len(btc) == 1007 + 1440 + 1440 and len(btc.sources) == 3
    assert np.all(np.diff(btc.rows[:, 0]) > 0)


def test_names_from_paths():
    futures = describe_path(Path("x/XRP_USDT_USDT-5m-futures.json"))
    assert (futures.symbol, futures.base, futures.quote, futures.market, futures.interval) == \
        ("XRPUSDT", "XRP", "USDT", "perp", "5m")
    lean = describe_path(Path(f"{LEAN}/cryptofuture/bybit/minute/btcusdt/20221213_trade.zip"))
    assert (lean.symbol, lean.market, lean.interval, lean.kind) == \
        ("BTCUSDT", "bybit-perp", "1m", "trade")
    assert fmt_ms(lean.day_ms) == "2022-12-13 00:00"
    csv_info = describe_path(Path("backtesting_py/BTCUSD.csv"))
    assert (csv_info.symbol, csv_info.base, csv_info.quote, csv_info.interval) == \
        ("BTCUSD", "BTC", "USD", None)
    hive = describe_path(Path("lake/candles/interval=1m/symbol=SOLUSDT/part-0.parquet"))
    assert (hive.symbol, hive.interval) == ("SOLUSDT", "1m")


def test_the_real_data_folder_is_inside_the_repository():
    assert REAL.is_dir(), f"{REAL} is missing: the fixture files must be checked out"


# -- damaged copies --------------------------------------------------------------------------

def _real_rows(name: str = "ETH_BTC-5m.json") -> list:
    return json.loads((REAL / FT / name).read_text())


def _write(path: Path, rows) -> Path:
    path.write_text(json.dumps(rows))
    return path


@pytest.mark.timeout(60)
def test_a_duplicated_timestamp_is_refused_naming_the_file(tmp_path):
    rows = _real_rows()
    rows.insert(100, list(rows[100]))
    path = _write(tmp_path / "ETH_BTC-5m.json", rows)
    with pytest.raises(CandleFileError, match=r"ETH_BTC-5m\.json: 1 duplicate open times "
                                              r"\(first 2018-01-10 13:15\)"):
        load_file(path)


@pytest.mark.timeout(60)
def test_shuffled_rows_are_refused_naming_the_file(tmp_path):
    rows = _real_rows()
    np.random.default_rng(1).shuffle(rows)
    path = _write(tmp_path / "ETH_BTC-5m.json", rows)
    with pytest.raises(CandleFileError, match=r"ETH_BTC-5m\.json: open times go backwards .* "
                                              "rows must be oldest first"):
        load_file(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content, words", [
    ({"pair": "ETH/BTC", "rows": []}, "a JSON dict, expected an array"),
    ([{"t": 1, "o": 2}], "row 1 is {'t': 1, 'o': 2}"),
    ([[1515560100000, "x", 1, 1, 1, 1]], "non-numeric values"),
    ([], "no candles"),
])
def test_json_that_is_not_candles_is_refused(tmp_path, content, words):
    path = _write(tmp_path / "trades.json", content)
    with pytest.raises(CandleFileError) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)


@pytest.mark.timeout(60)
def test_a_folder_keeps_the_good_files_and_lists_the_damaged_ones(tmp_path):
    good = tmp_path / "XRP_ETH-5m.json"
    shutil.copy(REAL / FT / "XRP_ETH-5m.json", good)
    rows = _real_rows("XRP_ETH-1m.json")
    rows[10][2] = rows[10][3] / 2  # high below low
    (tmp_path / "sub").mkdir()
    bad = _write(tmp_path / "sub" / "XRP_ETH-1m.json", rows)
    (tmp_path / ".hidden.json").write_text("not looked at")
    series, refused = load_folder(tmp_path)
    assert [s.sources for s in series] == [(good,)]
    assert refused == [(bad, "not OHLCV candles: high below open or close, or low above them, "
                             "in 1 rows")]
    assert load_folder(tmp_path, recursive=False)[1] == []


@pytest.mark.timeout(60)
def test_overlapping_copies_that_disagree_are_refused(tmp_path):
    rows = _real_rows("XRP_ETH-5m.json")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _write(tmp_path / "a" / "XRP_ETH-5m.json", rows[:400])
    changed = [list(r) for r in rows[300:]]
    changed[0][4] *= 1.01
    changed[0][2] = max(changed[0][2], changed[0][4])
    later = _write(tmp_path / "b" / "XRP_ETH-5m.json", changed)
    series, refused = load_folder(tmp_path)
    assert len(series) == 1 and series[0].sources == (first,)
    assert refused == [(later, "overlaps XRP_ETH-5m.json (XRPETH 5m) with different candles at "
                               "1 open times (first 2019-10-12 01:00)")]


@pytest.mark.timeout(60)
def test_parquet_and_csv_files_load(tmp_path):
    src = load_file(REAL / FT / "XRP_ETH-5m.json").rows
    table = pa.table({"open_time": pa.array(src[:, 0].astype(np.int64)),
                      "open": src[:, 1], "high": src[:, 2], "low": src[:, 3], "close": src[:, 4],
                      "volume": src[:, 5], "turnover": src[:, 5] * 7.0})
    pq.write_table(table, tmp_path / "XRPETH-5m.parquet")
    got = load_file(tmp_path / "XRPETH-5m.parquet")
    assert (got.symbol, got.interval) == ("XRPETH", "5m")
    np.testing.assert_array_equal(got.rows[:, :6], src[:, :6])
    np.testing.assert_array_equal(got.rows[:, 6], src[:, 5] * 7.0)  # the file's own turnover
    lines = ["timestamp,open,high,low,close,volume"] + [
        f"{np.datetime64(int(r[0]), 'ms')}Z," + ",".join(repr(float(x)) for x in r[1:6])
        for r in src[:50]]
    (tmp_path / "XRPETH.csv").write_text("\n".join(lines))
    csv_series = load_file(tmp_path / "XRPETH.csv")
    np.testing.assert_array_equal(csv_series.rows[:, :6], src[:50, :6])


# -- the checks themselves -------------------------------------------------------------------

def _candles(times, price=10.0):
    times = np.asarray(times, dtype=np.float64)
    ones = np.ones_like(times)
    return np.column_stack([times, ones * price, ones * price + 1, ones * price - 1,
                            ones * price, ones])


T0 = 1_700_000_000_000 - 1_700_000_000_000 % 86_400_000  # a UTC midnight


@pytest.mark.parametrize("times, hint, words", [
    ([T0, T0 + 60_000, T0 + 150_000], None, "off the 1m grid in 1 places"),
    ([T0 + 17, T0 + 8 * 3_600_000 + 17], None, "not on whole 8h boundaries"),
    ([T0, T0 + 7_000], None, "smallest step between open times is 7s"),
    ([T0, T0 + 60_000], "5m", "the file name says 5m but candles are 1m apart"),
    ([T0], None, "a single candle"),
    ([1_000, 61_000], None, "not milliseconds since the epoch"),
])
def test_bad_timelines_are_named(times, hint, words):
    with pytest.raises(InvalidCandles, match=words):
        check_candles(_candles(times), hint)


def test_month_end_labels_become_month_opens_and_gaps_are_kept():
    ends = np.array(["2020-01-31", "2020-02-29", "2020-04-30"], dtype="datetime64[ms]")
    interval, rows = check_candles(_candles(ends.astype(np.int64)))
    assert interval == "1M"
    assert [fmt_ms(t) for t in rows[:, 0]] == ["2020-01-01 00:00", "2020-02-01 00:00",
                                                "2020-04-01 00:00"]
    assert check_candles(_candles([T0, T0 + 600_000]), "5m")[0] == "5m"  # a gap on the grid

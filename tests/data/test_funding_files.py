"""Funding-rate files (freqtrade's and Lean's) load as funding series, never as candles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from data.candle_checks import fmt_ms
from data.loaders import (CandleFileError, is_funding_file, load_file, load_funding_file,
                          load_funding_folder)
from models.funding import FUNDING_PERIOD_MS
from tests.conftest import REAL_DATA as REAL

FT = "freqtrade/futures/XRP_USDT_USDT-8h-funding_rate.json"
LEAN = "quantconnect_lean/Data/cryptofuture/bybit/margin_interest/btcusdt.csv"


def test_the_two_real_funding_files_load_for_their_symbol_and_market():
    xrp = load_funding_file(REAL / FT)
    assert (xrp.symbol, xrp.market, len(xrp)) == ("XRPUSDT", "perp", 91)
    assert fmt_ms(xrp.rows[0, 0]) == "2021-11-18 00:00" and fmt_ms(xrp.rows[-1, 0]) == \
        "2021-12-18 00:00"
    raw = np.array(json.loads((REAL / FT).read_text()))
    assert np.all(np.abs(xrp.rows[:, 0] - raw[:, 0]) < 1000)  # only the ms jitter is gone
    assert np.all(xrp.rows[:, 0] % FUNDING_PERIOD_MS == 0)
    np.testing.assert_array_equal(xrp.rows[:, 1], raw[:, 1])
    btc = load_funding_file(REAL / LEAN)
    assert (btc.symbol, btc.market) == ("BTCUSDT", "bybit-perp")
    assert btc.rows.tolist() == [[1_670_889_600_000, -0.0002016],
                                 [1_670_918_400_000, -0.00022398],
                                 [1_670_947_200_000, -0.00038555]]
    for rel in (FT, LEAN):
        assert is_funding_file(REAL / rel)
        with pytest.raises(CandleFileError):
            load_file(REAL / rel)  # still not candles
    assert not is_funding_file(REAL / "freqtrade/futures/XRP_USDT_USDT-5m-futures.json")


BAD = {
    "XRP_USDT_USDT-8h-funding_rate.json": ("[[1637193600000,0.0001,0,0,0,0],"
                                           "[1637193600000,0.0002,0,0,0,0]]",
                                           "not strictly increasing"),
    "ADA_USDT_USDT-8h-funding_rate.json": ("[[1637193600000,3.5,0,0,0,0]]",
                                           "is not a funding rate"),
    "DOT_USDT_USDT-8h-funding_rate.json": ('{"rate": 1}', "not a funding-rate file"),
    "Data/cryptofuture/bybit/margin_interest/ethusdt.csv": ("20221213 00:00:00,0.0001,7\n",
                                                           "has two: time, rate"),
    "Data/cryptofuture/bybit/margin_interest/solusdt.csv": ("", "no funding rates"),
    "Data/cryptofuture/bybit/margin_interest/dogeusdt.csv": ("20221213 00:00:00,abc\n",
                                                            "not a number"),
}


def test_broken_funding_files_are_refused_naming_the_file_and_the_fault(tmp_path):
    for name, (text, _) in BAD.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    good = tmp_path / "copy" / "XRP_USDT_USDT-8h-funding_rate.json"
    good.parent.mkdir()
    shutil.copy(REAL / FT, good)
    series, refused = load_funding_folder(tmp_path)
    reasons = {p.relative_to(tmp_path).as_posix(): r for p, r in refused}
    assert set(reasons) == set(BAD)
    for name, (_, words) in BAD.items():
        assert words in reasons[name], (name, reasons[name])
    assert [(s.symbol, len(s)) for s in series] == [("XRPUSDT", 91)]


def test_copies_of_one_funding_series_merge_and_conflicts_are_refused(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(REAL / FT, tmp_path / d / "XRP_USDT_USDT-8h-funding_rate.json")
    rows = json.loads((REAL / FT).read_text())
    rows[0][1] = 0.5
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "XRP_USDT_USDT-8h-funding_rate.json").write_text(json.dumps(rows))
    series, refused = load_funding_folder(tmp_path)
    assert len(series) == 1 and len(series[0]) == 91 and len(series[0].sources) == 2
    assert [p.parent.name for p, _ in refused] == ["c"]
    assert "different rates" in refused[0][1]


@pytest.mark.parametrize("name, body", [
    ("XRP_USDT_USDT-8h-funding_rate.json", "[" * 100_000 + "]" * 100_000),
    ("XRP_USDT_USDT-8h-funding_rate.json", "[[1670889600000, 1" + "0" * 400 + "]]"),
    ("btcusdt.csv", '20221213 00:00,"' + "x" * 200_000 + '\n'),
])
def test_a_mangled_funding_file_is_refused_by_name_never_a_traceback(tmp_path, name, body):
    """As the candle loaders (tests/data/test_reader_fuzz.py): deep nesting, a number too big
    for a float and a runaway quoted CSV field are a CandleFileError naming the file."""
    path = tmp_path / name
    path.write_text(body)
    with pytest.raises(CandleFileError) as err:
        load_funding_file(path)
    assert name in str(err.value)

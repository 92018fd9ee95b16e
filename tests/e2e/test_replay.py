"""``methtrader run --exchange replay`` over the real candle files in tests/fixtures/real."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from data.loaders import load_file
from tests.conftest import REAL_DATA
from tests.e2e.conftest import methtrader, status_json, stderr_of

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

BYBIT_PERP = REAL_DATA / "quantconnect_lean/Data/cryptofuture/bybit/minute/btcusdt/20221213_trade.zip"


def test_replay_plays_real_bybit_minutes_into_the_store(tmp_path, run_proc):
    state = tmp_path / "state"
    proc = run_proc(state, "--exchange", "replay", "--replay-folder", str(REAL_DATA),
                    "--until", "2h", "--speed", "3600", "--metrics-port", "0",
                    env={"METHTRADER__REPLAY__START": "2022-12-13"})
    assert proc.wait(timeout=90) == 0, stderr_of(proc)[-3000:]
    st = status_json(state)
    assert st["exchange"] == "replay" and "BTCUSDT.bybit-perp" in st["symbols"]
    con = duckdb.connect(str(state / "methtrader.duckdb"), read_only=True)
    stored = np.array(con.execute(
        "SELECT open_time, open, high, low, close FROM candles "
        "WHERE symbol = 'BTCUSDT.bybit-perp' ORDER BY open_time").fetchall())
    con.close()
    real = load_file(BYBIT_PERP).rows
    assert len(stored) >= 100
    n = len(stored)
    assert np.array_equal(stored[:, 0], real[:n, 0])  # the file's own minutes, in order
    assert np.allclose(stored[:, 1:5], real[:n, 1:5])  # the file's own prices
    assert "replay file skipped" in stderr_of(proc)  # refused files are named

"""The replay exchange plays real candle files on the market clock, with no look-ahead."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from appliance.clock import VirtualClock
from appliance.domain import OrderIntent, Side
from appliance.exchange.base import Exchange, ExchangeError
from appliance.exchange.replay import ReplayExchange, replay_start_ms, resample
from data.candle_checks import fmt_ms
from data.loaders import load_file
from models.costs import roll_half_spread
from tests.conftest import REAL_DATA as REAL

PERP = "quantconnect_lean/Data/cryptofuture/bybit/minute/btcusdt/20221213_trade.zip"
DAY0 = 1_670_889_600_000  # 2022-12-13 00:00 UTC, the first candle of PERP
XRPETH0 = 1_570_752_000_000  # 2019-10-11 00:00 UTC
MIN = 60_000
D = Decimal


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Bybit's BTCUSDT perpetual (1m, 721 rows) and XRP/ETH from a 1m and a 5m file."""
    dest = tmp_path / "real" / PERP
    dest.parent.mkdir(parents=True)
    shutil.copy(REAL / PERP, dest)
    for name in ("XRP_ETH-1m.json", "XRP_ETH-5m.json"):
        shutil.copy(REAL / "freqtrade" / name, tmp_path / "real" / name)
    return tmp_path / "real"


def perp_rows() -> np.ndarray:
    return load_file(REAL / PERP).rows


async def at(clock: VirtualClock, ms: float) -> None:
    """Sleep until market time ``ms`` (never exactly on a boundary: float clocks)."""
    await clock.sleep_until(ms / 1000)


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_no_candle_is_seen_before_it_closes_and_the_clock_reveals_them(folder,
                                                                            autojump_clock):
    rows = perp_rows()
    clock = VirtualClock(DAY0 / 1000, speed=60)
    ex = ReplayExchange(clock, folder, inline=True)
    assert isinstance(ex, Exchange) and ex.symbols() == ["BTCUSDT", "XRPETH"]
    assert await ex.server_time_ms() == DAY0
    assert len(await ex.klines_array("BTCUSDT", DAY0 - MIN, DAY0 + 86_400_000)) == 0
    assert ex.last_price("BTCUSDT") is None and await ex.tickers() == []
    await at(clock, DAY0 + MIN - 500)
    assert len(await ex.klines_array("BTCUSDT", DAY0, DAY0 + 86_400_000)) == 0
    await at(clock, DAY0 + MIN + 500)
    got = await ex.klines_array("BTCUSDT", DAY0, DAY0 + 86_400_000)
    np.testing.assert_array_equal(got, rows[:1])
    await at(clock, DAY0 + 10 * MIN + 500)
    got = await ex.klines_array("BTCUSDT", 0, 2**50)
    np.testing.assert_array_equal(got, rows[:10])
    assert ex.last_price("BTCUSDT") == rows[9, 4]
    part = await ex.klines("BTCUSDT", "1m", DAY0 + 3 * MIN, DAY0 + 5 * MIN)
    assert [(c.symbol, c.interval, c.open_time, c.close) for c in part] == \
        [("BTCUSDT", "1m", int(r[0]), r[4]) for r in rows[3:5]]


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_resampled_candles_appear_when_their_whole_bucket_has_closed(folder,
                                                                          autojump_clock):
    rows = perp_rows()
    clock = VirtualClock(DAY0 / 1000, speed=60)
    ex = ReplayExchange(clock, folder, inline=True)
    await at(clock, DAY0 + 14 * MIN + 500)  # 00:10-00:15 is still open
    five = await ex.klines("BTCUSDT", "5m", DAY0, DAY0 + 86_400_000)
    assert [c.open_time for c in five] == [DAY0, DAY0 + 5 * MIN]
    second = rows[5:10]
    assert (five[1].open, five[1].high, five[1].low, five[1].close) == \
        (second[0, 1], second[:, 2].max(), second[:, 3].min(), second[-1, 4])
    assert five[1].volume == pytest.approx(second[:, 5].sum())
    assert await ex.klines("BTCUSDT", "1h", DAY0, DAY0 + 86_400_000) == []
    await at(clock, DAY0 + 60 * MIN + 500)
    hour = await ex.klines("BTCUSDT", "1h", DAY0, DAY0 + 86_400_000)
    assert len(hour) == 1 and hour[0].close == rows[59, 4] and hour[0].high == rows[:60, 2].max()
    assert ex.serves("BTCUSDT", "4h") and not ex.serves("BTCUSDT", "2m")
    with pytest.raises(ExchangeError, match="BTCUSDT has 1m candles; 2m is neither"):
        await ex.klines("BTCUSDT", "2m", DAY0, DAY0 + MIN)
    with pytest.raises(ExchangeError, match="1M is neither"):
        await ex.klines("BTCUSDT", "1M", DAY0, DAY0 + MIN)
    with pytest.raises(ExchangeError, match="unknown symbol 'ETHUSDT'"):
        await ex.klines("ETHUSDT", "1m", DAY0, DAY0 + MIN)


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_a_symbol_serves_each_native_interval_of_its_files(folder, autojump_clock):
    clock = VirtualClock(replay_start_ms(folder) / 1000, speed=60)
    assert clock.now() * 1000 == XRPETH0  # the earliest candle of the folder
    ex = ReplayExchange(clock, folder, inline=True)
    assert ex.intervals("XRPETH") == ("1m", "5m")
    await at(clock, XRPETH0 + 86_400_000 + 500)
    one = await ex.klines_array("XRPETH", XRPETH0, XRPETH0 + 86_400_000, "1m")
    five = await ex.klines_array("XRPETH", XRPETH0, XRPETH0 + 86_400_000, "5m")
    file_five = load_file(REAL / "freqtrade" / "XRP_ETH-5m.json").rows
    assert len(one) == 1440
    np.testing.assert_array_equal(five, file_five[:288])  # the 5m file, not a resample
    fifteen = await ex.klines_array("XRPETH", XRPETH0, XRPETH0 + 86_400_000, "15m")
    np.testing.assert_array_equal(fifteen, resample(one, 15 * MIN, XRPETH0, 2**50, 2**50))
    await at(clock, XRPETH0 + 86_400_000 + MIN + 500)
    # the price is the close of whichever file's candle closed last: here the 1m file's
    latest = await ex.klines_array("XRPETH", XRPETH0, 2**50, "1m")
    latest_five = await ex.klines_array("XRPETH", XRPETH0, 2**50, "5m")
    assert latest[-1, 0] == XRPETH0 + 1440 * MIN and latest_five[-1, 0] == XRPETH0 + 1435 * MIN
    assert latest[-1, 4] != latest_five[-1, 4]
    assert ex.last_price("XRPETH") == latest[-1, 4]


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_instruments_trade_while_their_data_lasts(folder, autojump_clock):
    clock = VirtualClock(XRPETH0 / 1000, speed=3600)
    ex = ReplayExchange(clock, folder, inline=True)

    async def status():
        return {i.symbol: i.status for i in await ex.instruments()}

    assert await status() == {"BTCUSDT": "PreLaunch", "XRPETH": "Trading"}
    last_close = XRPETH0 + (2 * 1440 + 11 * 60 + 20) * MIN  # 2019-10-13 11:20
    await at(clock, last_close - 500)
    assert await status() == {"BTCUSDT": "PreLaunch", "XRPETH": "Trading"}
    await at(clock, last_close + 500)
    assert await status() == {"BTCUSDT": "PreLaunch", "XRPETH": "Closed"}
    assert [t.symbol for t in await ex.tickers()] == []
    await at(clock, DAY0 + 500)
    assert await status() == {"BTCUSDT": "Trading", "XRPETH": "Closed"}
    await at(clock, DAY0 + 721 * MIN + 500)
    assert await status() == {"BTCUSDT": "Closed", "XRPETH": "Closed"}
    btc = next(i for i in await ex.instruments() if i.symbol == "BTCUSDT")
    assert (btc.base_coin, btc.quote_coin, btc.launch_time) == ("BTC", "USDT", DAY0)
    assert btc.tick_size == D("0.1") and btc.qty_step == D("0.0001")


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_tickers_show_the_last_close_and_skip_no_volume_bar(folder, autojump_clock):
    rows = perp_rows()
    clock = VirtualClock(DAY0 / 1000, speed=60)
    ex = ReplayExchange(clock, folder, inline=True)
    assert "volume_bar" not in ex.capabilities
    await at(clock, DAY0 + 30 * MIN + 500)
    (ticker,) = await ex.tickers()
    assert ticker.symbol == "BTCUSDT" and ticker.last_price == rows[29, 4]
    assert ticker.turnover_24h == pytest.approx((rows[:30, 5] * rows[:30, 4]).sum())
    assert ticker.volume_24h == pytest.approx(rows[:30, 5].sum())
    assert ex.rate_limit_usage() == 0.0


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_orders_fill_at_the_last_visible_close_with_the_fee(folder, autojump_clock):
    rows = perp_rows()
    clock = VirtualClock(DAY0 / 1000, speed=60)
    ex = ReplayExchange(clock, folder, slippage_bps=0.0, starting_balance=10_000.0, inline=True)
    with pytest.raises(ExchangeError, match="no price"):
        await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, D("0.01")))
    await at(clock, DAY0 + 5 * MIN + 500)
    fill = await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, D("0.01")))
    close = D(str(rows[4, 4]))
    assert fill.price == close and fill.ts == DAY0 + 5 * MIN + 500
    assert fill.fee == D("0.01") * close * D("0.00055")
    (pos,) = await ex.positions()
    assert (pos.symbol, pos.qty, pos.avg_price) == ("BTCUSDT", D("0.01"), close)
    await at(clock, DAY0 + 20 * MIN + 500)
    bal = await ex.balance()
    assert bal.wallet == D(10_000) - fill.fee
    assert bal.equity == bal.wallet + D("0.01") * (D(str(rows[19, 4])) - close)
    with pytest.raises(ExchangeError, match="lot size"):
        await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, D("0.00001")))
    with pytest.raises(ExchangeError, match="nothing to cancel"):
        await ex.cancel_order("BTCUSDT", fill.order_id)


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_slippage_and_the_end_of_the_data(folder, autojump_clock):
    rows = perp_rows()
    clock = VirtualClock(DAY0 / 1000, speed=60)
    ex = ReplayExchange(clock, folder, slippage_bps=2.0, inline=True)
    await at(clock, DAY0 + 2 * MIN + 500)
    fill = await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, D("0.1")))
    expected = (D(str(rows[1, 4])) * D("1.0002") / D("0.1")).quantize(D(1)) * D("0.1")
    assert fill.price == expected
    await at(clock, DAY0 + 721 * MIN + 500)  # the last candle has closed
    with pytest.raises(ExchangeError, match=r"BTCUSDT is Closed at 2022-12-13 12:01:00.5"):
        await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, D("0.1")))
    out = await ex.place_order(OrderIntent("BTCUSDT", Side.SELL, D("0.1"), reduce_only=True))
    assert out.price == (D(str(rows[-1, 4])) * D("0.9998") / D("0.1")).quantize(D(1)) * D("0.1")
    assert await ex.positions() == []


@pytest.mark.timeout(60)
@pytest.mark.trio
async def test_the_whole_real_folder_replays_from_its_first_candle(autojump_clock):
    start = replay_start_ms(REAL)
    assert fmt_ms(start) == "2012-01-01 00:00"  # backtesting.py's monthly BTCUSD
    clock = VirtualClock(start / 1000, speed=1e6)
    ex = ReplayExchange(clock, REAL)  # computing in a worker thread, as the appliance does
    assert len(ex.refused) == 5  # its two funding files load as funding, not as candles
    assert not any("funding" in p.name or "margin_interest" in str(p) for p, _ in ex.refused)
    names = ex.symbols()
    assert len(names) == len(set(names)) == 25
    assert {"BTCUSDT.bybit-perp", "BTCUSDT.bybit-spot", "BTCUSDT.binance-spot",
            "BTCUSD.backtesting_py", "XRPUSDT", "ETHBTC", "XRPETH"} <= set(names)
    assert ex.intervals("BTCUSD.coinbase-spot") == ("1m", "1d")
    assert ex.serves("ETHBTC", "1h") and not ex.serves("ETHBTC", "1m")  # a 5m-only file
    await at(clock, DAY0 + 3 * MIN + 500)
    got = await ex.klines_array("BTCUSDT.bybit-perp", DAY0, DAY0 + 86_400_000)
    np.testing.assert_array_equal(got, perp_rows()[:3])
    trading = {t.symbol for t in await ex.tickers()}
    assert "BTCUSDT.bybit-perp" in trading and "ETHBTC" not in trading
    fill = await ex.place_order(OrderIntent("BTCUSDT.bybit-perp", Side.BUY, D("0.001")))
    close = D(str(perp_rows()[2, 4]))
    half = ex.half_spread("BTCUSDT.bybit-perp")  # Roll's, from the perpetual's own minutes
    assert half == roll_half_spread(perp_rows()[:, 4])  # 0 here: its minutes trend
    assert fill.price == (close * (1 + D("0.0002") + D(str(half))) / D("0.1")).quantize(D(1)) \
        * D("0.1")
    assert (await ex.balance()).wallet == D(100_000) - fill.fee
    with pytest.raises(ExchangeError, match="after the data ends"):
        replay_start_ms(REAL, 4_000_000_000_000)
    assert replay_start_ms(REAL, DAY0) == DAY0


@pytest.mark.timeout(60)
def test_a_folder_without_candles_is_refused_with_the_reasons(tmp_path):
    (tmp_path / "XRP_USDT_USDT-8h-funding_rate.json").write_text("[[1637193600017,0.0001,0,0,0,0]]")
    with pytest.raises(ExchangeError, match=r"no usable candle files in .*funding_rate\.json: "
                                            r"funding rates of XRPUSDT \(perp\) match no "
                                            "candle series"):
        ReplayExchange(VirtualClock(0, 1), tmp_path)



@pytest.mark.trio
async def test_a_funding_files_interval_is_the_instruments_so_the_books_charge_its_times(
        tmp_path, autojump_clock):
    """The replay venue charges every row of a funding file; the books charge the times on
    the instrument's funding interval, which was always 8 hours: a file at 4 hours broke the
    account identity at every other row."""
    import json

    from appliance.exchange.replay import funding_interval

    hour = 3_600_000
    four = np.array([[DAY0 + i * 4 * hour, 1e-4] for i in range(12)])
    assert funding_interval(four) == 4 * hour
    assert funding_interval(np.delete(four, 5, axis=0)) == 4 * hour  # a missing row
    assert funding_interval(np.array([[DAY0 + i * 5 * hour, 1e-4] for i in range(5)])) \
        == 8 * hour  # not one of Bybit's intervals: the usual 8 hours
    assert funding_interval(np.zeros((0, 2))) == 8 * hour

    futures = REAL / "freqtrade" / "futures"
    shutil.copy(futures / "XRP_USDT_USDT-5m-futures.json", tmp_path)
    first = json.loads((futures / "XRP_USDT_USDT-8h-funding_rate.json").read_text())[0][0]
    (tmp_path / "XRP_USDT_USDT-4h-funding_rate.json").write_text(json.dumps(
        [[first + i * 4 * hour + 7, 1e-4, 0, 0, 0, 0] for i in range(30)]))
    real = {i.symbol: i.funding_interval_ms
            for i in await ReplayExchange(VirtualClock(first / 1000, 1.0), futures,
                                          inline=True).instruments()}
    mine = {i.symbol: i.funding_interval_ms
            for i in await ReplayExchange(VirtualClock(first / 1000, 1.0), tmp_path,
                                          inline=True).instruments()}
    assert real == {"XRPUSDT": 8 * hour} and mine == {"XRPUSDT": 4 * hour}

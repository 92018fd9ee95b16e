"""What trading costs on the paper venues: the half spread on every fill, funding at every
funding time — in sim (its spread model and funding series) and in replay (Roll's estimate and
the folder's funding files)."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from appliance.clock import VirtualClock
from appliance.config import SimConfig
from appliance.domain import OrderIntent, Side
from appliance.exchange.base import Exchange
from appliance.exchange.paper import PaperBroker
from appliance.exchange.replay import ReplayExchange
from appliance.exchange.sim import SimExchange
from appliance.account_identity import venue_as_of
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, MINUTE_MS, UNIVERSE, SimMarket
from models.costs import quoted_half_spread, roll_half_spread
from models.funding import FUNDING_PERIOD_MS, funding_due, funding_times
from tests.conftest import REAL_DATA as REAL

D = Decimal
HOUR = 3_600_000
DAY400 = EPOCH_MS + 400 * DAY_MS  # a day well after the epoch, 00:00 UTC


class SetClock:
    """Market time that moves only when the test says so."""

    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now(self) -> float:
        return self.ms / 1000

    async def sleep_until(self, t: float) -> None:
        self.ms = max(self.ms, int(t * 1000))

    async def sleep(self, seconds: float) -> None:
        self.ms += int(seconds * 1000)


def on_tick(x: float, tick: float) -> bool:
    return abs(x / tick - round(x / tick)) < 1e-6


# -- the sim market's costs -----------------------------------------------------------------


def test_sim_spreads_grow_as_liquidity_thins_and_tickers_quote_them():
    market = SimMarket(7)
    halves = {s.symbol: market.half_spread(s.symbol) for s in UNIVERSE}
    assert halves["BTCUSDT"] == 0.5e-4 and max(halves.values()) == halves["TIAUSDT"] == 10e-4
    by_turnover = sorted(UNIVERSE, key=lambda s: -s.turnover_usd)
    assert [halves[s.symbol] for s in by_turnover] == sorted(halves.values())
    t = DAY400 + 7 * HOUR + 13 * MINUTE_MS
    tickers = market.tickers(t)
    assert len(tickers) >= 20
    for x in tickers:
        tick, h = float(market.tick(x.symbol)), halves[x.symbol]
        assert x.last_price == market.last_price(x.symbol, t)
        assert x.bid < x.last_price < x.ask and on_tick(x.bid, tick) and on_tick(x.ask, tick)
        # the quote is the model's spread, widened outward to the tick and no further
        assert x.last_price * (1 - h) - tick < x.bid <= x.last_price * (1 - h) + 1e-9
        assert x.last_price * (1 + h) - 1e-9 <= x.ask < x.last_price * (1 + h) + tick
        assert quoted_half_spread(x.bid, x.ask) >= h * (1 - 1e-9)


def test_sim_funding_is_a_deterministic_mostly_positive_series_every_8_hours():
    a, b = SimMarket(7), SimMarket(7)
    start, end = DAY400, DAY400 + 90 * DAY_MS
    series = {s.symbol: a.funding_rates(s.symbol, start, end) for s in UNIVERSE}
    btc = series["BTCUSDT"]
    assert [t for t, _ in btc] == funding_times(start, end) and len(btc) == 270
    # the same question gets the same answer, in any order, from any instance
    assert b.funding_rates("BTCUSDT", start + 30 * DAY_MS, start + 31 * DAY_MS) == btc[90:93]
    assert a.funding_rate("BTCUSDT", btc[5][0]) == btc[5][1]
    assert SimMarket(8).funding_rates("BTCUSDT", start, end) != btc
    rates = np.array([r for rows in series.values() for _, r in rows])
    assert 0.7e-4 < rates.mean() < 1.3e-4  # about 0.01% per 8 h
    assert 0.05 < (rates < 0).mean() < 0.3  # some negative
    assert np.abs(rates).max() <= 0.005
    assert all(r == round(r, 8) for r in rates)
    # none while a symbol is not listed: SUIUSDT launches on day 90
    sui = a.funding_rates("SUIUSDT", EPOCH_MS, EPOCH_MS + 100 * DAY_MS)
    assert sui[0][0] == EPOCH_MS + 90 * DAY_MS and len(sui) == 31


# -- fills pay the half spread ----------------------------------------------------------------


def test_fills_cross_the_half_spread_on_top_of_slippage():
    prices = {"BTCUSDT": 50_000.0}
    b = PaperBroker(lambda s: prices[s], taker_fee=0.00055, slippage_bps=2.0,
                    starting_balance=10_000, tick_of=lambda s: D("0.01"),
                    step_of=lambda s: D("0.001"), half_spread_of=lambda s: 0.0003)
    buy = b.fill(OrderIntent("BTCUSDT", Side.BUY, D("0.100")), 1)
    sell = b.fill(OrderIntent("BTCUSDT", Side.SELL, D("0.100")), 2)
    assert buy.price == D("50025.00") and sell.price == D("49975.00")  # 5 bp each way
    assert b.wallet == D(10_000) - D("0.100") * D("50") - buy.fee - sell.fee
    # without a spread model the fill is where it always was
    plain = PaperBroker(lambda s: prices[s], taker_fee=0, slippage_bps=2.0,
                        starting_balance=0)
    assert plain.fill(OrderIntent("BTCUSDT", Side.BUY, D("1")), 1).price == D("50010.0000")


@pytest.mark.trio
async def test_sim_fills_pay_the_symbols_half_spread(tmp_path):
    t = DAY400 + 3 * HOUR
    ex = SimExchange(SetClock(t), SimConfig(), inline=True)
    assert isinstance(ex, Exchange)
    for symbol in ("BTCUSDT", "XLMUSDT"):
        last = D(str(ex.market.last_price(symbol, t)))
        tick = ex.market.tick(symbol)
        fill = await ex.place_order(OrderIntent(symbol, Side.BUY, ex.market.qty_step(symbol)))
        want = last * (1 + D("0.0002") + D(str(ex.market.half_spread(symbol))))
        assert fill.price == (want / tick).quantize(D(1)) * tick


# -- funding on the sim venue, across restarts ------------------------------------------------


def expected_funding(market: SimMarket, holdings: dict[str, Decimal], after: int,
                     upto: int) -> Decimal:
    """Σ funding_due over the funding times in (after, upto], computed independently."""
    total = D(0)
    for t in funding_times(after, upto):
        for symbol, qty in holdings.items():
            price = D(str(market.last_price(symbol, t)))
            total += funding_due(qty, price, D(str(market.funding_rate(symbol, t))))
    return total


@pytest.mark.trio
async def test_sim_venue_charges_funding_once_per_funding_time_across_restarts(tmp_path):
    account = tmp_path / "sim_account.json"
    clock = SetClock(DAY400 + 7 * HOUR + 30 * MINUTE_MS)
    ex = SimExchange(clock, SimConfig(), inline=True, account_file=account)
    await ex.balance()  # the venue's funding clock starts now
    await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, D("0.250")))
    await ex.place_order(OrderIntent("ETHUSDT", Side.SELL, D("3.00")))
    holdings = {"BTCUSDT": D("0.250"), "ETHUSDT": D("-3.00")}
    opened = clock.ms
    after_fills = (await ex.balance()).wallet
    market = SimMarket(7)

    clock.ms = DAY400 + 8 * HOUR + 40_000  # past 08:00
    first = expected_funding(market, holdings, opened, clock.ms)
    assert first != 0
    assert (await ex.balance()).wallet == after_fills - first
    assert (await ex.balance()).wallet == after_fills - first  # asked again: nothing more
    assert [p.qty for p in await ex.positions()] == [D("0.250"), D("-3.00")]

    # a restart between funding times repeats nothing
    clock.ms += 10 * MINUTE_MS
    ex = SimExchange(clock, SimConfig(), inline=True, account_file=account)
    assert (await ex.balance()).wallet == after_fills - first

    # the process is down across three funding times: the restart charges each once
    clock.ms = DAY400 + DAY_MS + 9 * HOUR
    ex = SimExchange(clock, SimConfig(), inline=True, account_file=account)
    total = expected_funding(market, holdings, opened, clock.ms)
    assert len(funding_times(opened, clock.ms)) == 4
    assert (await ex.positions())[0].qty == D("0.250")  # positions settle too
    assert (await ex.balance()).wallet == after_fills - total
    saved = json.loads(account.read_text())
    assert saved["funded_to"] == clock.ms
    assert sum(D(v) for v in saved["funding_paid"].values()) == total

    # a fill settles first: the position it changes paid on its old size up to then
    clock.ms = DAY400 + DAY_MS + 16 * HOUR + 5 * MINUTE_MS
    fill = await ex.place_order(OrderIntent("BTCUSDT", Side.SELL, D("0.250")))
    total += expected_funding(market, holdings, DAY400 + DAY_MS + 9 * HOUR, clock.ms)
    ex = SimExchange(clock, SimConfig(), inline=True, account_file=account)
    bal = await ex.balance()
    closed = ex.broker.positions["BTCUSDT"]
    assert bal.wallet == after_fills - total - fill.fee + closed.realized_pnl


@pytest.mark.trio
async def test_an_order_priced_before_a_funding_time_pays_that_funding(tmp_path):
    """The engine decided at the 07:55 bar but the order reached the venue after 08:00 (the
    machine lagged): the fill is priced at 07:55, so the position it opened was held at 08:00
    and pays that funding, even though the venue had already settled 08:00 without it."""
    clock = SetClock(DAY400 + 7 * HOUR + 50 * MINUTE_MS)
    ex = SimExchange(clock, SimConfig(), inline=True)
    await ex.balance()
    clock.ms = DAY400 + 8 * HOUR + 2 * MINUTE_MS
    await ex.balance()  # 08:00 settled, nothing held
    decided = DAY400 + 7 * HOUR + 55 * MINUTE_MS
    fill = await ex.place_order(OrderIntent("SOLUSDT", Side.BUY, D("10.0"), decided_ms=decided))
    assert fill.price > D(str(ex.market.last_price("SOLUSDT", decided)))
    due = expected_funding(ex.market, {"SOLUSDT": D("10.0")}, decided, clock.ms)
    assert due != 0
    bal = await ex.balance()
    assert bal.wallet == D(100_000) - fill.fee - due
    # the charge is logged at its funding time: the account as of the 07:55 bar (what the
    # books hold then) adds it back; as of 08:00 it stands
    funding_at = DAY400 + 8 * HOUR
    assert bal.funding_log == ((funding_at, due),)
    marks = {"SOLUSDT": fill.price}
    assert venue_as_of(bal, marks, decided, clock.ms) == D(100_000) - fill.fee
    assert venue_as_of(bal, marks, funding_at, clock.ms) == D(100_000) - fill.fee - due


@pytest.mark.trio
async def test_the_funding_log_survives_a_restart_and_an_older_file_knows_nothing_before(
        tmp_path):
    """The log is part of the saved account; a file written before it existed says nothing
    about charges before its ``funded_to``, so a bar before that is not comparable (None),
    never compared against a wallet with charges missing."""
    account = tmp_path / "sim_account.json"
    clock = SetClock(DAY400 + 7 * HOUR)
    ex = SimExchange(clock, SimConfig(), inline=True, account_file=account)
    await ex.balance()
    fill = await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, D("0.250")))
    clock.ms = DAY400 + 9 * HOUR
    before = await ex.balance()
    assert len(before.funding_log) == 1 and before.funding_known_after == DAY400 + 7 * HOUR
    restarted = await SimExchange(clock, SimConfig(), inline=True,
                                  account_file=account).balance()
    assert restarted.funding_log == before.funding_log
    assert restarted.funding_known_after == before.funding_known_after
    marks = {"BTCUSDT": fill.price}
    bar = DAY400 + 7 * HOUR + 55 * MINUTE_MS
    assert venue_as_of(restarted, marks, bar, clock.ms) == D(100_000) - fill.fee

    saved = json.loads(account.read_text())
    del saved["funding_log"], saved["funding_log_from"]
    account.write_text(json.dumps(saved))
    old = await SimExchange(clock, SimConfig(), inline=True, account_file=account).balance()
    assert old.funding_log == () and old.funding_known_after == clock.ms
    assert venue_as_of(old, marks, bar, clock.ms) is None
    assert venue_as_of(old, marks, clock.ms, clock.ms) == old.wallet


# -- replay: Roll's spread and the folder's funding files ------------------------------------

LEAN = "quantconnect_lean/Data"
PERP = f"{LEAN}/cryptofuture/bybit/minute/btcusdt/20221213_trade.zip"
SPOT = f"{LEAN}/crypto/bybit/minute/btcusdt/20221213_trade.zip"
LEAN_FUNDING = f"{LEAN}/cryptofuture/bybit/margin_interest/btcusdt.csv"
XRP = "freqtrade/futures/XRP_USDT_USDT-5m-futures.json"
XRP_FUNDING = "freqtrade/futures/XRP_USDT_USDT-8h-funding_rate.json"
DAY0 = 1_670_889_600_000  # 2022-12-13 00:00 UTC


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for rel in (PERP, SPOT, LEAN_FUNDING, XRP, XRP_FUNDING):
        dest = tmp_path / "real" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REAL / rel, dest)
    return tmp_path / "real"


@pytest.mark.trio
async def test_replay_loads_both_funding_files_for_their_symbols(folder, autojump_clock):
    clock = VirtualClock(DAY0 / 1000, speed=60)
    ex = ReplayExchange(clock, folder, inline=True)
    assert ex.refused == []  # the funding files load as funding, not as refused candles
    assert sorted(ex.symbols()) == ["BTCUSDT.bybit-perp", "BTCUSDT.bybit-spot", "XRPUSDT"]
    await clock.sleep_until((DAY0 + 16 * HOUR + 1000) / 1000)
    # Lean's CSV goes to the perpetual, not to spot; nothing after the data ends (12:00)
    assert await ex.funding_rates("BTCUSDT.bybit-perp", DAY0 - 1, DAY0 + DAY_MS) == [
        (DAY0, -0.0002016), (DAY0 + 8 * HOUR, -0.00022398)]
    assert await ex.funding_rates("BTCUSDT.bybit-spot", 0, DAY0 + DAY_MS) == []
    # freqtrade's ccxt file goes to the XRP perpetual, its ms jitter rounded to the minute
    xrp = await ex.funding_rates("XRPUSDT", 0, 2_000_000_000_000)
    assert xrp[0] == (1_637_193_600_000, 0.0001) and len(xrp) == 12  # 11-18 → 11-21 22:30
    assert all(t % FUNDING_PERIOD_MS == 0 for t, _ in xrp)


@pytest.mark.trio
async def test_replay_quotes_and_charges_rolls_spread_and_funding(folder, autojump_clock):
    clock = VirtualClock(DAY0 / 1000, speed=60)
    ex = ReplayExchange(clock, folder, inline=True)
    from data.loaders import load_file

    perp = load_file(REAL / PERP).rows
    xrp = load_file(REAL / XRP).rows
    assert ex.half_spread("XRPUSDT") == roll_half_spread(xrp[:, 4]) > 0
    await clock.sleep_until((DAY0 + 3 * MINUTE_MS + 500) / 1000)
    perp_ticker = {t.symbol: t for t in await ex.tickers()}["BTCUSDT.bybit-perp"]
    assert perp_ticker.bid == perp_ticker.ask == perp_ticker.last_price == perp[2, 4]  # Roll 0

    fill = await ex.place_order(OrderIntent("BTCUSDT.bybit-perp", Side.BUY, D("0.500")))
    await clock.sleep_until((DAY0 + 8 * HOUR + 30_000) / 1000)
    price = D(str(perp[8 * 60 - 1, 4]))  # the minute that closes at 08:00
    due = funding_due(D("0.500"), price, D("-0.00022398"))  # negative: the long receives
    assert (await ex.balance()).wallet == D(100_000) - fill.fee - due
    assert (await ex.balance()).wallet == D(100_000) - fill.fee - due  # once

    # the XRP set, replayed in its own time: the ticker quotes Roll's spread
    clock = VirtualClock(1_637_020_800_000 / 1000, speed=60)  # 2021-11-16 00:00
    ex = ReplayExchange(clock, folder, inline=True)
    await clock.sleep_until(clock.now() + 3600)
    ticker = {t.symbol: t for t in await ex.tickers()}["XRPUSDT"]
    assert ticker.bid < ticker.last_price < ticker.ask
    assert quoted_half_spread(ticker.bid, ticker.ask) >= ex.half_spread("XRPUSDT") * (1 - 1e-9)

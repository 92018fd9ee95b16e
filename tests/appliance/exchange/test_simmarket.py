import numpy as np
import pytest

from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, MINUTE_MS, UNIVERSE, SimMarket

T0 = EPOCH_MS + 700 * DAY_MS + 123 * MINUTE_MS  # an arbitrary minute well after the epoch


def test_same_seed_same_candles_in_any_order_of_questions():
    a = SimMarket(seed=11)
    b = SimMarket(seed=11)
    late = b.candles("ETHUSDT", T0 + 3 * DAY_MS, T0 + 3 * DAY_MS + 600 * MINUTE_MS)
    full = a.candles("ETHUSDT", T0, T0 + 4 * DAY_MS)
    assert np.array_equal(full[(full[:, 0] >= late[0, 0]) & (full[:, 0] <= late[-1, 0])], late)
    assert np.array_equal(SimMarket(seed=11).candles("ETHUSDT", T0, T0 + DAY_MS),
                          full[:1440])


def test_another_seed_is_another_market():
    a = SimMarket(seed=1).candles("BTCUSDT", T0, T0 + DAY_MS)
    b = SimMarket(seed=2).candles("BTCUSDT", T0, T0 + DAY_MS)
    assert not np.allclose(a[:, 4], b[:, 4])


def test_candles_are_contiguous_and_consistent():
    arr = SimMarket(7).candles("SOLUSDT", T0, T0 + 2 * DAY_MS)
    assert len(arr) == 2 * 1440
    assert np.all(np.diff(arr[:, 0]) == MINUTE_MS)
    o, h, l, c, v, q = arr[:, 1:].T
    assert np.all(h >= np.maximum(o, c)) and np.all(l <= np.minimum(o, c)) and np.all(l > 0)
    assert np.all(v > 0) and np.allclose(q, v * c)
    assert np.allclose(o[1:], c[:-1])  # each bar opens at the previous close


def test_returns_have_fat_tails_clustering_and_a_common_factor():
    m = SimMarket(7)
    start, end = T0, T0 + 20 * DAY_MS
    btc = np.diff(np.log(m.candles("BTCUSDT", start, end)[:, 4]))
    eth = np.diff(np.log(m.candles("ETHUSDT", start, end)[:, 4]))
    z = (btc - btc.mean()) / btc.std()
    assert np.mean(z ** 4) > 4.0  # kurtosis well above the normal's 3
    absr = np.abs(btc)
    assert np.corrcoef(absr[:-1], absr[1:])[0, 1] > 0.1  # volatility clustering
    assert np.corrcoef(btc, eth)[0, 1] > 0.2  # common factor


def test_turnover_spread_puts_some_symbols_under_the_bar():
    tickers = SimMarket(7).tickers(T0)
    turnovers = {t.symbol: t.turnover_24h for t in tickers}
    assert len(turnovers) >= 20
    below = [s for s, v in turnovers.items() if v < 10e6]
    above = [s for s, v in turnovers.items() if v > 10e6]
    assert len(below) >= 2 and len(above) >= 15
    assert turnovers["BTCUSDT"] > 1e9


def test_symbols_are_listed_and_delisted_over_time():
    m = SimMarket(7)
    cyclic = [s.symbol for s in UNIVERSE if s.cycle_days]
    assert cyclic
    sym = cyclic[0]
    states = {m.listed(sym, EPOCH_MS + d * DAY_MS) for d in range(0, 400)}
    assert states == {True, False}
    late = [s for s in UNIVERSE if s.launch_day > 0][0]
    assert late.symbol not in {i.symbol for i in m.instruments(EPOCH_MS)}
    assert m.candles(late.symbol, EPOCH_MS, EPOCH_MS + DAY_MS).shape == (0, 7)


def test_no_candles_before_the_epoch_or_in_empty_ranges():
    m = SimMarket(7)
    assert m.candles("BTCUSDT", EPOCH_MS - DAY_MS, EPOCH_MS).shape == (0, 7)
    assert m.candles("BTCUSDT", T0, T0).shape == (0, 7)
    with pytest.raises(KeyError, match="unknown sim symbol"):
        m.candles("NOPEUSDT", T0, T0 + MINUTE_MS)


# Values computed by the sim market before it took its universe from ``sim.pairs`` (commit
# 7f68384): (symbol, day after the epoch, minute of the day, (o, h, l, c, volume, turnover) of
# that minute, the day's turnover). Prices sit on the tick, so they compare exactly; volume and
# turnover to 1e-9 (numpy's exp may differ in the last bits between CPUs).
BEFORE = [
    ("BTCUSDT", 0, 0, (42000.0, 42036.100000000006, 41986.700000000004, 41994.9,
                       44.46703932180191, 1867388.8696151392), 4661824934.0685005),
    ("BTCUSDT", 800, 777, (75645.5, 75726.8, 75627.90000000001, 75672.1, 35.41104865336225,
                           2679628.4148020935), 6899843470.930563),
    ("ETHUSDT", 700, 1439, (2113.21, 2116.07, 2112.67, 2114.23, 916.2476108918452,
                            1937158.1863758657), 3296134926.8501587),
    ("SOLUSDT", 123, 60, (124.29, 124.55, 124.19, 124.36, 4836.6582224019785, 601486.81653791),
     968983469.197607),
    ("SEIUSDT", 801, 500, (18.01, 18.0414, 17.9774, 18.0136, 75.56708211997642,
                           1361.2351904764073), 6163006.067245069),
    ("TIAUSDT", 400, 1000, (15.002, 15.021, 14.98, 14.99, 134.77221223293992,
                            2020.2354613717694), 2932189.3855003268),
    ("XLMUSDT", 650, 3, (0.23807000000000003, 0.23840000000000003, 0.23783, 0.23826000000000003,
                         32273.905754609637, 7689.580785093293), 6726325.917892275),
]


@pytest.mark.parametrize("pairs", [24, 200])
def test_the_hand_written_symbols_are_the_market_they_always_were(pairs):
    """The default universe is today's 24 symbols with the same candles, costs and funding;
    a larger universe adds symbols without changing these."""
    m = SimMarket(7, pairs=pairs)
    assert m.symbols()[:24] == [s.symbol for s in UNIVERSE] and len(m.symbols()) == pairs
    for symbol, day, minute, row, day_turnover in BEFORE:
        arr = m.candles(symbol, EPOCH_MS + day * DAY_MS, EPOCH_MS + (day + 1) * DAY_MS)
        assert arr[minute, 0] == EPOCH_MS + day * DAY_MS + minute * MINUTE_MS
        assert tuple(arr[minute, 1:5]) == row[:4]
        assert arr[minute, 5:7] == pytest.approx(row[4:], rel=1e-9)
        assert arr[:, 6].sum() == pytest.approx(day_turnover, rel=1e-9)
    assert m.half_spread("ETHUSDT") == 6.703e-05 and m.half_spread("TIAUSDT") == 0.001
    t = EPOCH_MS + 800 * DAY_MS + 123 * MINUTE_MS
    assert m.funding_rates("ETHUSDT", t - DAY_MS, t) == [
        (1773129600000, 6.983e-05), (1773158400000, 0.00011057), (1773187200000, 8.195e-05)]
    btc = next(x for x in m.tickers(t) if x.symbol == "BTCUSDT")
    assert (btc.last_price, btc.bid, btc.ask) == (78500.90000000001, 78496.9, 78504.9)


def test_last_price_is_the_close_of_the_last_candle_across_listing_edges():
    delisted = EPOCH_MS + 900 * DAY_MS + 37 * MINUTE_MS
    m = SimMarket(7, {"ETHUSDT": delisted}, pairs=60)
    times = [EPOCH_MS, EPOCH_MS + MINUTE_MS, EPOCH_MS + MINUTE_MS + 59_999, T0 + 30_000,
             delisted, delisted + MINUTE_MS, delisted + 3 * DAY_MS,
             EPOCH_MS + 825 * DAY_MS + 5, EPOCH_MS + 825 * DAY_MS + 61_000,  # SEI pauses
             EPOCH_MS + 90 * DAY_MS + 60_001]  # SUI's first minute
    for t in times:
        for symbol in ("BTCUSDT", "ETHUSDT", "SEIUSDT", "SUIUSDT", *m.symbols()[24:]):
            end = t - t % MINUTE_MS
            rows = m.candles(symbol, end - 2 * DAY_MS, end)
            assert m.last_price(symbol, t) == (rows[-1, 4] if len(rows) else None), (symbol, t)


def test_funding_rates_are_the_same_whether_computed_with_the_days_candles_or_on_demand():
    """A day's candles bring its funding rates with them (so a funding bar only reads them);
    a market asked for the rates first must give the very same ones."""
    t0 = EPOCH_MS + 500 * DAY_MS
    times = [t0 + k * 8 * 3_600_000 for k in range(6)]
    with_candles, on_demand = SimMarket(7, pairs=60), SimMarket(7, pairs=60)
    with_candles.precompute(t0, t0 + 2 * DAY_MS)
    rates = [[m.funding_rate(s, t) for s in m.symbols() for t in times]
             for m in (with_candles, on_demand)]
    assert rates[0] == rates[1]
    assert 0.05 < np.mean(np.array(rates[0]) < 0) < 0.3  # about one in seven is negative

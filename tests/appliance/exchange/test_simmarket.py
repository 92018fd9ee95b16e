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

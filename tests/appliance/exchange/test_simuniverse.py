"""The sim universe beyond the hand-written symbols (``sim.pairs``): specs, turnover, lifecycle."""

from decimal import Decimal

import numpy as np
import pytest

from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, MINUTE_MS, SimMarket
from appliance.exchange.simuniverse import HAND_WRITTEN, build_universe

WINDOW = range(1030, 1060)  # a 30-day window of market days near the sim's present (2026-11)


def test_generated_symbols_are_plausible_unique_and_a_prefix_of_any_larger_universe():
    big = build_universe(7, 400)
    assert big[:150] == build_universe(7, 150) and big[:24] == HAND_WRITTEN
    assert build_universe(8, 200)[24:] != big[24:200]  # another seed, another tail
    names = [s.symbol for s in big]
    assert len(set(names)) == 400
    for s in big[24:]:
        base = s.symbol[:-4]
        assert s.symbol.endswith("USDT") and len(base) == 5 and base.endswith("X")
        assert base[0] not in "AEIOU" and base[1] in "AEIOU" and base[3] in "AEIOU"
        tick, step = Decimal(s.tick), Decimal(s.qty_step)
        assert 1e4 <= s.price / float(tick) < 1e5  # 4-5 significant digits on the tick
        assert 1 <= s.price * float(step) < 10  # the smallest order is worth $1-$10
        assert 0.035 <= s.daily_vol <= 0.12 and 0.8 <= s.beta <= 1.3
        assert 0 <= s.launch_day and not (s.cycle_days and s.delist_day)


def test_a_symbols_candles_do_not_depend_on_the_universe_size_or_the_questions_order():
    t0 = EPOCH_MS + 1040 * DAY_MS
    small, big = SimMarket(7, pairs=37), SimMarket(7, pairs=400)
    symbol = small.symbols()[-1]  # in a block that the small universe computes part of
    alone = small.candles(symbol, t0, t0 + DAY_MS)
    big.tickers(t0 + DAY_MS)  # every block of the day at once
    assert len(alone) == 1440 and np.array_equal(big.candles(symbol, t0, t0 + DAY_MS), alone)
    o, h, l, c = alone[:, 1:5].T
    assert np.all(h >= np.maximum(o, c)) and np.all(l <= np.minimum(o, c)) and np.all(l > 0)


def test_about_40_percent_of_a_200_pair_universe_trades_above_the_10m_bar():
    """The share of listed symbols above $10M of 24h turnover, on every third day of a 30-day
    window, stays in 38%-52% (Bybit's ~40%), with a long tail below and a few giants."""
    m = SimMarket(7, pairs=200)
    shares, above_ever, below_ever = [], set(), set()
    for day in WINDOW[::3]:
        tickers = m.tickers(EPOCH_MS + day * DAY_MS)
        above = {t.symbol for t in tickers if t.turnover_24h > 10e6}
        shares.append(len(above) / len(tickers))
        above_ever |= above
        below_ever |= {t.symbol for t in tickers} - above
        turnover = sorted(t.turnover_24h for t in tickers)
    assert 0.38 <= min(shares) and max(shares) <= 0.52
    assert 150 <= len(tickers) <= 200  # most of the universe is listed at a time
    assert turnover[-1] > 1e9 and turnover[0] < 1e6 and np.median(turnover) < 20e6
    assert len(above_ever & below_ever) >= 3  # some cross the bar as their activity drifts


def test_symbols_are_listed_delisted_and_relisted_over_the_window():
    m = SimMarket(7, pairs=200)
    before: dict[str, str] = {}
    seen = {"listed": set(), "delisted": set(), "relisted": set()}
    for day in range(WINDOW.start - 30, WINDOW.stop):
        now = {i.symbol: i.status for i in m.instruments(EPOCH_MS + day * DAY_MS + 3_600_000)}
        if before:
            for symbol, status in now.items():
                was = before.get(symbol)
                if was is None:
                    seen["listed"].add(symbol)
                elif was == "Trading" and status == "Closed":
                    seen["delisted"].add(symbol)
                elif was == "Closed" and status == "Trading":
                    seen["relisted"].add(symbol)
        before = now
    assert all(len(v) >= 2 for v in seen.values()), seen
    # a delisting for good is announced the day before it settles, and its minutes end there
    gone = next(s for s in m.universe if s.delist_day in range(WINDOW.start - 30, WINDOW.stop))
    at = EPOCH_MS + gone.delist_day * DAY_MS
    ahead = {i.symbol: i for i in m.instruments(at - 12 * 3_600_000)}[gone.symbol]
    assert ahead.status == "Trading" and ahead.delivery_time == at
    assert {i.symbol: i.status for i in m.instruments(at)}[gone.symbol] == "Closed"
    last = m.candles(gone.symbol, at - DAY_MS, at + DAY_MS)
    assert len(last) == 1440 and last[-1, 0] == at - MINUTE_MS


def test_the_universe_size_is_checked():
    with pytest.raises(ValueError, match="24, 400"):
        SimMarket(7, pairs=401)
    with pytest.raises(KeyError, match="unknown sim symbol"):
        SimMarket(7, pairs=30).candles(SimMarket(7, pairs=31).symbols()[-1], EPOCH_MS,
                                       EPOCH_MS + DAY_MS)

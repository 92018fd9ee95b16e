"""Validation scores the strategy that trades: the replay equals the paper desk, bar by bar."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.books import Book
from appliance.services.paper_desk import PaperDesk
from appliance.sizing import target_fractions
from models.costs import CostModel, roll_half_spread
from models.paper_replay import replay
from tests.models.real import load_freqtrade

SYMBOLS = ("AAA", "BBB", "CCC")


def desk_equity(close, fraction, costs, capital=1000.0, funding=None):
    """The paper desk, as the trading engine drives it, over the same bars and targets."""
    desk = PaperDesk(costs, 0.01, lambda s: None)
    book = Book("shadow:m:0", "m", "shadow", "g", 0, capital, capital, exact=False)
    out = []
    for t in range(len(close)):
        marks = dict(zip(SYMBOLS, close[t]))
        if funding is not None:
            for i, s in enumerate(SYMBOLS):
                book.cash -= book.qty(s) * close[t, i] * funding[t, i]
        start = book.equity(marks)
        for i, s in enumerate(SYMBOLS):
            desk.rebalance(book, s, fraction[t, i], close[t, i], start, t)
        out.append(book.equity(marks))
    return np.array(out), book


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), threshold=st.sampled_from([0.0, 0.1, 0.3]))
def test_the_replay_is_the_paper_desk_to_1e_9(seed, threshold):
    rng = np.random.default_rng(seed)
    bars = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.003, (bars, 3)), axis=0))
    probs = rng.dirichlet([1, 1, 1], size=bars * 3)
    vol = np.abs(rng.normal(0.004, 0.002, bars * 3))
    fraction = target_fractions(probs, vol, threshold=threshold).reshape(bars, 3)
    funding = np.zeros((bars, 3))
    funding[::96] = rng.normal(0.0001, 0.0001, (len(funding[::96]), 3))
    costs = CostModel(0.00055, 0.0002, {"AAA": 0.0001, "BBB": 0.0, "CCC": 0.0007})
    impact = np.array([costs.price_impact(s) for s in SYMBOLS])
    r = replay(close, fraction, impact, costs.taker_fee, funding=funding, capital=1000.0)
    equity, book = desk_equity(close, fraction, costs, funding=funding)
    np.testing.assert_allclose(r.equity, equity, rtol=1e-9)
    assert int(r.trades.sum()) == book.trades and int(r.fills.sum()) == book.fills


def test_roll_finds_a_planted_spread_and_nothing_in_a_random_walk():
    rng = np.random.default_rng(1)
    mid = 100 * np.exp(np.cumsum(rng.normal(0, 0.0005, 50_000)))
    half = 0.002
    traded = mid * (1 + half * rng.choice([-1, 1], size=len(mid)))  # trades at bid or ask
    assert roll_half_spread(traded) == pytest.approx(half, rel=0.1)
    assert roll_half_spread(mid) < 0.0002


def test_bid_ask_bounce_of_a_thin_real_market_is_measured():
    """Bittrex alt/BTC 5m: lag-1 autocorrelation of returns around -0.05 .. -0.3."""
    close = load_freqtrade("ADA_BTC-5m.json")[:, 4]
    assert roll_half_spread(close) > 0.001  # tens of basis points, not the 2 bp slippage

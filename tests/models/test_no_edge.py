"""The no-edge regression suite (issue 10): the default training path, judged as the appliance
judges it (:mod:`models.honesty`: walk-forward training, candidate gate, a 7-day shadow replay
of the exported model at the recorded costs, ``decide`` with the default rules), promotes
nothing where there is nothing to learn, and still promotes where the sim market's drift can
be learned. The full-size version is ``methtrader bench honesty``.
"""

from __future__ import annotations

import pytest

from data.loaders import load_file
from models.honesty import evaluate, permuted, random_walk, sim_drift, summarize
from tests.models.real import FREQTRADE

NOISE_SEEDS = range(6)
DRIFT_SEEDS = (0, 1)
DRIFT_SYMBOLS = ("SOLUSDT", "DOGEUSDT", "AVAXUSDT", "NEARUSDT", "LINKUSDT")


def bittrex_sets() -> dict:
    """The ten Bittrex alt/BTC 5m sets (20 days each), by symbol."""
    return {(s := load_file(p)).symbol: s.rows
            for p in sorted(FREQTRADE.glob("*_BTC-5m.json"))}


@pytest.fixture(scope="module")
def bittrex() -> dict:
    return bittrex_sets()


def noise_summary(records) -> str:
    return "; ".join(f"seed {r.seed}: wf_score {r.wf_score:.2f}, tail sharpe "
                     f"{r.tail_sharpe:.2f}, {r.tail_trades} trades, {r.verdict}"
                     for r in records)


def test_random_walks_promote_nothing(tmp_path):
    records = [evaluate(tmp_path / f"rw{k}", "random_walk", random_walk(k), k)
               for k in NOISE_SEEDS]
    assert all(r.shortlisted for r in records)  # the gate shadows any lone candidate
    assert all(r.tail_days >= 7.0 for r in records)  # a full shadow period was judged
    assert summarize(records)["random_walk"]["promoted"] == 0, noise_summary(records)
    assert not any(r.wf_verdict == "promote" for r in records), noise_summary(records)


def test_permuted_real_returns_promote_nothing(tmp_path, bittrex):
    names = sorted(bittrex)
    records = []
    for k in NOISE_SEEDS:
        group = {names[(3 * k + j) % len(names)]: bittrex[names[(3 * k + j) % len(names)]]
                 for j in range(3)}
        records.append(evaluate(tmp_path / f"p{k}", "permuted", permuted(group, k), k))
    assert all(r.tail_days >= 7.0 for r in records)
    assert summarize(records)["permuted"]["promoted"] == 0, noise_summary(records)
    assert not any(r.wf_verdict == "promote" for r in records), noise_summary(records)


def test_the_sim_markets_drift_still_promotes(tmp_path):
    """The same path is not simply closed: a learnable drift gets through it."""
    records = [evaluate(tmp_path / f"s{k}", "sim_drift",
                        sim_drift(k, symbols=DRIFT_SYMBOLS, days=30), k)
               for k in DRIFT_SEEDS]
    promoted = [r for r in records if r.promoted]
    assert promoted, noise_summary(records)
    assert all(r.tail_sharpe > 0 and r.tail_trades >= 20 for r in promoted)


def test_bittrex_bid_ask_bounce_is_not_promoted(tmp_path, bittrex):
    """Finding 3: the Bittrex alt/BTC sets (lag-1 autocorrelation -0.05 to -0.30) trained and
    scored through the same path. Replayed without a half spread the shadow week reads as edge;
    with Roll's half spread charged none is promoted and the walk-forward record is a loss."""
    names = sorted(bittrex)
    records = [evaluate(tmp_path / f"b{k}", "bittrex", {s: bittrex[s] for s in names[k::2]}, k)
               for k in range(2)]
    for r in records:
        assert r.tail_sharpe_free_spread > 0, r  # the bounce reads as edge when it is free
        assert not r.promoted, r
        assert r.wf_verdict == "reject" and r.sharpe < 0, r
        assert r.tail_days >= 7.0

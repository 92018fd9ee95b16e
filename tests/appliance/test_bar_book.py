"""The bar book: the features the engine trades on are the training features of the same bars,
whether a bar arrived alone, with the other symbols' bars, or as history filled at once."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.bar_book import VOL, BarBook
from appliance.bars import bars_from_minutes
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from models.features import FS1, FS2, WARMUP_BARS, compute, compute_features, serving_columns

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
STEP = 300_000


@pytest.fixture(scope="module")
def bars() -> dict[str, np.ndarray]:
    """Two days of 5m bars per symbol from the sim market's 1m candles."""
    market = SimMarket(7)
    start = EPOCH_MS + 30 * DAY_MS
    end = start + 2 * DAY_MS
    return {s: bars_from_minutes(market.candles(s, start, end), STEP, end) for s in SYMBOLS}


def expected(bars: np.ndarray, upto: int, lookback: int) -> np.ndarray:
    """Training's rows (the catalogue's: fs1's columns first) of the last ``lookback`` bars up
    to index ``upto`` (inclusive)."""
    return compute(FS2, bars[:upto + 1])[upto + 1 - lookback:upto + 1]


def test_bars_pushed_together_give_the_training_features(bars) -> None:
    book = BarBook("5m", rows_kept=8)
    n = len(bars["BTCUSDT"])
    for i in range(n):
        new = book.push_many({s: bars[s][i] for s in reversed(SYMBOLS)})
        assert new == sorted(SYMBOLS)
        if i == WARMUP_BARS - 1:
            assert not any(book.warm(s) for s in SYMBOLS)  # the first row comes one bar later
    for s in SYMBOLS:
        assert book.warm(s)
        np.testing.assert_allclose(book.window(s, 8), expected(bars[s], n - 1, 8),
                                   rtol=1e-5, atol=1e-6)  # float32 windows, as the models get
        assert book.close(s) == bars[s][-1, 4]
        assert book.vol(s) == pytest.approx(compute_features(bars[s])[-1, VOL], rel=1e-9)


def test_history_filled_at_once_then_live_bars_match_bar_by_bar(bars) -> None:
    """At start (or after a cut-off) the engine fills a symbol's history in one call; the rows
    that follow are the same as if every bar had been pushed one by one."""
    filled, pushed = BarBook("5m", rows_kept=16), BarBook("5m", rows_kept=16)
    s = "ETHUSDT"
    history, live = bars[s][:300], bars[s][300:340]
    assert filled.extend(s, history) == 300
    for bar in history:
        pushed.push(s, bar)
    np.testing.assert_allclose(filled.window(s, 16), pushed.window(s, 16), rtol=1e-12)
    for bar in live:
        assert filled.push_many({s: bar}) == [s] and pushed.push(s, bar)
    np.testing.assert_allclose(filled.window(s, 16), pushed.window(s, 16), rtol=1e-12)
    np.testing.assert_allclose(filled.window(s, 16), expected(bars[s], 339, 16), rtol=1e-5,
                               atol=1e-6)


def test_old_or_repeated_bars_are_ignored_and_a_gap_is_filled_in_order(bars) -> None:
    book = BarBook("5m", rows_kept=4)
    btc, eth = bars["BTCUSDT"], bars["ETHUSDT"]
    book.extend("BTCUSDT", btc[:200])
    book.extend("ETHUSDT", eth[:200])
    assert book.push_many({"BTCUSDT": btc[199], "ETHUSDT": eth[150]}) == []  # repeated, old
    assert book.push_many({"BTCUSDT": btc[200], "ETHUSDT": eth[199]}) == ["BTCUSDT"]
    assert book.extend("ETHUSDT", eth[150:210]) == 10  # only the bars after its last
    assert book.missing_from("ETHUSDT", int(eth[210, 0]) + STEP) is None
    assert book.lacking(["BTCUSDT", "ETHUSDT", "SOLUSDT"], int(eth[210, 0]) + STEP) == [
        "BTCUSDT", "SOLUSDT"]  # BTC's last bar is 200, SOL has none
    np.testing.assert_allclose(book.window("ETHUSDT", 4), expected(eth, 209, 4), rtol=1e-5,
                               atol=1e-6)
    assert book.close_at("ETHUSDT", int(eth[205, 0]) + STEP) == eth[205, 4]
    assert book.close_at("ETHUSDT", int(eth[205, 0]) + STEP // 2) is None
    assert book.extend("SOLUSDT", np.zeros((0, 7))) == 0 and not book.warm("SOLUSDT")


def test_a_symbol_with_too_few_bars_is_not_warm(bars) -> None:
    book = BarBook("5m")
    book.extend("SOLUSDT", bars["SOLUSDT"][:WARMUP_BARS])
    assert not book.warm("SOLUSDT")
    book.push("SOLUSDT", bars["SOLUSDT"][WARMUP_BARS])
    assert book.warm("SOLUSDT") and book.rows_count("SOLUSDT") == 1
    book.extend("ETHUSDT", bars["ETHUSDT"][:WARMUP_BARS])
    assert book.warm_of(["ETHUSDT", "SOLUSDT", "XRPUSDT"]) == {"SOLUSDT"}  # XRP: never seen
    at_once = BarBook("5m")
    at_once.extend("SOLUSDT", bars["SOLUSDT"][:WARMUP_BARS + 1])
    assert at_once.rows_count("SOLUSDT") == 1
    np.testing.assert_allclose(at_once.window("SOLUSDT", 1),
                               expected(bars["SOLUSDT"], WARMUP_BARS, 1), rtol=1e-5, atol=1e-6)


def test_each_model_reads_its_own_columns_of_the_catalogue_row(bars) -> None:
    """An fs1 model gets fs1's fifteen columns, an AutoML model the subset it was trained on,
    in its order, from the one row the book computes per bar."""
    book = BarBook("5m", rows_kept=4)
    book.extend("BTCUSDT", bars["BTCUSDT"])
    fs1 = book.window("BTCUSDT", 4, serving_columns("fs1"))
    assert fs1.shape == (4, len(FS1.names))
    np.testing.assert_allclose(fs1, compute_features(bars["BTCUSDT"])[-4:], rtol=1e-5,
                               atol=1e-6)
    subset = ["adx_14", "ret_1", "skew_48"]
    got = book.window("BTCUSDT", 4, serving_columns("fs2", subset))
    want = compute(FS2, bars["BTCUSDT"])[-4:, [FS2.names.index(n) for n in subset]]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not all in the catalogue"):
        serving_columns("fs2", ["nope"])


def test_closes_wrap_around_a_day_of_bars(bars) -> None:
    """The book keeps a day of closes per symbol (allocation's volatility, funding prices):
    older ones roll off, whether the bars came one by one or as history at once."""
    from appliance.bar_book import HISTORY_BARS

    eth = bars["ETHUSDT"]
    filled, pushed = BarBook("5m", rows_kept=4), BarBook("5m", rows_kept=4)
    filled.extend("ETHUSDT", eth[:400])
    for bar in eth[:400]:
        pushed.push("ETHUSDT", bar)
    for book in (filled, pushed):
        np.testing.assert_allclose(book.returns("ETHUSDT"),  # logs taken a bar or a run at a time
                                   np.diff(np.log(eth[400 - HISTORY_BARS:400, 4])), rtol=0,
                                   atol=1e-15)
        newest = int(eth[399, 0]) + STEP  # when the newest bar closed
        assert book.close_at("ETHUSDT", newest) == eth[399, 4] == book.close("ETHUSDT")
        oldest = newest - (HISTORY_BARS - 1) * STEP
        assert book.close_at("ETHUSDT", oldest) == eth[400 - HISTORY_BARS, 4]
        assert book.close_at("ETHUSDT", oldest - STEP) is None  # rolled off
        np.testing.assert_array_equal(book.closes_of(["ETHUSDT"]), [eth[399, 4]])
    assert len(BarBook("5m").returns("ETHUSDT")) == 0


def test_aligned_returns_are_each_symbols_returns_over_their_common_span(bars) -> None:
    """The allocation's volatility input, one gather: the same numbers as each symbol's own
    returns cut to the span every symbol covers (a newer symbol has fewer bars)."""
    from appliance.allocation import group_volatility

    book = BarBook("5m", rows_kept=4)
    book.extend("BTCUSDT", bars["BTCUSDT"][:500])
    book.extend("ETHUSDT", bars["ETHUSDT"][400:500])  # listed later: 100 bars
    book.extend("SOLUSDT", bars["SOLUSDT"][499:500])  # one bar: no return yet
    got = book.aligned_returns(["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"])
    assert got.shape == (2, 99)
    for row, s in zip(got, ("BTCUSDT", "ETHUSDT")):
        np.testing.assert_array_equal(row, book.returns(s)[-99:])
    assert group_volatility(got) == group_volatility(
        [book.returns(s) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT")])
    assert book.aligned_returns(["XRPUSDT"]).shape == (0, 0)


def test_a_bar_split_for_the_prod_models_serves_their_columns_then_the_rest(bars) -> None:
    """Before a bar's orders the engine computes only the indicators its prod models read
    (and the volatility sizing reads); a window asking for any other column, the next bar, or
    ``finish`` completes the rows, which are then those of a whole push."""
    whole, split = BarBook("5m", rows_kept=4), BarBook("5m", rows_kept=4)
    for book in (whole, split):
        for s in SYMBOLS:
            book.extend(s, bars[s][:200])
    fs1 = serving_columns("fs1")
    first = split.indicators_of(fs1)
    assert len(first) < len(FS2.indicators)
    for t in range(200, 230):
        batch = {s: bars[s][t] for s in SYMBOLS}
        whole.push_many(batch)
        split.push_many(batch, first)
        np.testing.assert_array_equal(split.windows(list(SYMBOLS), 4, fs1),
                                      whole.windows(list(SYMBOLS), 4, fs1))
        np.testing.assert_array_equal(split.vols(list(SYMBOLS)), whole.vols(list(SYMBOLS)))
        if t % 2:
            split.finish()
        if t % 5 == 0:  # a shadow on the whole catalogue: finished first
            np.testing.assert_array_equal(split.windows(list(SYMBOLS), 4),
                                          whole.windows(list(SYMBOLS), 4))
    split.finish()
    for s in SYMBOLS:
        np.testing.assert_array_equal(split.kept_rows(s), whole.kept_rows(s))
        np.testing.assert_allclose(split.window(s, 4), expected(bars[s], 229, 4), rtol=1e-5,
                                   atol=1e-6)

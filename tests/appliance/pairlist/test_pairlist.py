from decimal import Decimal

from appliance.domain import Instrument, Ticker
from appliance.pairlist import PairRow, candidates, changes, select
from appliance.pairlist.quote import QuoteFilter
from appliance.pairlist.status import StatusFilter
from appliance.pairlist.turnover import TurnoverFilter

CHAIN = [StatusFilter(), QuoteFilter("USDT"), TurnoverFilter(10e6)]


def inst(symbol, status="Trading", quote="USDT"):
    return Instrument(symbol, status, symbol[:3], quote, Decimal("0.1"), Decimal("0.001"),
                      Decimal("0.001"), 0)


def test_each_filter_drops_what_it_should_and_says_which():
    rows = select(candidates(
        [inst("BTCUSDT"), inst("NEWUSDT", "PreLaunch"), inst("ETHUSDC", quote="USDC"),
         inst("DUSTUSDT"), inst("EDGEUSDT")],
        [Ticker("BTCUSDT", 1, 5e9, 1), Ticker("NEWUSDT", 1, 5e9, 1), Ticker("ETHUSDC", 1, 5e9, 1),
         Ticker("DUSTUSDT", 1, 9e6, 1), Ticker("EDGEUSDT", 1, 10e6, 1)]), CHAIN)
    by = {r.symbol: r for r in rows}
    assert [r.symbol for r in rows if r.tradable] == ["BTCUSDT"]
    assert by["NEWUSDT"].dropped_by == "status"
    assert by["ETHUSDC"].dropped_by == "quote"
    assert by["DUSTUSDT"].dropped_by == "turnover"
    assert by["EDGEUSDT"].dropped_by == "turnover"  # the bar is strict: > $10M


def test_a_pair_without_a_ticker_has_no_turnover():
    rows = select(candidates([inst("BTCUSDT")], []), CHAIN)
    assert rows[0].turnover_24h == 0.0 and not rows[0].tradable


def row(symbol, status="Trading", turnover=20e6):
    return select([PairRow(symbol, status, "USDT", turnover)], CHAIN)[0]


def test_changes_name_listings_delistings_and_the_bar():
    before = {r.symbol: r for r in [row("A"), row("B"), row("C", turnover=5e6), row("D"),
                                    row("E", "Closed")]}
    now = [row("A"), row("B", turnover=5e6), row("C"), row("E"), row("F")]
    got = {(c.symbol, c.event) for c in changes(before, now)}
    assert got == {("B", "dropped_below_bar"), ("C", "crossed_bar"), ("D", "delisted"),
                   ("E", "listed"), ("E", "crossed_bar"), ("F", "listed"),
                   ("F", "crossed_bar")}
    assert changes({r.symbol: r for r in now}, now) == []


def test_first_discovery_lists_everything_it_sees():
    got = changes({}, [row("A"), row("B", "Closed")])
    assert {(c.symbol, c.event) for c in got} == {("A", "listed"), ("A", "crossed_bar")}

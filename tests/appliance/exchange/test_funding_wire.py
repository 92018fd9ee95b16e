"""Top of book and funding history on the wire: the fake Bybit serves them from the sim market,
the adapter fetches, pages and validates them, and Bybit paper charges both."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from appliance.domain import OrderIntent, Side
from appliance.exchange import fake_bybit_app
from appliance.exchange.bybit import BybitExchange, BybitSettings, ValidationError
from appliance.exchange.bybit_wire import parse_funding_history, parse_tickers
from appliance.exchange.fake_bybit_market import funding_history
from appliance.exchange.simmarket import SimMarket
from models.costs import quoted_half_spread
from models.funding import FUNDING_PERIOD_MS, funding_due

from tests.appliance.exchange.bybit_fixtures import T0, fake_bybit, frozen

MIN = 60_000
HOUR = 3_600_000
PATH = "/v5/market/funding/history"
D = Decimal


def settings(url: str, **kw) -> BybitSettings:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return BybitSettings(base_url=url, **kw)


async def get(url: str, path: str, **params) -> dict:
    async with httpx.AsyncClient(base_url=url) as client:
        return (await client.get(path, params=params)).json()


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_tickers_carry_the_sim_spread_as_bid1_and_ask1():
    now = T0 + 7 * MIN
    market = SimMarket(7)
    async with fake_bybit(clock=frozen(now)) as (_, url), BybitExchange(settings(url)) as ex:
        tickers = {t.symbol: t for t in await ex.tickers()}
        fill = await ex.place_order(OrderIntent("XLMUSDT", Side.BUY, D("10")))  # a thin one
    assert len(tickers) >= 20
    for t in tickers.values():
        assert (t.bid, t.ask) == market.quote(t.symbol, market.last_price(t.symbol, now))
        assert t.bid < t.last_price < t.ask
    # paper fills cross the quoted half spread (then round to the 0.00001 tick)
    quote = tickers["XLMUSDT"]
    want = D(str(quote.last_price)) * (1 + D("0.0002")
                                       + D(str(quoted_half_spread(quote.bid, quote.ask))))
    assert abs(fill.price - want) <= D("0.000005") and fill.price > D(str(quote.ask))


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_fake_funding_history_endpoint_follows_bybit():
    market = SimMarket(7)
    async with fake_bybit(clock=frozen(T0 + 5 * MIN)) as (app, url):
        newest = await get(url, PATH, category="linear", symbol="BTCUSDT", limit=3)
        window = await get(url, PATH, category="linear", symbol="BTCUSDT",
                           startTime=T0 - 2 * 86_400_000, endTime=T0 - 86_400_000)
        only_start = await get(url, PATH, category="linear", symbol="BTCUSDT", startTime=T0)
        too_many = await get(url, PATH, category="linear", symbol="BTCUSDT", limit=201)
        bad_symbol = await get(url, PATH, category="linear", symbol="NOPEUSDT")
        app.faults = app.faults.updated({"rate_limit_storm": True})
        storm = await get(url, PATH, category="linear", symbol="BTCUSDT")
    assert newest["retCode"] == 0 and newest["result"]["category"] == "linear"
    rows = newest["result"]["list"]
    assert [int(r["fundingRateTimestamp"]) for r in rows] == [T0, T0 - 8 * HOUR, T0 - 16 * HOUR]
    assert all(r["symbol"] == "BTCUSDT" for r in rows)
    assert float(rows[0]["fundingRate"]) == market.funding_rate("BTCUSDT", T0)
    inside = [int(r["fundingRateTimestamp"]) for r in window["result"]["list"]]
    assert inside == [T0 - 86_400_000 - k * 8 * HOUR for k in range(4)]  # both ends included
    assert only_start["retCode"] == too_many["retCode"] == bad_symbol["retCode"] == 10001
    assert storm["retCode"] == 10006


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_adapter_pages_back_through_the_funding_history():
    market = SimMarket(7)
    start = T0 - 100 * 86_400_000
    async with fake_bybit() as (app, url), BybitExchange(settings(url)) as ex:
        rates = await ex.funding_rates("ETHUSDT", start, T0)
        empty = await ex.funding_rates("ETHUSDT", T0 - 8 * HOUR + 1, T0 - 1)
    assert rates == market.funding_rates("ETHUSDT", start, T0) and len(rates) == 300
    assert app.stats.by_path[PATH] == 3  # 200 + 100 rows, then an empty window
    assert empty == [] and ex.invalid_payloads == 0


def _rows(*items: tuple[int, str], symbol: str = "ETHUSDT") -> list[dict]:
    return [{"symbol": symbol, "fundingRate": r, "fundingRateTimestamp": str(t)}
            for t, r in items]


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_a_malformed_funding_page_over_tcp_fails_the_whole_fetch(monkeypatch):
    """The second page repeats the first (a server that ignores endTime): the adapter refuses
    it instead of returning duplicated funding."""
    calls = []

    def repeating(market, params, now):
        calls.append(params)
        first = dict(params, endTime=str(calls[0]["endTime"]))
        return funding_history(market, first, now)

    monkeypatch.setitem(fake_bybit_app._PUBLIC, PATH, repeating)
    async with fake_bybit() as (_, url), BybitExchange(settings(url)) as ex:
        with pytest.raises(ValidationError, match="outside"):
            await ex.funding_rates("ETHUSDT", T0 - 100 * 86_400_000, T0)
    assert len(calls) == 2 and ex.invalid_payloads == 1


BAD_FUNDING = {
    "oldest first": _rows((T0 - 8 * HOUR, "0.0001"), (T0, "0.0001")),
    "duplicate": _rows((T0, "0.0001"), (T0, "0.0001")),
    "other symbol": _rows((T0, "0.0001"), symbol="BTCUSDT"),
    "outside window": _rows((T0 + 8 * HOUR, "0.0001")),
    "non-numeric rate": _rows((T0, "abc")),
    "nan rate": _rows((T0, "NaN")),
    "absurd rate": _rows((T0, "1.5")),
    "time not an integer": [{"symbol": "ETHUSDT", "fundingRate": "0.0001",
                             "fundingRateTimestamp": "17e11"}],
    "missing rate": [{"symbol": "ETHUSDT", "fundingRateTimestamp": str(T0)}],
    "not a list": {"oops": 1},
}


@pytest.mark.parametrize("case", sorted(BAD_FUNDING))
@pytest.mark.trio
async def test_funding_contract_violations_raise_once_and_return_nothing(case):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        body = {"retCode": 0, "retMsg": "OK", "time": T0,
                "result": {"category": "linear", "list": BAD_FUNDING[case]}}
        return httpx.Response(200, content=json.dumps(body).encode())

    async with BybitExchange(settings("http://fake.invalid"),
                             transport=httpx.MockTransport(handler)) as ex:
        with pytest.raises(ValidationError):
            await ex.funding_rates("ETHUSDT", T0 - 86_400_000, T0)
    assert ex.invalid_payloads == 1 and calls == [PATH]


def _ticker(**kw) -> dict:
    base = {"symbol": "BTCUSDT", "lastPrice": "100", "turnover24h": "1", "volume24h": "1"}
    return {**base, **kw}


def test_ticker_top_of_book_is_optional_but_validated():
    (t,) = parse_tickers({"list": [_ticker(bid1Price="99.5", ask1Price="100.5")]})
    assert (t.bid, t.ask) == (99.5, 100.5)
    for missing in ({}, {"bid1Price": "", "ask1Price": ""}):  # no book: no quote
        (t,) = parse_tickers({"list": [_ticker(**missing)]})
        assert t.bid is None and t.ask is None
    for bad in ({"bid1Price": "101", "ask1Price": "100"}, {"bid1Price": "-1"},
                {"ask1Price": "x"}, {"bid1Price": "inf"}, {"ask1Price": True}):
        with pytest.raises(ValidationError):
            parse_tickers({"list": [_ticker(**bad)]})


junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
row = st.fixed_dictionaries({}, optional={
    "symbol": st.sampled_from(["ETHUSDT", "BTCUSDT", ""]) | junk,
    "fundingRate": st.sampled_from(["0.0001", "-0.0002", "", "nan", "2"]) | junk,
    "fundingRateTimestamp": st.sampled_from([str(T0), str(T0 - 8 * HOUR), "x"]) | junk})


@hsettings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["list", "category"]),
                       st.lists(row, max_size=4) | junk, max_size=2))
def test_funding_parser_never_passes_junk_on(result):
    """Whatever comes back, the parser returns valid funding or raises ValidationError."""
    try:
        out = parse_funding_history(result, "ETHUSDT", T0 - 86_400_000, T0)
    except ValidationError:
        return
    times = [t for t, _ in out]
    assert times == sorted(set(times)) and all(T0 - 86_400_000 <= t <= T0 for t in times)
    assert all(isinstance(r, float) and abs(r) < 1 for _, r in out)


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_bybit_paper_charges_funding_from_the_venues_history():
    clock = {"ms": T0 + 7 * HOUR + 50 * MIN}
    now = lambda: clock["ms"] / 1000  # noqa: E731 - one clock for the server and the adapter
    market = SimMarket(7)
    async with fake_bybit(clock=now) as (app, url), \
            BybitExchange(settings(url), wall_clock=now) as ex:
        fill = await ex.place_order(OrderIntent("SOLUSDT", Side.BUY, D("4.0")))
        clock["ms"] = T0 + 7 * HOUR + 59 * MIN
        assert (await ex.balance()).wallet == D(100_000) - fill.fee
        assert app.stats.by_path[PATH] == 0  # no hour has begun: nothing to ask
        clock["ms"] = T0 + 8 * HOUR + MIN
        first = (await ex.balance()).wallet
        again = (await ex.balance()).wallet
        asked = app.stats.by_path[PATH]
    t = T0 + 8 * HOUR
    assert t % FUNDING_PERIOD_MS == 0
    due = funding_due(D("4.0"), D(str(market.last_price("SOLUSDT", t))),
                      D(str(market.funding_rate("SOLUSDT", t))))
    assert due != 0 and first == again == D(100_000) - fill.fee - due
    assert asked == 1


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_bybit_paper_waits_for_a_funding_rate_published_late_and_charges_it_once():
    """Bybit's funding history shows a funding time's rate a little after the moment. The paper
    account settled up to now with whatever rows were there, so a rate still missing was never
    charged; it now stops short of that time, asks again a minute later (not at every fill),
    and charges it once it is out."""
    from dataclasses import replace

    clock = {"ms": T0 + 7 * HOUR + 50 * MIN}
    now = lambda: clock["ms"] / 1000  # noqa: E731 - one clock for the server and the adapter
    market = SimMarket(7)
    async with fake_bybit(clock=now) as (app, url), \
            BybitExchange(settings(url), wall_clock=now) as ex:
        app.faults = replace(app.faults, funding_lag_s=150.0)
        fill = await ex.place_order(OrderIntent("SOLUSDT", Side.BUY, D("4.0")))
        clock["ms"] = T0 + 8 * HOUR + MIN  # 08:00 has passed; its rate is not out yet
        assert (await ex.balance()).wallet == D(100_000) - fill.fee
        assert (await ex.balance()).wallet == D(100_000) - fill.fee
        assert app.stats.by_path[PATH] == 1  # the second look did not ask again
        clock["ms"] = T0 + 8 * HOUR + 3 * MIN  # out now
        paid = (await ex.balance()).wallet
        again = (await ex.balance()).wallet
        asked = app.stats.by_path[PATH]
    t = T0 + 8 * HOUR
    due = funding_due(D("4.0"), D(str(market.last_price("SOLUSDT", t))),
                      D(str(market.funding_rate("SOLUSDT", t))))
    assert due != 0 and paid == again == D(100_000) - fill.fee - due
    assert asked == 2

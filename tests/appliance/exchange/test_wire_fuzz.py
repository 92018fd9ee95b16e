"""Fuzz of the Bybit v5 wire parsers (issue 11): junk and one-field mutations of the fake
Bybit's valid payloads either parse into data that keeps each parser's contract or raise
:class:`ValidationError`; never another exception. (The funding parser has its own fuzz in
``test_funding_wire.py``.)"""

from __future__ import annotations

import copy
import json
import math
from decimal import Decimal
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from appliance.domain import Instrument, Position, Ticker
from appliance.exchange import fake_bybit_market as market_api
from appliance.exchange.bybit_wire import (Envelope, OrderState, ValidationError, parse_envelope,
                                           parse_fee_rates, parse_instruments, parse_klines,
                                           parse_order_ack, parse_orders, parse_positions,
                                           parse_server_time, parse_tickers, parse_wallet)
from appliance.exchange.fake_bybit_account import Account
from appliance.exchange.simmarket import SimMarket
from models.funding import FUNDING_INTERVALS_MS

from tests.appliance.exchange.bybit_fixtures import T0

pytestmark = pytest.mark.slow

MIN = 60_000
NOW = T0 + 7 * MIN + 30_000
LO, HI = T0 - 10 * MIN, T0  # the kline window sent with the base page
EXAMPLES = 300

# -- valid payloads, as the fake Bybit serves them ---------------------------------------------

_MARKET = SimMarket(7)
_ACCOUNT = Account(_MARKET, lambda: NOW, starting_balance=100_000.0, taker_fee=0.00055,
                   slippage_bps=2.0)
_ACK = _ACCOUNT.create_order({"category": "linear", "symbol": "BTCUSDT", "side": "Buy",
                              "orderType": "Market", "qty": "0.01", "orderLinkId": "fuzz-1"})
_ACCOUNT.create_order({"category": "linear", "symbol": "ETHUSDT", "side": "Sell",
                       "orderType": "Market", "qty": "0.5"})

KLINES = market_api.klines(_MARKET, {"category": "linear", "symbol": "BTCUSDT", "interval": "1",
                                     "limit": "4", "end": str(T0)}, NOW)
INSTRUMENTS = market_api.instruments(_MARKET, {"category": "linear", "limit": "2"}, NOW)
TICKERS = {"category": "linear", "list": [
    market_api.ticker_item(_MARKET, s, NOW) for s in ("BTCUSDT", "ETHUSDT")]}
SERVER_TIME = market_api.server_time(NOW)
ORDERS = _ACCOUNT.open_orders({"category": "linear", "orderId": _ACK["orderId"]})
POSITIONS = _ACCOUNT.positions({"category": "linear", "settleCoin": "USDT"})
FEE_RATES = _ACCOUNT.fee_rates({"category": "linear"})
WALLET = _ACCOUNT.wallet({"accountType": "UNIFIED"})
ENVELOPE = {"retCode": 0, "retMsg": "OK", "result": TICKERS, "retExtInfo": {}, "time": NOW}

# -- junk and mutations ------------------------------------------------------------------------

#: strings and numbers that have broken number parsers somewhere
NASTY: list[Any] = [
    "", " ", "0", "-0", "-1", "1e-400", "1e400", "-1e400", "nan", "NaN", "-nan", "inf",
    "-inf", "Infinity", "sNaN", "abc", "1.5.1", "0x1A", "1_000", " 7 ", "--5", "+5", "²",
    "١٢٣", "5\x00", "9" * 400, "9" * 5000, "1" * 20 + ".5", True, False, None, 0, -1, 1.5, -0.0,
    1e308, -1e308, float("nan"), float("inf"), -float("inf"), 10**400, -(10**400), 2**63, [],
    {}, [1], {"a": 1}]

nasty = st.sampled_from(NASTY)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(-(10**400), 10**400)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8) | nasty)
junk = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8) | st.sampled_from(
                        ["list", "symbol", "coin", "orderId", "timeSecond", "timeNano"]),
                        inner, max_size=4), max_leaves=10)

Path = tuple[Any, ...]


def _paths(obj: Any, prefix: Path = ()) -> list[Path]:
    """Every place in a JSON-like value: the root, each dict value and each list item."""
    out = [prefix]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += _paths(value, (*prefix, i))
    return out


def _at(obj: Any, path: Path) -> Any:
    for key in path:
        obj = obj[key]
    return obj


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    """``base`` with one place changed: a key or item dropped, a value replaced by a nasty one,
    a list reversed, an item swapped, duplicated or repeated into a huge list."""
    payload = copy.deepcopy(base)
    path = draw(st.sampled_from(_paths(payload)))
    if not path:
        return draw(nasty | junk)
    parent, key = _at(payload, path[:-1]), path[-1]
    action = draw(st.sampled_from(["drop", "replace", "replace", "scramble", "duplicate",
                                   "huge"]))
    if action == "drop":
        del parent[key]
    elif action == "replace":
        parent[key] = draw(nasty | junk)
    elif isinstance(parent, list) and action == "scramble":
        other = draw(st.integers(0, len(parent) - 1))
        parent[key], parent[other] = parent[other], parent[key]
        if other == key:
            parent.reverse()
    elif isinstance(parent, list) and action == "duplicate":
        parent.insert(key, copy.deepcopy(parent[key]))
    elif isinstance(parent, list):
        parent[key:key + 1] = [copy.deepcopy(parent[key]) for _ in range(2000)]
    else:
        parent[key] = draw(nasty)
    return payload


def _with(base: Any, path: Path, value: Any) -> Any:
    """A copy of ``base`` with ``value`` at ``path`` (a regression example)."""
    payload = copy.deepcopy(base)
    _at(payload, path[:-1])[path[-1]] = value
    return payload


def payloads(base: dict[str, Any]) -> st.SearchStrategy[Any]:
    return junk | mutated(base) | st.just(copy.deepcopy(base))


def _outcome(parse: Callable[..., Any], *args: Any) -> Any | None:
    """The parser's result, or None when it refused the payload with ValidationError."""
    try:
        return parse(*args)
    except ValidationError:
        return None


def _strings_in(items: Any, *keys: str, optional: tuple[str, ...] = ()) -> None:
    """A payload that parsed held strings wherever the parser read a string field."""
    for item in items:
        for key in keys:
            assert isinstance(item[key], str), (key, item[key])
        for key in optional:
            assert isinstance(item.get(key, ""), str), (key, item[key])


def _finite_decimal(x: Any) -> bool:
    return isinstance(x, Decimal) and x.is_finite()


def _finite_float(x: Any) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_the_base_payloads_parse() -> None:
    assert parse_klines(KLINES, "BTCUSDT", MIN, LO, HI).shape == (4, 7)
    assert len(parse_instruments(INSTRUMENTS)[0]) == 2
    assert len(parse_tickers(TICKERS)) == 2
    assert parse_server_time(SERVER_TIME) == NOW
    assert parse_order_ack(_ACK) == _ACK["orderId"]
    assert parse_orders(ORDERS)[0].cum_qty == Decimal("0.01")
    assert {p.symbol: p.qty for p in parse_positions(POSITIONS)[0]} == {
        "BTCUSDT": Decimal("0.01"), "ETHUSDT": Decimal("-0.5")}
    assert parse_fee_rates(FEE_RATES)["BTCUSDT"] == 0.00055
    assert parse_wallet(WALLET, "USDT")[0] > 0
    assert parse_envelope(json.dumps(ENVELOPE).encode()).result == TICKERS


# -- the properties ----------------------------------------------------------------------------

def _deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=64)
       | st.builds(lambda p: json.dumps(p).encode(), mutated(ENVELOPE))
       | st.builds(lambda b, n: b[:n], st.just(json.dumps(ENVELOPE).encode()), st.integers(0, 400))
       | st.builds(_deep, st.integers(1, 200_000)))
@example(_deep(100_000))
def test_envelope_parser_never_passes_junk_on(body: bytes) -> None:
    env = _outcome(parse_envelope, body)
    if env is None:
        return
    assert isinstance(env, Envelope)
    assert type(env.ret_code) is int and isinstance(env.ret_msg, str)
    assert env.ret_code != 0 or isinstance(env.result, dict)
    assert env.time_ms is None or type(env.time_ms) is int


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(KLINES))
@example({"list": [[str(T0), 10**400, "2", "1", "1", "1", "1"]]})
def test_kline_parser_never_passes_junk_on(result: Any) -> None:
    arr = _outcome(parse_klines, result, "BTCUSDT", MIN, LO, HI)
    if arr is None:
        return
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64
    assert arr.ndim == 2 and arr.shape[1] == 7 and np.isfinite(arr).all()
    ts, o, h, lo, c, v, turnover = arr.T
    assert np.all(np.diff(ts) > 0) and np.all(ts % MIN == 0)
    assert np.all((ts >= LO) & (ts <= HI))
    assert np.all(lo > 0) and np.all(h >= np.maximum(o, c)) and np.all(lo <= np.minimum(o, c))
    assert np.all(v >= 0) and np.all(turnover >= 0)


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(SERVER_TIME))
@example({"timeNano": "²"})
@example({"timeSecond": "--5"})
@example({"timeSecond": "9" * 5000})
def test_server_time_parser_never_passes_junk_on(result: Any) -> None:
    ms = _outcome(parse_server_time, result)
    assert ms is None or type(ms) is int


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(INSTRUMENTS))
@example(_with(INSTRUMENTS, ("list", 0, "status"), True))
@example(_with(INSTRUMENTS, ("list", 1, "launchTime"), "9" * 5000))
def test_instrument_parser_never_passes_junk_on(result: Any) -> None:
    out = _outcome(parse_instruments, result)
    if out is None:
        return
    instruments, cursor = out
    assert isinstance(cursor, str)
    _strings_in(result["list"], "symbol", "status", "baseCoin", "quoteCoin")
    for i in instruments:
        assert isinstance(i, Instrument) and i.symbol
        assert all(_finite_decimal(x) and x > 0 for x in (i.tick_size, i.qty_step,
                                                          i.min_order_qty))
        assert type(i.launch_time) is int and type(i.delivery_time) is int
        assert i.funding_interval_ms in FUNDING_INTERVALS_MS


@pytest.mark.parametrize("minutes, hours", [(480, 8), ("240", 4), (60, 1), (None, 8)])
def test_an_instruments_funding_interval_is_read_in_whole_hours(minutes, hours) -> None:
    item = dict(INSTRUMENTS["list"][0], fundingInterval=minutes)
    if minutes is None:
        del item["fundingInterval"]  # not given: Bybit's usual 8 hours
    (inst,), _ = parse_instruments({"list": [item]})
    assert inst.funding_interval_ms == hours * 3_600_000


@pytest.mark.parametrize("minutes", [0, -480, 90, 1440, "8h"])
def test_a_funding_interval_off_the_hour_grid_fails_the_page(minutes) -> None:
    item = dict(INSTRUMENTS["list"][0], fundingInterval=minutes)
    with pytest.raises(ValidationError, match="fundingInterval"):
        parse_instruments({"list": [item]})


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(TICKERS))
@example({"list": [{"symbol": "BTCUSDT", "lastPrice": 10**400, "turnover24h": "1",
                    "volume24h": "1"}]})
@example(_with(TICKERS, ("list", 0, "symbol"), None))
def test_ticker_parser_never_passes_junk_on(result: Any) -> None:
    tickers = _outcome(parse_tickers, result)
    if tickers is None:
        return
    _strings_in(result["list"], "symbol")
    for t in tickers:
        assert isinstance(t, Ticker) and t.symbol
        assert _finite_float(t.last_price) and t.last_price > 0
        assert _finite_float(t.turnover_24h) and t.turnover_24h >= 0
        assert _finite_float(t.volume_24h) and t.volume_24h >= 0
        for quote in (t.bid, t.ask):
            assert quote is None or (_finite_float(quote) and quote > 0)
        assert t.bid is None or t.ask is None or t.bid <= t.ask


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(_ACK))
def test_order_ack_parser_never_passes_junk_on(result: Any) -> None:
    order_id = _outcome(parse_order_ack, result)
    assert order_id is None or (isinstance(order_id, str) and order_id)


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(ORDERS))
@example(_with(ORDERS, ("list", 0, "orderId"), True))
@example(_with(ORDERS, ("list", 0, "side"), "None"))
@example(_with(ORDERS, ("list", 0, "cumExecQty"), "-0.01"))
@example(_with(ORDERS, ("list", 0, "avgPrice"), ""))
def test_order_parser_never_passes_junk_on(result: Any) -> None:
    orders = _outcome(parse_orders, result)
    if orders is None:
        return
    _strings_in(result["list"], "orderId", "symbol", "side", "orderStatus",
                optional=("orderLinkId", "rejectReason"))
    for o in orders:
        assert isinstance(o, OrderState) and o.order_id and o.symbol
        assert o.side in ("Buy", "Sell")
        assert all(_finite_decimal(x) for x in (o.cum_qty, o.avg_price, o.fee))
        assert o.cum_qty >= 0 and o.avg_price >= 0
        assert o.cum_qty == 0 or o.avg_price > 0  # a fill has a price
        assert type(o.updated_ms) is int


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(POSITIONS))
@example(_with(POSITIONS, ("list", 0, "side"), ""))
@example(_with(POSITIONS, ("list", 1, "side"), "None"))
@example(_with(POSITIONS, ("list", 0, "avgPrice"), "0"))
@example(_with(POSITIONS, ("list", 0, "symbol"), None))
@example(_with(POSITIONS, ("nextPageCursor",), ["p2"]))
def test_position_parser_never_passes_junk_on(result: Any) -> None:
    out = _outcome(parse_positions, result)
    if out is None:
        return
    positions, cursor = out
    assert isinstance(cursor, str)
    _strings_in(result["list"], "symbol")
    raw = {item["symbol"]: item for item in result["list"]}
    for p in positions:
        assert isinstance(p, Position) and p.symbol and p.symbol in raw
        assert all(_finite_decimal(x) for x in (p.qty, p.avg_price, p.realized_pnl))
        assert p.qty != 0 and p.avg_price > 0
        side = raw[p.symbol]["side"]
        assert side == ("Buy" if p.qty > 0 else "Sell"), (side, p.qty)


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(FEE_RATES))
@example(_with(FEE_RATES, ("list", 0, "symbol"), True))
def test_fee_rate_parser_never_passes_junk_on(result: Any) -> None:
    rates = _outcome(parse_fee_rates, result)
    if rates is None:
        return
    _strings_in(result["list"], "symbol")
    assert all(isinstance(s, str) and s and _finite_float(r) and 0 <= r <= 0.01
               for s, r in rates.items())


@settings(max_examples=EXAMPLES, deadline=None)
@given(payloads(WALLET))
def test_wallet_parser_never_passes_junk_on(result: Any) -> None:
    out = _outcome(parse_wallet, result, "USDT")
    if out is None:
        return
    assert len(out) == 2 and all(_finite_decimal(x) for x in out)

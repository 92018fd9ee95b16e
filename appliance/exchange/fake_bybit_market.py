"""Market-data endpoints of the fake Bybit: SimMarket answers in v5 shapes.

Each function takes the parsed query parameters and the server's "now" (ms) and returns the
``result`` object, or raises :class:`ApiFault` with the retCode Bybit would send. Numbers are
strings, printed with the shortest decimal form that round-trips (no exponent), so a client
that parses them gets exactly SimMarket's floats.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Mapping

import numpy as np

from appliance.bars import aggregate_buckets
from appliance.exchange.bybit_wire import WIRE_MINUTES
from appliance.exchange.simmarket import DAY_MS, MINUTE_MS, SimMarket


class ApiFault(Exception):
    """A business error answered as HTTP 200 with this retCode."""

    def __init__(self, ret_code: int, ret_msg: str) -> None:
        super().__init__(ret_msg)
        self.ret_code = ret_code
        self.ret_msg = ret_msg


def num(x: float) -> str:
    text = repr(float(x))  # shortest round-trip form; exponent only for tiny or huge values
    if "e" in text or "n" in text:
        return np.format_float_positional(float(x), unique=True, trim="-")
    return text[:-2] if text.endswith(".0") else text


def nums(values: list[float]) -> list[str]:
    """:func:`num` of many floats (a kline page's column): one ``repr`` pass, and ``num`` only
    for the rare value that needs more (an exponent, a NaN)."""
    texts = list(map(repr, values))
    out = [t[:-2] if t.endswith(".0") else t for t in texts]
    joined = "".join(texts)
    if "e" in joined or "n" in joined:
        for i, t in enumerate(texts):
            if "e" in t or "n" in t:
                out[i] = num(values[i])
    return out


def dec(x: Decimal) -> str:
    return format(x, "f")


def int_param(params: Mapping[str, str], key: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = params.get(key)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiFault(10001, f"params error: {key} invalid") from None
    if not lo <= value <= hi:
        raise ApiFault(10001, f"params error: {key} must be in [{lo}, {hi}]")
    return value


def require_linear(params: Mapping[str, str], *, required: bool = True) -> None:
    category = params.get("category")
    if category in (None, "") and not required:
        return
    if category != "linear":
        raise ApiFault(10001, f"params error: category {category!r} invalid "
                              "(the fake serves linear only)")


def require_symbol(market: SimMarket, params: Mapping[str, str]) -> str:
    symbol = params.get("symbol", "")
    try:
        market.spec(symbol)
    except KeyError:
        raise ApiFault(10001, "params error: symbol invalid") from None
    return symbol


def server_time(now_ms: int) -> dict[str, Any]:
    return {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}


# -- klines -----------------------------------------------------------------------------------

def _minutes_with_open_stub(market: SimMarket, symbol: str, lo: int, hi: int,
                            now_ms: int) -> np.ndarray:
    """1m rows in [lo, hi); the minute still open at ``now_ms`` is a stub o=h=l=c=open, no
    volume, so nothing from the future leaks."""
    current = now_ms - now_ms % MINUTE_MS
    arr = market.candles(symbol, lo, min(hi, current + MINUTE_MS))
    if len(arr) and int(arr[-1, 0]) == current:
        arr = arr.copy()
        arr[-1, 2:5] = arr[-1, 1]
        arr[-1, 5:7] = 0.0
    return arr


def klines(market: SimMarket, params: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    """Rows with startTime in [start, end], newest first, at most ``limit``.

    With ``end`` (or neither), the newest ``limit`` rows up to ``end``/now; with only
    ``start``, the first ``limit`` rows from ``start``. Minutes when the symbol was delisted
    are absent, so such a window can hold fewer rows.
    """
    require_linear(params, required=False)
    symbol = require_symbol(market, params)
    interval = params.get("interval", "")
    if interval not in WIRE_MINUTES:
        raise ApiFault(10001, "params error: intervalTime is invalid")
    bucket = WIRE_MINUTES[interval] * MINUTE_MS
    limit = int_param(params, "limit", 200, 1, 1000)
    start = int_param(params, "start", None, 0, 2**62)
    end = int_param(params, "end", None, 0, 2**62)
    assert limit is not None
    if start is not None and end is not None and end < start:
        raise ApiFault(10001, "params error: end must not be before start")
    if end is not None or start is None:
        hi = min(end if end is not None else now_ms, now_ms)
        hi_bucket = hi - hi % bucket
        lo_bucket = hi_bucket - (limit - 1) * bucket
        if start is not None:
            lo_bucket = max(lo_bucket, start + (-start) % bucket)
    else:
        lo_bucket = start + (-start) % bucket
        hi_bucket = min(lo_bucket + (limit - 1) * bucket, now_ms - now_ms % bucket)
    rows: list[list[str]] = []
    if hi_bucket >= lo_bucket:
        arr = aggregate_buckets(_minutes_with_open_stub(market, symbol, lo_bucket,
                                                        hi_bucket + bucket, now_ms), bucket)
        arr = arr[::-1][:limit]
        columns = [list(map(str, arr[:, 0].astype(np.int64).tolist())),
                   *(nums(arr[:, j].tolist()) for j in range(1, 7))]
        rows = [list(r) for r in zip(*columns)]
    return {"symbol": symbol, "category": "linear", "list": rows}


# -- instruments and tickers ------------------------------------------------------------------

def _instrument_item(market: SimMarket, symbol: str, status: str, launch: int,
                     delivery: int = 0) -> dict[str, Any]:
    tick, step = market.tick(symbol), market.qty_step(symbol)
    return {
        "symbol": symbol, "contractType": "LinearPerpetual", "status": status,
        "baseCoin": symbol[:-4], "quoteCoin": "USDT", "settleCoin": "USDT",
        "launchTime": str(launch), "deliveryTime": str(delivery), "deliveryFeeRate": "",
        "priceScale": str(max(0, -tick.as_tuple().exponent)),  # type: ignore[operator]
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "50.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": dec(tick), "maxPrice": dec(tick * 10**7), "tickSize": dec(tick)},
        "lotSizeFilter": {"maxOrderQty": dec(step * 10**6), "minOrderQty": dec(step),
                          "qtyStep": dec(step), "postOnlyMaxOrderQty": dec(step * 10**6),
                          "maxMktOrderQty": dec(step * 10**5), "minNotionalValue": "5"},
        "unifiedMarginTrade": True, "copyTrading": "both",
        "fundingInterval": market.funding_interval(symbol) // 60_000,
        "upperFundingRate": "0.005", "lowerFundingRate": "-0.005", "isPreListing": False,
        "preListingInfo": None,
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.1"},
        "displayName": "", "forbidUplWithdrawal": False, "symbolType": "",
    }


def instruments(market: SimMarket, params: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    require_linear(params)
    limit = int_param(params, "limit", 500, 1, 1000)
    assert limit is not None
    status = params.get("status") or "Trading"
    wanted = params.get("symbol")
    items = [i for i in market.instruments(now_ms)
             if i.status == status and (not wanted or i.symbol == wanted)]
    cursor = params.get("cursor") or ""
    offset = 0
    if cursor:
        if not (cursor.startswith("p") and cursor[1:].isdigit()):
            raise ApiFault(10001, "params error: cursor invalid")
        offset = int(cursor[1:])
    page = items[offset:offset + limit]
    nxt = f"p{offset + limit}" if offset + limit < len(items) else ""
    return {"category": "linear", "nextPageCursor": nxt,
            "list": [_instrument_item(market, i.symbol, i.status, i.launch_time, i.delivery_time)
                     for i in page]}


def ticker_item(market: SimMarket, symbol: str, now_ms: int) -> dict[str, Any] | None:
    end = now_ms - now_ms % MINUTE_MS
    arr = market.candles(symbol, end - DAY_MS, end)
    if not len(arr):
        return None
    last, prev = float(arr[-1, 4]), float(arr[0, 1])
    bid, ask = market.quote(symbol, last)
    hour = arr[arr[:, 0] >= end - 60 * MINUTE_MS]
    funding_period = market.funding_interval(symbol)
    next_funding = now_ms - now_ms % funding_period + funding_period
    return {
        "symbol": symbol, "lastPrice": num(last), "indexPrice": num(last), "markPrice": num(last),
        "prevPrice24h": num(prev), "price24hPcnt": f"{last / prev - 1:.4f}",
        "highPrice24h": num(arr[:, 2].max()), "lowPrice24h": num(arr[:, 3].min()),
        "prevPrice1h": num(hour[0, 1] if len(hour) else last),
        "openInterest": num(round(float(arr[:, 5].sum()) * 0.1, 3)),
        "openInterestValue": num(round(float(arr[:, 6].sum()) * 0.1, 2)),
        "turnover24h": num(arr[:, 6].sum()), "volume24h": num(arr[:, 5].sum()),
        "fundingRate": num(market.funding_rate(symbol, next_funding)),
        "nextFundingTime": str(next_funding),
        "predictedDeliveryPrice": "", "basisRate": "", "basis": "", "deliveryFeeRate": "",
        "deliveryTime": "0", "bid1Price": num(bid), "bid1Size": "10",
        "ask1Price": num(ask), "ask1Size": "10", "preOpenPrice": "",
        "preQty": "", "curPreListingPhase": "",
        "fundingIntervalHour": str(funding_period // 3_600_000), "fundingCap": "0.005",
        "basisRateYear": "",
    }


def tickers(market: SimMarket, params: Mapping[str, str], now_ms: int) -> dict[str, Any]:
    require_linear(params)
    wanted = params.get("symbol")
    if wanted:
        symbols = [require_symbol(market, params)]
    else:
        symbols = market.symbols()
        end = now_ms - now_ms % MINUTE_MS
        market.precompute(end - DAY_MS, end)
    items = [ticker_item(market, s, now_ms) for s in symbols if market.listed(s, now_ms)]
    return {"category": "linear", "list": [i for i in items if i is not None]}


# -- funding history --------------------------------------------------------------------------

def funding_history(market: SimMarket, params: Mapping[str, str], now_ms: int
                    ) -> dict[str, Any]:
    """The sim's funding rates settled in [startTime, endTime] (never after now), newest
    first, at most ``limit`` (1..200, default 200): the newest ``limit`` up to the end. As on
    Bybit, ``startTime`` without ``endTime`` is an error; without either, the newest up to
    now."""
    require_linear(params)
    symbol = require_symbol(market, params)
    limit = int_param(params, "limit", 200, 1, 200)
    start = int_param(params, "startTime", None, 0, 2**62)
    end = int_param(params, "endTime", None, 0, 2**62)
    assert limit is not None
    if start is not None and end is None:
        raise ApiFault(10001, "params error: endTime is required with startTime")
    hi = min(end if end is not None else now_ms, now_ms)
    if start is not None and hi < start:
        raise ApiFault(10001, "params error: endTime must not be before startTime")
    lo = hi - limit * market.funding_interval(symbol)  # the newest ``limit`` times up to hi
    if start is not None:
        lo = max(lo, start - 1)
    rows = market.funding_rates(symbol, lo, hi)[::-1][:limit]
    return {"category": "linear",
            "list": [{"symbol": symbol, "fundingRate": num(rate),
                      "fundingRateTimestamp": str(t)} for t, rate in rows]}

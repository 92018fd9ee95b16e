"""The Bybit v5 wire format: signing, query strings and validation of every payload we accept.

Pure functions, no I/O: the adapter (:mod:`appliance.exchange.bybit`) and the fake server
(:mod:`appliance.exchange.fake_bybit`) share one definition of the wire, and tests feed the
parsers hostile input directly. Facts and sources: ``docs/bybit_v5.md``.

Every parser raises :class:`ValidationError` on anything it does not fully understand, so a
malformed or out-of-order payload can never reach storage.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping
from urllib.parse import quote

import numpy as np

from appliance.domain import Instrument, Position, Ticker
from appliance.exchange.base import ExchangeError, RateLimited
from models.funding import FUNDING_INTERVALS_MS, FUNDING_PERIOD_MS

MINUTE_MS = 60_000

#: domain interval → (wire interval, length in ms). Bybit's W and M are not fixed-length.
INTERVALS: dict[str, tuple[str, int]] = {
    "1m": ("1", MINUTE_MS), "3m": ("3", 3 * MINUTE_MS), "5m": ("5", 5 * MINUTE_MS),
    "15m": ("15", 15 * MINUTE_MS), "30m": ("30", 30 * MINUTE_MS), "1h": ("60", 60 * MINUTE_MS),
    "2h": ("120", 120 * MINUTE_MS), "4h": ("240", 240 * MINUTE_MS),
    "6h": ("360", 360 * MINUTE_MS), "12h": ("720", 720 * MINUTE_MS),
    "1d": ("D", 1440 * MINUTE_MS),
}
#: wire interval → minutes
WIRE_MINUTES: dict[str, int] = {wire: ms // MINUTE_MS for wire, ms in INTERVALS.values()}

#: order states after which nothing more will fill
TERMINAL_ORDER_STATES = frozenset(
    {"Filled", "Cancelled", "PartiallyFilledCanceled", "Rejected", "Deactivated"})


class ValidationError(ExchangeError):
    """A payload broke the v5 contract (shape, types, ordering or price sanity)."""


class MalformedResponse(ValidationError):
    """The body is not a v5 envelope at all (bad JSON, truncated): worth retrying."""


class BybitApiError(ExchangeError):
    """Bybit answered with a non-zero ``retCode``."""

    def __init__(self, path: str, ret_code: int, ret_msg: str) -> None:
        super().__init__(f"{path}: retCode {ret_code}: {ret_msg}")
        self.path = path
        self.ret_code = ret_code
        self.ret_msg = ret_msg


AUTH_RET_CODES = frozenset({10003, 10004, 10005, 10010})
"""The key is invalid (or for the other network), the signature is wrong (the secret), the key
lacks a permission, or it is bound to other IP addresses: no retry mends them."""


class BybitAuthError(BybitApiError):
    """Bybit refused the API key (:data:`AUTH_RET_CODES`, or HTTP 401).

    ``fatal``: not an outage to wait out. Until an operator fixes the key nothing private
    works (no order, no position, no balance), so ``run`` stops with maintenance mode ON and
    says what to check."""

    fatal = True

    def __init__(self, path: str, ret_code: int, ret_msg: str) -> None:
        super().__init__(path, ret_code, ret_msg)
        self.args = (f"Bybit refused the API key ({path}: retCode {ret_code}: {ret_msg}); check "
                     "BYBIT_API_KEY / BYBIT_API_SECRET (or bybit.key_file), bybit.network "
                     "(mainnet or testnet keys), the key's permissions and its IP whitelist; "
                     "the appliance stopped with maintenance mode ON",)


class BybitRateLimited(BybitApiError, RateLimited):
    """retCode 10006: too many visits to one endpoint."""


# -- signing -----------------------------------------------------------------------------------

def sign(secret: str, timestamp: str, api_key: str, recv_window: str, payload: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``timestamp + api_key + recv_window + payload``."""
    message = f"{timestamp}{api_key}{recv_window}{payload}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def query_string(params: Mapping[str, object]) -> str:
    """Sorted, percent-encoded ``k=v&...`` with ``None`` dropped.

    Build it once, sign it and send exactly this string (httpx's ``params=`` would re-encode).
    """
    parts = []
    for key in sorted(params):
        value = params[key]
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        parts.append(f"{quote(str(key), safe='')}={quote(str(value), safe='')}")
    return "&".join(parts)


def json_body(params: Mapping[str, object]) -> str:
    return json.dumps({k: v for k, v in params.items() if v is not None}, separators=(",", ":"))


# -- primitives --------------------------------------------------------------------------------

#: an integer as Bybit writes one: ASCII digits with an optional minus (``str.isdigit`` also
#: accepts "²" and other digits that ``int`` refuses)
_INTEGER = re.compile(r"-?[0-9]+")


def _shown(value: object) -> str:
    """``repr(value)``, cut to 60 characters: a 5000-digit number stays readable in a log."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _field(obj: Mapping[str, Any], key: str, what: str) -> Any:
    if not isinstance(obj, Mapping):
        raise ValidationError(f"{what}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise ValidationError(f"{what}: missing field {key!r}")
    return obj[key]


def to_float(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValidationError(f"{what}: expected a number, got {value!r}")
    try:
        out = float(value)
    except ValueError:
        raise ValidationError(f"{what}: not a number: {value!r}") from None
    except OverflowError:
        raise ValidationError(f"{what}: not finite: {_shown(value)} is too large for a "
                              "float") from None
    if not math.isfinite(out):
        raise ValidationError(f"{what}: not finite: {value!r}")
    return out


def to_int(value: object, what: str) -> int:
    if isinstance(value, bool):
        raise ValidationError(f"{what}: expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        try:
            return int(value)
        except ValueError:  # more digits than Python converts
            raise ValidationError(f"{what}: an integer of {len(value.strip())} characters "
                                  f"is not a timestamp or count: {_shown(value)}") from None
    raise ValidationError(f"{what}: expected an integer, got {_shown(value)}")


def to_decimal(value: object, what: str, *, allow_empty: bool = False) -> Decimal:
    if allow_empty and value in ("", None):
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(f"{what}: expected a decimal string, got {value!r}")
    try:
        out = Decimal(str(value))
    except InvalidOperation:
        raise ValidationError(f"{what}: not a decimal: {value!r}") from None
    if not out.is_finite():
        raise ValidationError(f"{what}: not finite: {value!r}")
    return out


def to_str(value: object, what: str, *, empty: bool = True) -> str:
    """A string field (symbols, ids, states); ``empty=False`` also refuses ""."""
    if not isinstance(value, str) or (not empty and not value):
        raise ValidationError(f"{what}: expected a{'' if empty else ' non-empty'} string, "
                              f"got {_shown(value)}")
    return value


def _list(result: Mapping[str, Any], what: str) -> list[Any]:
    rows = _field(result, "list", what)
    if not isinstance(rows, list):
        raise ValidationError(f"{what}: 'list' is {type(rows).__name__}, expected a list")
    return rows


# -- envelope ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Envelope:
    ret_code: int
    ret_msg: str
    result: Any
    time_ms: int | None


def parse_envelope(body: bytes) -> Envelope:
    """Decode ``{"retCode","retMsg","result","retExtInfo","time"}``; raise MalformedResponse."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # too deep: RecursionError
        raise MalformedResponse(f"response is not JSON ({exc}); first bytes {body[:60]!r}") from None
    if not isinstance(data, dict):
        raise MalformedResponse(f"response is {type(data).__name__}, expected an object")
    code = data.get("retCode")
    if isinstance(code, bool) or not isinstance(code, int):
        raise MalformedResponse(f"retCode missing or not an integer: {code!r}")
    msg = data.get("retMsg", "")
    if not isinstance(msg, str):
        raise MalformedResponse(f"retMsg is not a string: {msg!r}")
    result = data.get("result", {})
    if code == 0 and not isinstance(result, dict):
        raise MalformedResponse(f"result is {type(result).__name__}, expected an object")
    t = data.get("time")
    time_ms = t if isinstance(t, int) and not isinstance(t, bool) else None
    return Envelope(code, msg, result, time_ms)


# -- market data -------------------------------------------------------------------------------

def _seven_columns(rows: list[Any], what: str) -> np.ndarray:
    """The rows as an (n, 7) float array. Bybit sends exactly 7 string fields a row: the whole
    page converts in one numpy call; anything else (a longer or shorter row, a non-list, a
    field that is no number) takes the careful path, which names the offending row."""
    try:
        arr = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is not None and arr.ndim == 2 and arr.shape[1] == 7:
        return arr
    if any(not isinstance(r, (list, tuple)) or len(r) < 7 for r in rows):
        i = next(i for i, r in enumerate(rows) if not isinstance(r, (list, tuple)) or len(r) < 7)
        raise ValidationError(f"{what}: row {i} is not a 7-field list: {rows[i]!r}")
    try:
        return np.array([r[:7] for r in rows], dtype=np.float64)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValidationError(f"{what}: a row holds a non-numeric or out-of-range field "
                              f"({exc})") from None


def parse_klines(result: Mapping[str, Any], symbol: str, interval_ms: int,
                 lo_ms: int, hi_ms: int) -> np.ndarray:
    """Validate one kline page for the window [lo_ms, hi_ms] (inclusive, as sent).

    The page must be newest first with strictly decreasing open times, each aligned to the
    interval and inside the window, with sane OHLC. Returns an (n, 7) array oldest first:
    open_time, open, high, low, close, volume, turnover. Checked with numpy, a column at a
    time: a 1000-row page costs well under a millisecond, so parsing never paces a backfill.
    """
    what = f"kline {symbol}"
    got = result.get("symbol") if isinstance(result, Mapping) else None
    if got not in (None, "", symbol):
        raise ValidationError(f"{what}: page is for symbol {got!r}")
    rows = _list(result, what)
    if not rows:
        return np.zeros((0, 7))
    arr = _seven_columns(rows, what)

    def first(mask: np.ndarray, message: str) -> None:
        if mask.any():
            i = int(np.argmax(mask))
            raise ValidationError(f"{what}: row {i} {message}: {rows[i]!r}")

    first(~np.isfinite(arr).all(axis=1), "has a missing or non-finite field")
    ts, o, h, lo, c, v, t = arr.T
    first(ts != np.floor(ts), "startTime is not an integer")
    first(ts % interval_ms != 0, "startTime is not on the interval grid")
    first((ts < lo_ms) | (ts > hi_ms), f"startTime is outside [{lo_ms}, {hi_ms}]")
    step = np.diff(ts)
    first(np.concatenate([[False], step == 0]), "startTime is a duplicate")
    first(np.concatenate([[False], step > 0]), "startTime is out-of-order (not newest first)")
    first((lo <= 0) | (h < lo) | (h < np.maximum(o, c)) | (lo > np.minimum(o, c)),
          "has impossible prices")
    first((v < 0) | (t < 0), "has negative volume/turnover")
    return arr[::-1].copy()


def parse_server_time(result: Mapping[str, Any]) -> int:
    nano = result.get("timeNano") if isinstance(result, Mapping) else None
    if nano not in (None, ""):
        return to_int(nano, "market time timeNano") // 1_000_000
    return to_int(_field(result, "timeSecond", "market time"), "market time timeSecond") * 1000


def parse_instruments(result: Mapping[str, Any]) -> tuple[list[Instrument], str]:
    """One instruments-info page and its ``nextPageCursor`` ("" on the last page)."""
    out = []
    for i, item in enumerate(_list(result, "instruments")):
        what = f"instrument {i}"
        symbol = _field(item, "symbol", what)
        if not isinstance(symbol, str) or not symbol:
            raise ValidationError(f"{what}: bad symbol {symbol!r}")
        what = f"instrument {symbol}"
        price_filter = _field(item, "priceFilter", what)
        lot = _field(item, "lotSizeFilter", what)
        tick = to_decimal(_field(price_filter, "tickSize", what), f"{what} tickSize")
        step = to_decimal(_field(lot, "qtyStep", what), f"{what} qtyStep")
        min_qty = to_decimal(_field(lot, "minOrderQty", what), f"{what} minOrderQty")
        if tick <= 0 or step <= 0 or min_qty <= 0:
            raise ValidationError(f"{what}: tick/step/min qty must be positive")
        out.append(Instrument(
            symbol=symbol, status=to_str(_field(item, "status", what), f"{what} status"),
            base_coin=to_str(_field(item, "baseCoin", what), f"{what} baseCoin"),
            quote_coin=to_str(_field(item, "quoteCoin", what), f"{what} quoteCoin"),
            tick_size=tick, qty_step=step, min_order_qty=min_qty,
            launch_time=to_int(_field(item, "launchTime", what), f"{what} launchTime"),
            delivery_time=to_int(item.get("deliveryTime") or "0", f"{what} deliveryTime"),
            funding_interval_ms=_funding_interval(item, what)))
    cursor = result.get("nextPageCursor", "") or ""
    if not isinstance(cursor, str):
        raise ValidationError(f"instruments: nextPageCursor is not a string: {cursor!r}")
    return out, cursor


def _funding_interval(item: Mapping[str, Any], what: str) -> int:
    """The instrument's ``fundingInterval`` (minutes) in ms: 8 hours where it is not given; one
    that is not a whole number of hours dividing a day would put funding off the hour grid that
    every book and the venue pay on, so it fails the page."""
    raw = item.get("fundingInterval")
    if raw in (None, ""):
        return FUNDING_PERIOD_MS
    minutes = to_int(raw, f"{what} fundingInterval")
    if minutes * 60_000 not in FUNDING_INTERVALS_MS:
        raise ValidationError(f"{what}: fundingInterval {minutes} is not 60, 120, 240 or 480 "
                              "minutes")
    return minutes * 60_000


def parse_tickers(result: Mapping[str, Any]) -> list[Ticker]:
    out = []
    for i, item in enumerate(_list(result, "tickers")):
        symbol = to_str(_field(item, "symbol", f"ticker {i}"), f"ticker {i} symbol", empty=False)
        what = f"ticker {symbol}"
        last = to_float(_field(item, "lastPrice", what), f"{what} lastPrice")
        if last <= 0:
            raise ValidationError(f"{what}: lastPrice {last} is not positive")
        turnover = to_float(_field(item, "turnover24h", what), f"{what} turnover24h")
        volume = to_float(_field(item, "volume24h", what), f"{what} volume24h")
        if turnover < 0 or volume < 0:
            raise ValidationError(f"{what}: negative 24h volume/turnover")
        bid, ask = _top_of_book(item, what)
        out.append(Ticker(symbol, last, turnover, volume, bid, ask))
    return out


def _top_of_book(item: Mapping[str, Any], what: str) -> tuple[float | None, float | None]:
    """``bid1Price``/``ask1Price``: optional (absent or "" when the book is empty), positive,
    and not crossed when both are there."""
    prices = []
    for key in ("bid1Price", "ask1Price"):
        raw = item.get(key)
        if raw in (None, ""):
            prices.append(None)
            continue
        price = to_float(raw, f"{what} {key}")
        if price <= 0:
            raise ValidationError(f"{what}: {key} {price} is not positive")
        prices.append(price)
    bid, ask = prices
    if bid is not None and ask is not None and bid > ask:
        raise ValidationError(f"{what}: crossed book, bid1Price {bid} > ask1Price {ask}")
    return bid, ask


#: Bybit caps funding far below this; a larger rate is a broken payload, not a market
MAX_FUNDING_RATE = 1.0


def parse_funding_history(result: Mapping[str, Any], symbol: str, lo_ms: int,
                          hi_ms: int) -> list[tuple[int, float]]:
    """Validate one ``/v5/market/funding/history`` page for the window [lo_ms, hi_ms] (as
    sent): rows for ``symbol``, newest first with strictly decreasing times inside the window,
    finite rates below :data:`MAX_FUNDING_RATE` in size. Returns (time, rate), oldest first."""
    what = f"funding history {symbol}"
    out: list[tuple[int, float]] = []
    for i, item in enumerate(_list(result, what)):
        row = f"{what} row {i}"
        got = _field(item, "symbol", row)
        if got != symbol:
            raise ValidationError(f"{row}: is for symbol {got!r}")
        t = to_int(_field(item, "fundingRateTimestamp", row), f"{row} fundingRateTimestamp")
        rate = to_float(_field(item, "fundingRate", row), f"{row} fundingRate")
        if not lo_ms <= t <= hi_ms:
            raise ValidationError(f"{row}: fundingRateTimestamp {t} is outside "
                                  f"[{lo_ms}, {hi_ms}]")
        if out and t >= out[-1][0]:
            raise ValidationError(f"{row}: fundingRateTimestamp {t} is out-of-order (not "
                                  "newest first, or a duplicate)")
        if abs(rate) >= MAX_FUNDING_RATE:
            raise ValidationError(f"{row}: fundingRate {rate} is not a funding rate")
        out.append((t, rate))
    return out[::-1]


# -- trading and account -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class OrderState:
    order_id: str
    order_link_id: str
    symbol: str
    side: str
    status: str
    cum_qty: Decimal
    avg_price: Decimal
    fee: Decimal
    updated_ms: int
    reject_reason: str


def parse_order_ack(result: Mapping[str, Any]) -> str:
    order_id = _field(result, "orderId", "order ack")
    if not isinstance(order_id, str) or not order_id:
        raise ValidationError(f"order ack: bad orderId {order_id!r}")
    return order_id


def parse_orders(result: Mapping[str, Any]) -> list[OrderState]:
    """Order states; an executed quantity is not negative and has a positive average price
    (a unified account always sends one), so no fill is booked at price 0."""
    out = []
    for i, item in enumerate(_list(result, "orders")):
        what = f"order {i}"
        side = _field(item, "side", what)
        if side not in ("Buy", "Sell"):
            raise ValidationError(f"{what}: side {_shown(side)} is neither Buy nor Sell")
        state = OrderState(
            order_id=to_str(_field(item, "orderId", what), f"{what} orderId", empty=False),
            order_link_id=to_str(item.get("orderLinkId", ""), f"{what} orderLinkId"),
            symbol=to_str(_field(item, "symbol", what), f"{what} symbol", empty=False),
            side=side,
            status=to_str(_field(item, "orderStatus", what), f"{what} orderStatus"),
            cum_qty=to_decimal(_field(item, "cumExecQty", what), f"{what} cumExecQty",
                               allow_empty=True),
            avg_price=to_decimal(_field(item, "avgPrice", what), f"{what} avgPrice",
                                 allow_empty=True),
            fee=to_decimal(_field(item, "cumExecFee", what), f"{what} cumExecFee",
                           allow_empty=True),
            updated_ms=to_int(_field(item, "updatedTime", what), f"{what} updatedTime"),
            reject_reason=to_str(item.get("rejectReason", ""), f"{what} rejectReason"))
        filled, price = state.cum_qty, state.avg_price
        if filled < 0 or price < 0 or (filled > 0 and price == 0):
            raise ValidationError(f"{what}: cumExecQty {filled} at avgPrice {price} is not a "
                                  "fill")
        out.append(state)
    return out


def parse_positions(result: Mapping[str, Any]) -> tuple[list[Position], str]:
    out = []
    for i, item in enumerate(_list(result, "positions")):
        symbol = to_str(_field(item, "symbol", f"position {i}"), f"position {i} symbol",
                        empty=False)
        what = f"position {symbol}"
        size = to_decimal(_field(item, "size", what), f"{what} size")
        side = _field(item, "side", what)
        if size < 0 or side not in ("Buy", "Sell", "", "None"):
            raise ValidationError(f"{what}: bad side/size {side!r}/{size}")
        if size == 0:
            continue
        if side not in ("Buy", "Sell"):  # an open position has a side: "" is not a short
            raise ValidationError(f"{what}: size {size} with side {side!r}, not Buy or Sell")
        avg_price = to_decimal(_field(item, "avgPrice", what), f"{what} avgPrice")
        if avg_price <= 0:
            raise ValidationError(f"{what}: avgPrice {avg_price} of an open position is not "
                                  "positive")
        out.append(Position(
            symbol, size if side == "Buy" else -size, avg_price,
            to_decimal(item.get("cumRealisedPnl", ""), f"{what} cumRealisedPnl",
                       allow_empty=True)))
    cursor = result.get("nextPageCursor", "") or ""
    if not isinstance(cursor, str):
        raise ValidationError(f"positions: nextPageCursor is not a string: {_shown(cursor)}")
    return out, cursor


def parse_fee_rates(result: Mapping[str, Any]) -> dict[str, float]:
    """``/v5/account/fee-rate``: the taker fee rate per symbol (a fraction, in [0, 1%])."""
    out = {}
    for i, item in enumerate(_list(result, "fee-rate")):
        symbol = to_str(_field(item, "symbol", f"fee-rate {i}"), f"fee-rate {i} symbol",
                        empty=False)
        taker = to_float(_field(item, "takerFeeRate", f"fee-rate {symbol}"),
                         f"fee-rate {symbol} takerFeeRate")
        if not 0.0 <= taker <= 0.01:
            raise ValidationError(f"fee-rate {symbol}: takerFeeRate {taker} is not a fee rate")
        out[symbol] = taker
    return out


def parse_wallet(result: Mapping[str, Any], coin: str) -> tuple[Decimal, Decimal]:
    """(wallet balance, equity) of ``coin`` in the first account of a wallet-balance result."""
    accounts = _list(result, "wallet")
    if not accounts:
        raise ValidationError("wallet: no account in the result")
    coins = _field(accounts[0], "coin", "wallet")
    if not isinstance(coins, list):
        raise ValidationError("wallet: 'coin' is not a list")
    for item in coins:
        if isinstance(item, Mapping) and item.get("coin") == coin:
            return (to_decimal(_field(item, "walletBalance", f"wallet {coin}"),
                               f"wallet {coin} walletBalance"),
                    to_decimal(_field(item, "equity", f"wallet {coin}"), f"wallet {coin} equity"))
    return Decimal(0), Decimal(0)

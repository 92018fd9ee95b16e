"""The ``bybit`` exchange: Bybit v5 REST over httpx on trio, with paper fills by default.

Signed calls use httpx, not pybit in a worker thread. Reasons:

* one client, one :class:`~appliance.exchange.ratelimit.RateLimiter`: every request — public
  or signed — takes a permit with its priority and feeds the ``X-Bapi-Limit*`` headers back;
  pybit only sees headers when asked to return them and has no limiter of its own;
* pybit's retries block its thread in ``time.sleep`` (3 s per retry, and a reset timestamp in
  the past crashes it), it does not retry 5xx or dropped sockets, and an order sent from a
  worker thread cannot be cancelled cleanly — here an order is a shielded trio task with one
  deadline, and retries are idempotent through ``orderLinkId``;
* signing is a few lines (:func:`~appliance.exchange.bybit_wire.sign`) and the tests prove it
  against the fake server, which pybit's own signed requests also pass.

pybit stays useful as an independent client: the tests point it at the fake server to prove
wire compatibility.

Every response is validated (:mod:`appliance.exchange.bybit_wire`); a malformed or
out-of-order payload raises :class:`ValidationError`, increments ``invalid_payloads`` and is
logged — nothing from it is returned. Truncated bodies and bad JSON are retried like 5xx;
content that breaks the contract (unsorted pages, high < low) fails at once. Secrets are
never logged or part of a repr, and the API key is cut out of any server message.

A venue that is down fails a call within a bound, never hangs it: 5xx answers and dropped
connections are retried ``max_retries`` times with jittered backoff, and a request that gets no
answer within ``timeout_s`` (a stalled venue) is tried at most ``max_timeouts`` times; then the
call raises :class:`ExchangeError`, which the services take as an outage
(:mod:`appliance.outage`: degraded, retried, not crashed). A rate-limit refusal (retCode
10006, HTTP 403/429) is a :class:`~appliance.exchange.base.RateLimited`; inside
:func:`~appliance.exchange.base.yielding_to_rate_limits` (discovery) it is not retried at all.

Paper mode charges what the venue would: fills cross the half spread of the last quoted
bid/ask (0 before a ticker with a book was seen), and open positions pay funding at each
funding time, at the rate from ``/v5/market/funding/history`` and the close of the 1m candle
ending then. Those are fetched only when a whole hour (every Bybit funding schedule is on the
hour) has begun since funding was last settled, before a fill, a balance or a positions call.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import httpx
import numpy as np
import trio

from appliance.domain import (Balance, Candle, Fill, Instrument, OrderIntent, Position, Side,
                              Ticker)
from appliance.exchange.base import (PAPER, REAL_TIME, VOLUME_BAR, ExchangeError, RateLimited,
                                     yields_to_rate_limits)
from appliance.exchange.bybit_wire import (AUTH_RET_CODES, INTERVALS, TERMINAL_ORDER_STATES,
                                           BybitApiError, BybitAuthError,
                                           BybitRateLimited,
                                           Envelope, MalformedResponse, OrderState,
                                           ValidationError, json_body, parse_envelope,
                                           parse_fee_rates, parse_funding_history,
                                           parse_instruments,
                                           parse_klines, parse_order_ack,
                                           parse_orders, parse_positions, parse_server_time,
                                           parse_tickers, parse_wallet, query_string, sign)
from appliance.exchange.paper import PaperBroker
from appliance.exchange.ratelimit import Priority, RateLimiter, parse_limit_headers
from models.costs import quoted_half_spread
from models.funding import FUNDING_GRACE_MS, FUNDING_PERIOD_MS, funding_times

__all__ = ["BybitExchange", "BybitSettings", "BybitApiError", "ValidationError"]

log = logging.getLogger(__name__)

HOSTS = {"mainnet": "https://api.bybit.com", "testnet": "https://api-testnet.bybit.com",
         "demo": "https://api-demo.bybit.com"}
PAGE = 1000  # klines per request, Bybit's maximum
FUNDING_PAGE = 200  # funding history rows per request, Bybit's maximum
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
LIVE_MAX_CANDLES = 5  # a request this small is a live update, anything larger a backfill
MAX_CURSOR_PAGES = 100
ORDER_POLLS = 20
PAPER_PRICE_MAX_AGE_S = 5.0
DEFAULT_IP_PAUSE_S = 60.0  # HTTP 403 without a reset timestamp (Bybit says wait >= 10 min)
DEFAULT_429_PAUSE_S = 1.0
DEFAULT_10006_BACKOFF_S = 1.0
RETRYABLE_RET_CODES = frozenset({10000, 10016})


@dataclass(frozen=True)
class BybitSettings:
    network: Literal["mainnet", "testnet", "demo"] = "mainnet"
    base_url: str | None = None  # overrides the network's host (e.g. the fake server)
    paper: bool = True
    api_key: str | None = field(default=None, repr=False)
    api_secret: str | None = field(default=None, repr=False)
    recv_window_ms: int = 5000
    max_retries: int = 5
    timeout_s: float = 10.0
    #: attempts of one call that may time out (``timeout_s`` each) before the call fails: a
    #: venue that stalls is an outage after this many, not after ``max_retries`` of them
    max_timeouts: int = 2
    backoff_base_s: float = 0.2
    backoff_max_s: float = 5.0
    backfill_concurrency: int = 16  # kline pages in flight (the rate budget still paces)
    order_timeout_s: float = 30.0
    paper_taker_fee: float = 0.00055
    paper_slippage_bps: float = 2.0
    paper_starting_balance: float = 100_000.0

    def __post_init__(self) -> None:
        if self.network not in HOSTS:
            raise ValueError(f"network must be one of {sorted(HOSTS)}, got {self.network!r}")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://: {self.base_url!r}")
        if not 0 <= self.max_retries <= 20 or self.backfill_concurrency < 1:
            raise ValueError("max_retries must be in [0, 20] and backfill_concurrency >= 1")
        if self.max_timeouts < 1:
            raise ValueError("max_timeouts must be >= 1")
        if self.recv_window_ms <= 0 or self.timeout_s <= 0 or self.order_timeout_s <= 0:
            raise ValueError("recv_window_ms, timeout_s and order_timeout_s must be positive")

    @property
    def url(self) -> str:
        return (self.base_url or HOSTS[self.network]).rstrip("/")


class BybitExchange:
    name = "bybit"

    def __init__(self, settings: BybitSettings, *, limiter: RateLimiter | None = None,
                 on_usage: Callable[[str, float], None] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 rng: random.Random | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        if not settings.paper and not (settings.api_key and settings.api_secret):
            raise ExchangeError("bybit: live orders need api_key and api_secret (from the "
                                "environment or a 0600 key file); or set paper = true")
        self.settings = settings
        self.limiter = limiter or RateLimiter(on_usage=on_usage)
        self._client = httpx.AsyncClient(
            base_url=settings.url, timeout=settings.timeout_s, transport=transport,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": "methtrader"})
        self._rng = rng or random.Random()
        self._wall = wall_clock
        self._offset_ms = 0  # server time - wall time, learned on 10002
        self._backfill = trio.CapacityLimiter(settings.backfill_concurrency)
        self._prices: dict[str, tuple[float, float]] = {}  # symbol -> (price, trio time)
        self._half_spreads: dict[str, float] = {}  # symbol -> of the last quoted bid/ask
        self._instruments: dict[str, Instrument] = {}
        self._funding_retry_ms = 0  # a late funding rate is asked for again from then on
        self.invalid_payloads = 0
        self.retries = 0
        self.capabilities = frozenset({REAL_TIME, VOLUME_BAR} | ({PAPER} if settings.paper
                                                                  else set()))
        self.broker = PaperBroker(
            self._last_price, taker_fee=settings.paper_taker_fee,
            slippage_bps=settings.paper_slippage_bps,
            starting_balance=settings.paper_starting_balance,
            tick_of=lambda s: self._instrument_or_fail(s).tick_size,
            step_of=lambda s: self._instrument_or_fail(s).qty_step,
            half_spread_of=lambda s: self._half_spreads.get(s, 0.0)) if settings.paper else None

    def __repr__(self) -> str:
        s = self.settings
        return (f"BybitExchange(url={s.url!r}, paper={s.paper}, "
                f"api_key={'set' if s.api_key else 'none'})")

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> BybitExchange:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transport ------------------------------------------------------------------------------

    def _timestamp_ms(self) -> int:
        return int(self._wall() * 1000) + self._offset_ms

    def _redact(self, text: str) -> str:
        for secret in (self.settings.api_key, self.settings.api_secret):
            if secret:
                text = text.replace(secret, "***")
        return text

    def _invalid(self, path: str, exc: ValidationError) -> None:
        self.invalid_payloads += 1
        log.warning("bybit %s: invalid payload #%d: %s", path, self.invalid_payloads, exc)

    async def _send(self, method: str, path: str, params: Mapping[str, Any],
                    signed: bool) -> httpx.Response:
        if method == "GET":
            payload = query_string(params)
            url, content = (f"{path}?{payload}" if payload else path), None
        else:
            payload = json_body(params)
            url, content = path, payload.encode()
        headers = {"Content-Type": "application/json"} if content is not None else {}
        if signed:
            key, secret = self.settings.api_key or "", self.settings.api_secret or ""
            ts, recv = str(self._timestamp_ms()), str(self.settings.recv_window_ms)
            headers.update({"X-BAPI-API-KEY": key, "X-BAPI-TIMESTAMP": ts,
                            "X-BAPI-RECV-WINDOW": recv, "X-BAPI-SIGN-TYPE": "2",
                            "X-BAPI-SIGN": sign(secret, ts, key, recv, payload)})
        return await self._client.request(method, url, content=content, headers=headers)

    def _reset_delay(self, resp: httpx.Response, default: float) -> float:
        try:
            reset = int(resp.headers["x-bapi-limit-reset-timestamp"])
        except (KeyError, ValueError):
            return default
        delay = (reset - self._reference_ms(resp)) / 1000
        return delay if delay > 0 else default

    def _reference_ms(self, resp: httpx.Response) -> int:
        try:
            return int(resp.headers["timenow"])
        except (KeyError, ValueError):
            return self._timestamp_ms()

    async def _retry_sleep(self, attempt: int) -> None:
        s = self.settings
        delay = min(s.backoff_max_s, s.backoff_base_s * 2 ** attempt)
        await trio.sleep(delay * (0.5 + 0.5 * self._rng.random()))

    async def _call(self, method: str, path: str, params: Mapping[str, Any], *,
                    priority: Priority, signed: bool = False) -> Envelope:
        """One API call with rate limiting, bounded retries and envelope validation."""
        attempts = self.settings.max_retries + 1
        last: ExchangeError = ExchangeError(f"{path}: no attempt made")
        timeouts = 0
        for attempt in range(attempts):
            if attempt:
                self.retries += 1
            await self.limiter.acquire(priority, path)
            try:
                resp = await self._send(method, path, params, signed)
            except httpx.TimeoutException as exc:
                timeouts += 1
                last = ExchangeError(f"{path}: no answer within {self.settings.timeout_s:g}s "
                                     f"({type(exc).__name__}), {timeouts} time(s): the venue "
                                     "stalls")
                log.warning("bybit %s: timed out (attempt %d/%d)", path, attempt + 1, attempts)
                if timeouts >= self.settings.max_timeouts:
                    raise last from None
                await self._retry_sleep(attempt)
                continue
            except httpx.TransportError as exc:
                last = ExchangeError(f"{path}: {type(exc).__name__}: {exc}")
                log.warning("bybit %s: transport error (attempt %d/%d): %s", path, attempt + 1,
                            attempts, type(exc).__name__)
                await self._retry_sleep(attempt)
                continue
            limit = parse_limit_headers(resp.headers)
            if limit is not None:
                self.limiter.observe(path, limit, self._reference_ms(resp))
            status = resp.status_code
            if status in (403, 429):
                pause = self.limiter.pause_all(self._reset_delay(
                    resp, DEFAULT_IP_PAUSE_S if status == 403 else DEFAULT_429_PAUSE_S))
                last = RateLimited(f"{path}: HTTP {status} (IP rate limit or banned region); "
                                   f"paused all requests for {pause:.2f}s")
                log.warning("%s", last)
                if yields_to_rate_limits():
                    raise last
                continue
            if status >= 500:
                last = ExchangeError(f"{path}: HTTP {status}")
                log.warning("bybit %s: HTTP %d (attempt %d/%d)", path, status, attempt + 1,
                            attempts)
                await self._retry_sleep(attempt)
                continue
            if status == 401 and signed:
                raise BybitAuthError(path, 401, f"HTTP 401: {self._redact(resp.text[:200])}")
            if status != 200:
                raise ExchangeError(f"{path}: HTTP {status}: {self._redact(resp.text[:200])}")
            try:
                env = parse_envelope(resp.content)
            except MalformedResponse as exc:
                self._invalid(path, exc)
                last = exc
                await self._retry_sleep(attempt)
                continue
            if env.ret_code == 0:
                return env
            last = (BybitRateLimited if env.ret_code == 10006 else BybitAuthError
                    if env.ret_code in AUTH_RET_CODES else BybitApiError)(
                path, env.ret_code, self._redact(env.ret_msg))
            if env.ret_code == 10006:
                delay = self.limiter.backoff(path, self._reset_delay(resp,
                                                                     DEFAULT_10006_BACKOFF_S))
                log.warning("bybit %s: 10006 too many visits; endpoint waits %.3fs", path, delay)
                if yields_to_rate_limits():
                    raise last
            elif env.ret_code == 10002 and signed:
                await self._sync_time()
            elif env.ret_code in RETRYABLE_RET_CODES:
                await self._retry_sleep(attempt)
            else:
                raise last
        raise last

    async def _sync_time(self) -> None:
        before = self._wall()
        server = await self.server_time_ms()
        after = self._wall()
        self._offset_ms = server - int((before + after) * 500)
        log.info("bybit: clock offset to the server is now %d ms", self._offset_ms)

    def _parse(self, path: str, parser: Callable[..., Any], *args: Any) -> Any:
        try:
            return parser(*args)
        except ValidationError as exc:
            self._invalid(path, exc)
            raise

    # -- market data ----------------------------------------------------------------------------

    async def server_time_ms(self) -> int:
        env = await self._call("GET", "/v5/market/time", {}, priority=Priority.LIVE)
        return self._parse("/v5/market/time", parse_server_time, env.result)

    async def instruments(self, *, priority: Priority = Priority.DISCOVERY) -> list[Instrument]:
        """Trading linear instruments (Bybit's default status filter), all pages."""
        out: list[Instrument] = []
        cursor, seen = "", set()
        for _ in range(MAX_CURSOR_PAGES):
            env = await self._call("GET", "/v5/market/instruments-info",
                                   {"category": "linear", "limit": PAGE, "cursor": cursor or None},
                                   priority=priority)
            page, cursor = self._parse("/v5/market/instruments-info", parse_instruments,
                                       env.result)
            out.extend(page)
            if not cursor:
                break
            if cursor in seen:
                exc = ValidationError(f"instruments: cursor {cursor!r} repeats")
                self._invalid("/v5/market/instruments-info", exc)
                raise exc
            seen.add(cursor)
        else:
            raise ExchangeError(f"instruments: more than {MAX_CURSOR_PAGES} pages")
        self._instruments.update((i.symbol, i) for i in out)
        return out

    async def tickers(self) -> list[Ticker]:
        return await self._tickers(None, Priority.LIVE)

    async def _tickers(self, symbol: str | None, priority: Priority) -> list[Ticker]:
        env = await self._call("GET", "/v5/market/tickers",
                               {"category": "linear", "symbol": symbol}, priority=priority)
        out = self._parse("/v5/market/tickers", parse_tickers, env.result)
        now = trio.current_time()
        for t in out:
            self._prices[t.symbol] = (t.last_price, now)
            half = (quoted_half_spread(t.bid, t.ask)
                    if t.bid is not None and t.ask is not None else None)
            if half is not None:
                self._half_spreads[t.symbol] = half
        return out

    async def funding_rates(self, symbol: str, start_ms: int, end_ms: int, *,
                            priority: Priority = Priority.BACKFILL) -> list[tuple[int, float]]:
        """Funding rates settled at times in (start_ms, end_ms], oldest first.

        Bybit answers newest first, at most 200 rows a page, so the window is walked backwards:
        each next page ends just before the oldest row of the last one, until a page comes back
        short or the window is covered. Every page is validated (symbol, window, strictly
        decreasing times, sane rates); any bad page fails the whole call.
        """
        path = "/v5/market/funding/history"
        lo, hi = start_ms + 1, min(end_ms, self._timestamp_ms())
        out: list[tuple[int, float]] = []
        for _ in range(MAX_CURSOR_PAGES):
            if hi < lo:
                return out
            env = await self._call("GET", path, {"category": "linear", "symbol": symbol,
                                                 "startTime": lo, "endTime": hi,
                                                 "limit": FUNDING_PAGE}, priority=priority)
            page = self._parse(path, parse_funding_history, env.result, symbol, lo, hi)
            out[:0] = page
            if len(page) < FUNDING_PAGE:
                return out
            hi = page[0][0] - 1
        raise ExchangeError(f"funding history {symbol}: more than {MAX_CURSOR_PAGES} pages")

    async def klines(self, symbol: str, interval: str, start_ms: int, end_ms: int, *,
                     priority: Priority | None = None) -> list[Candle]:
        """Closed candles with open_time in [start_ms, end_ms), oldest first (see
        :meth:`klines_array`)."""
        rows = await self.klines_array(symbol, start_ms, end_ms, interval, priority=priority)
        return [Candle(symbol, interval, int(r[0]), *map(float, r[1:])) for r in rows]

    async def klines_array(self, symbol: str, start_ms: int, end_ms: int,
                           interval: str = "1m", *, priority: Priority | None = None
                           ) -> np.ndarray:
        """Closed candles with open_time in [start_ms, end_ms) as an (n, 7) array, oldest
        first.

        The range is cut into windows of at most 1000 candles, newest first, fetched
        concurrently (``backfill_concurrency``), each validated; the still-open candle is
        dropped. Any failing page fails the whole call: nothing partial is returned.

        ``backfill_concurrency`` bounds the pages of backfills only: the one page of a live
        update (or of an order's funding settlement) never queues behind theirs — that queue
        is first come, first served, and a backfill of new pairs can hold hundreds of pages in
        it — and the rate budget still serves it before them (its priority's ceiling).
        """
        if interval not in INTERVALS:
            raise ExchangeError(f"bybit: unsupported interval {interval!r}; "
                                f"one of {sorted(INTERVALS)}")
        wire, step = INTERVALS[interval]
        first = start_ms + (-start_ms) % step
        if end_ms <= first:
            return np.zeros((0, 7))
        count = -(-(end_ms - first) // step)
        last = first + (count - 1) * step
        prio = priority or (Priority.LIVE if count <= LIVE_MAX_CANDLES else Priority.BACKFILL)
        windows = []
        hi = last
        while hi >= first:
            lo = max(first, hi - (PAGE - 1) * step)
            windows.append((lo, hi))
            hi = lo - step
        pages: list[np.ndarray] = [np.zeros((0, 7)) for _ in windows]
        failure: list[ExchangeError] = []
        urgent = prio < Priority.BACKFILL and len(windows) == 1
        slots = contextlib.nullcontext() if urgent else self._backfill

        async def fetch(i: int, lo: int, hi: int) -> None:
            try:
                async with slots:
                    pages[i] = await self._kline_page(symbol, wire, step, lo, hi, prio)
            except ExchangeError as exc:
                failure.append(exc)
                nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for i, (lo, hi) in enumerate(windows):
                nursery.start_soon(fetch, i, lo, hi)
        if failure:
            raise failure[0]
        rows = np.concatenate(pages[::-1])  # windows run newest first, pages oldest first
        _, keep = np.unique(rows[:, 0], return_index=True)
        rows = rows[keep]
        if len(rows) and rows[-1, 0] + 2 * step >= self._timestamp_ms():
            self._prices[symbol] = (float(rows[-1, 4]), trio.current_time())  # a recent close
        return rows

    async def _kline_page(self, symbol: str, wire: str, step: int, lo: int, hi: int,
                          priority: Priority) -> np.ndarray:
        path = "/v5/market/kline"
        env = await self._call("GET", path, {"category": "linear", "symbol": symbol,
                                             "interval": wire, "start": lo, "end": hi,
                                             "limit": PAGE}, priority=priority)
        rows = self._parse(path, parse_klines, env.result, symbol, step, lo, hi)
        now = env.time_ms if env.time_ms is not None else self._timestamp_ms()
        return rows[rows[:, 0] + step <= now]

    # -- orders and account ----------------------------------------------------------------

    def _last_price(self, symbol: str) -> float | None:
        seen = self._prices.get(symbol)
        return seen[0] if seen else None

    def _instrument_or_fail(self, symbol: str) -> Instrument:
        try:
            return self._instruments[symbol]
        except KeyError:
            raise ExchangeError(f"bybit: unknown or non-trading symbol {symbol!r}") from None

    async def place_order(self, intent: OrderIntent) -> Fill:
        """A market order; shielded from cancellation, bounded by ``order_timeout_s``."""
        with trio.CancelScope(shield=True):
            try:
                with trio.fail_after(self.settings.order_timeout_s):
                    if self.broker is not None:
                        return await self._paper_fill(intent)
                    return await self._live_order(intent)
            except trio.TooSlowError:
                raise ExchangeError(f"{intent.symbol}: order outcome unknown after "
                                    f"{self.settings.order_timeout_s}s; reconcile positions") \
                    from None

    async def place_orders(self, intents: Sequence[OrderIntent]) -> list[Fill | ExchangeError]:
        """One order after another (each is a round trip: the gateway sends them itself, so
        that a kill switch thrown between two stops the rest)."""
        out: list[Fill | ExchangeError] = []
        for intent in intents:
            try:
                out.append(await self.place_order(intent))
            except ExchangeError as exc:
                out.append(exc)
        return out

    async def _paper_fill(self, intent: OrderIntent) -> Fill:
        assert self.broker is not None
        if intent.symbol not in self._instruments:
            await self.instruments(priority=Priority.ORDER)
        self._instrument_or_fail(intent.symbol)
        seen = self._prices.get(intent.symbol)
        if seen is None or trio.current_time() - seen[1] > PAPER_PRICE_MAX_AGE_S:
            await self._tickers(intent.symbol, Priority.ORDER)
        now = self._timestamp_ms()
        await self._settle_paper_funding(now)
        return self.broker.fill(intent, now)

    async def _settle_paper_funding(self, now: int) -> None:
        """Charge the paper positions the funding due up to ``now`` (module docstring)."""
        broker = self.broker
        assert broker is not None
        since = broker.funded_to
        held = sorted(s for s, p in broker.positions.items() if p.qty)
        if since is None or not held or now // HOUR_MS <= since // HOUR_MS:
            broker.settle_funding(now, lambda s, a, b: [], lambda s, t: None)
            return
        if now < self._funding_retry_ms:
            return  # a rate was late a moment ago: not asked again at every fill
        rates: dict[str, list[tuple[int, float]]] = {}
        prices: dict[tuple[str, int], float] = {}
        upto = now
        for symbol in held:
            rates[symbol] = await self.funding_rates(symbol, since, now, priority=Priority.ORDER)
            for t, _ in rates[symbol]:
                rows = await self.klines_array(symbol, t - MINUTE_MS, t,
                                               priority=Priority.ORDER)
                if len(rows):
                    prices[(symbol, t)] = float(rows[-1, 4])
            upto = min(upto, self._settled_to(symbol, since, now, rates[symbol]))
        if upto < now:
            self._funding_retry_ms = now + MINUTE_MS
        broker.settle_funding(
            upto, lambda s, a, b: [(t, r) for t, r in rates.get(s, []) if a < t <= b],
            lambda s, t: prices.get((s, t)))

    def _settled_to(self, symbol: str, since: int, now: int,
                    rates: list[tuple[int, float]]) -> int:
        """How far ``symbol``'s funding can be settled: up to now, or to just before its first
        funding time that Bybit has no rate for yet (history is published a little after the
        moment; the books wait for it the same way, :mod:`appliance.book_funding`)."""
        inst = self._instruments.get(symbol)
        every = inst.funding_interval_ms if inst is not None else FUNDING_PERIOD_MS
        have = {t for t, _ in rates}
        late = [t for t in funding_times(since, now, every)
                if t not in have and now - t < FUNDING_GRACE_MS]
        return late[0] - 1 if late else now

    async def _live_order(self, intent: OrderIntent) -> Fill:
        link = intent.order_link_id or f"mt-{uuid.uuid4().hex[:32]}"
        body = {"category": "linear", "symbol": intent.symbol, "side": intent.side.value,
                "orderType": "Market", "qty": format(intent.qty, "f"), "positionIdx": 0,
                "orderLinkId": link, "reduceOnly": intent.reduce_only}
        order_id: str | None = None
        try:
            env = await self._call("POST", "/v5/order/create", body, priority=Priority.ORDER,
                                   signed=True)
            order_id = self._parse("/v5/order/create", parse_order_ack, env.result)
        except BybitApiError as exc:
            if exc.ret_code != 110072:
                raise
            log.info("bybit: order %s was already accepted by an earlier attempt", link)
        state = await self._await_order(order_id, link)
        if state.cum_qty <= 0:
            raise ExchangeError(f"{intent.symbol}: order {state.order_id} ended {state.status} "
                                f"with nothing filled ({state.reject_reason})")
        return Fill(order_id=state.order_id, symbol=state.symbol, side=intent.side,
                    qty=state.cum_qty, price=state.avg_price, fee=state.fee, ts=state.updated_ms)

    async def _await_order(self, order_id: str | None, link: str) -> OrderState:
        params = {"category": "linear", "orderId": order_id,
                  "orderLinkId": None if order_id else link}
        path = "/v5/order/realtime"
        for i in range(ORDER_POLLS):
            env = await self._call("GET", path, params, priority=Priority.ORDER, signed=True)
            for state in self._parse(path, parse_orders, env.result):
                if state.status in TERMINAL_ORDER_STATES:
                    return state
            await trio.sleep(min(0.5, 0.02 * 2 ** i))
        raise ExchangeError(f"order {order_id or link}: not final after {ORDER_POLLS} polls")

    def serves(self, symbol: str, interval: str) -> bool:
        return interval in INTERVALS

    async def order_fill(self, symbol: str, order_link_id: str) -> Fill | None:
        """The fill of ``order_link_id`` from the venue's order list (or the paper engine)."""
        if self.broker is not None:
            return self.broker.fill_of(order_link_id)
        path = "/v5/order/realtime"
        env = await self._call("GET", path, {"category": "linear", "symbol": symbol,
                                             "orderLinkId": order_link_id},
                               priority=Priority.ORDER, signed=True)
        for state in self._parse(path, parse_orders, env.result):
            if state.cum_qty > 0 and state.status in TERMINAL_ORDER_STATES:
                return Fill(order_id=state.order_id, symbol=state.symbol,
                            side=Side(state.side),
                            qty=state.cum_qty, price=state.avg_price, fee=state.fee,
                            ts=state.updated_ms)
        return None

    async def cancel_order(self, symbol: str, order_id: str) -> None:
        if self.broker is not None:
            raise ExchangeError("paper market orders fill at once; there is nothing to cancel")
        await self._call("POST", "/v5/order/cancel",
                         {"category": "linear", "symbol": symbol, "orderId": order_id},
                         priority=Priority.ORDER, signed=True)

    async def positions(self) -> list[Position]:
        if self.broker is not None:
            await self._settle_paper_funding(self._timestamp_ms())
            return [p for p in self.broker.positions.values() if p.qty]
        path, out, cursor = "/v5/position/list", [], ""
        for _ in range(MAX_CURSOR_PAGES):
            env = await self._call("GET", path, {"category": "linear", "settleCoin": "USDT",
                                                 "limit": 200, "cursor": cursor or None},
                                   priority=Priority.ORDER, signed=True)
            page, cursor = self._parse(path, parse_positions, env.result)
            out.extend(page)
            if not cursor:
                return out
        raise ExchangeError(f"positions: more than {MAX_CURSOR_PAGES} pages")

    async def balance(self) -> Balance:
        if self.broker is not None:
            await self._settle_paper_funding(self._timestamp_ms())
            return self.broker.balance()
        path = "/v5/account/wallet-balance"
        env = await self._call("GET", path, {"accountType": "UNIFIED", "coin": "USDT"},
                               priority=Priority.ORDER, signed=True)
        wallet, equity = self._parse(path, parse_wallet, env.result, "USDT")
        return Balance("USDT", wallet, equity, tuple(await self.positions()))

    async def fee_rates(self) -> dict[str, float]:
        """The account's taker fee per linear symbol; empty without keys (nothing to ask)."""
        if not (self.settings.api_key and self.settings.api_secret):
            return {}
        path = "/v5/account/fee-rate"
        env = await self._call("GET", path, {"category": "linear"}, priority=Priority.DISCOVERY,
                               signed=True)
        return self._parse(path, parse_fee_rates, env.result)

    def rate_limit_usage(self) -> float:
        return self.limiter.max_usage()

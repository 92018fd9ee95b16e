"""The fake Bybit's request handler: routing, rate limits, auth and fault injection, no I/O.

:meth:`FakeBybitApp.handle` turns one parsed HTTP request into one response (or a decision to
drop the connection); :mod:`appliance.exchange.fake_bybit` owns the sockets. Every decision
uses the injected clock and a seeded RNG, so a run is reproducible request by request.

Rate limits, in the order they are checked:

* per IP: ``ip_limit`` requests per fixed ``ip_window_ms`` window (Bybit: 600 / 5 s); over it
  the answer is HTTP 403 until the window ends (announced in ``X-Bapi-Limit-Reset-Timestamp``,
  an addition of the fake — the real venue says "wait 10 minutes");
* per endpoint: ``endpoint_limits`` per fixed 1 s window, per API key on private endpoints and
  per IP on public ones (by default only the private ones have a limit: Bybit's market data is
  under the IP limit alone); over it ``retCode 10006``. Every such response carries
  ``X-Bapi-Limit``, ``X-Bapi-Limit-Status`` and a reset timestamp strictly in the future.

Every response also carries ``Timenow`` (server ms), as Bybit's do.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl

from appliance.exchange import fake_bybit_market as mkt
from appliance.exchange.fake_bybit_account import Account, check_auth
from appliance.exchange.fake_bybit_market import ApiFault
from appliance.exchange.simmarket import CACHE_ROW_DAYS, DAY_MS, DEFAULT_PAIRS, SimMarket

MAX_WARM_SYMBOL_DAYS = 20_000
"""Most symbol-days ``warm_days`` may hold computed (~70 KB each: ~1.4 GB)."""


def check_warm_days(pairs: int, warm_days: int) -> None:
    """ValueError unless ``warm_days`` days of ``pairs`` pairs may be kept computed."""
    if warm_days < 0 or warm_days * pairs > MAX_WARM_SYMBOL_DAYS:
        raise ValueError(f"--warm-days {warm_days} with --pairs {pairs} would keep "
                         f"{warm_days * pairs} pair-days computed; at most "
                         f"{MAX_WARM_SYMBOL_DAYS} (~1.4 GB): ask for fewer days")

DEFAULT_API_KEYS: Mapping[str, str] = {"fake-key": "fake-secret"}

#: Bybit's per-UID limits of the private endpoints. Market data is only under the IP limit, as
#: on Bybit: a per-endpoint kline limit (it was 100/s here) held a backfill below the 120 pages
#: a second the IP limit allows.
DEFAULT_ENDPOINT_LIMITS: Mapping[str, int] = {
    "/v5/order/create": 10, "/v5/order/cancel": 10,
    "/v5/order/realtime": 50, "/v5/position/list": 50, "/v5/account/wallet-balance": 50,
    "/v5/account/fee-rate": 10,
}


#: the whole-venue outage modes (``Faults.outage``): "" none, "drop" every API connection
#: closed unanswered and unprocessed, "stall" every API request read and left unanswered
OUTAGE_MODES = ("", "drop", "stall")
MAX_STALL_S = 600.0  # the longest a stalled request is held (``stall_max_s``'s bound)

#: numeric knobs and their bounds (the ratios are probabilities per request)
_BOUNDS: Mapping[str, tuple[float, float]] = {
    "latency_ms": (0.0, 60_000.0), "error_ratio": (0.0, 1.0), "drop_ratio": (0.0, 1.0),
    "malformed_ratio": (0.0, 1.0), "stall_max_s": (0.0, MAX_STALL_S),
    "funding_lag_s": (0.0, 3600.0)}


@dataclass(frozen=True)
class Faults:
    """Fault knobs; every ratio is the probability per request (seeded RNG).

    ``outage`` takes the whole venue down until it is set back to "": ``drop`` closes every
    API connection as soon as its request is read (nothing processed, nothing answered),
    ``stall`` holds every API request unanswered until the outage is lifted (then it is
    processed and answered) or ``stall_max_s`` has passed (then its connection is closed
    unanswered). The admin routes are never affected.
    """

    latency_ms: float = 0.0
    error_ratio: float = 0.0  # HTTP 503 instead of an answer
    rate_limit_storm: bool = False  # every API request gets retCode 10006
    drop_ratio: float = 0.0  # the request is processed, then the socket closes unanswered
    malformed_ratio: float = 0.0  # the JSON body is cut in half
    outage: str = ""  # one of OUTAGE_MODES
    stall_max_s: float = 300.0  # a stalled request is dropped after this long
    funding_lag_s: float = 0.0  # a funding time's rate shows in the history this much later

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "rate_limit_storm":
                if not isinstance(value, bool):
                    raise ValueError("rate_limit_storm must be true or false")
            elif f.name == "outage":
                if value not in OUTAGE_MODES:
                    raise ValueError(f"outage must be one of {list(OUTAGE_MODES)}, got "
                                     f"{value!r}")
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{f.name} must be a number, got {value!r}")
            elif not _BOUNDS[f.name][0] <= value <= _BOUNDS[f.name][1]:
                lo, hi = _BOUNDS[f.name]
                raise ValueError(f"{f.name} must be in [{lo:g}, {hi:g}]")

    def updated(self, changes: Mapping[str, Any]) -> Faults:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown fault knob(s) {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **changes)


@dataclass(frozen=True)
class FakeLimits:
    ip_limit: int = 600
    ip_window_ms: int = 5000
    endpoint_window_ms: int = 1000
    endpoint_limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_ENDPOINT_LIMITS))


@dataclass(frozen=True, slots=True)
class FakeRequest:
    method: str
    path: str
    query: str  # raw, exactly as on the request line
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    client: str


@dataclass(slots=True)
class FakeResponse:
    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"
    drop: bool = False  # close the socket instead of answering
    latency_ms: float = 0.0  # wait this long before answering


@dataclass
class Stats:
    requests: int = 0
    by_path: Counter = field(default_factory=Counter)
    ret_codes: Counter = field(default_factory=Counter)
    http_status: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    #: (seq, method, path, server ms, HTTP status, retCode or None), bounded
    log: deque = field(default_factory=lambda: deque(maxlen=10_000))
    #: reset timestamps announced with each 10006, in order, bounded
    resets_10006: deque = field(default_factory=lambda: deque(maxlen=10_000))

    def snapshot(self) -> dict[str, Any]:
        return {"requests": self.requests, "by_path": dict(self.by_path),
                "ret_codes": {str(k): v for k, v in self.ret_codes.items()},
                "http_status": {str(k): v for k, v in self.http_status.items()},
                "faults": dict(self.faults)}


class _Windows:
    """Fixed-window counters keyed by anything; old windows are forgotten."""

    def __init__(self) -> None:
        self._counts: dict[Any, tuple[int, int]] = {}

    def take(self, key: Any, now_ms: int, window_ms: int, limit: int) -> tuple[bool, int, int]:
        """(allowed, remaining after this request, window end ms)."""
        idx = now_ms // window_ms
        if len(self._counts) > 10_000:
            self._counts = {k: v for k, v in self._counts.items() if v[0] == idx}
        w, n = self._counts.get(key, (idx, 0))
        if w != idx:
            n = 0
        reset = (idx + 1) * window_ms
        if n >= limit:
            return False, 0, reset
        self._counts[key] = (idx, n + 1)
        return True, limit - n - 1, reset


FUNDING_PATH = "/v5/market/funding/history"
_PUBLIC: Mapping[str, Callable[[SimMarket, Mapping[str, str], int], dict[str, Any]]] = {
    "/v5/market/time": lambda m, p, now: mkt.server_time(now),
    "/v5/market/instruments-info": mkt.instruments,
    "/v5/market/tickers": mkt.tickers,
    "/v5/market/kline": mkt.klines,
    FUNDING_PATH: mkt.funding_history,
}
_PRIVATE: Mapping[tuple[str, str], Callable[[Account, Mapping[str, Any]], dict[str, Any]]] = {
    ("POST", "/v5/order/create"): Account.create_order,
    ("POST", "/v5/order/cancel"): Account.cancel_order,
    ("GET", "/v5/order/realtime"): Account.open_orders,
    ("GET", "/v5/position/list"): Account.positions,
    ("GET", "/v5/account/wallet-balance"): Account.wallet,
    ("GET", "/v5/account/fee-rate"): Account.fee_rates,
}


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class FakeBybitApp:
    def __init__(self, seed: int = 7, *, faults: Faults = Faults(),
                 api_keys: Mapping[str, str] | None = None,
                 clock: Callable[[], float] | None = None, limits: FakeLimits = FakeLimits(),
                 fault_seed: int | None = None, starting_balance: float = 100_000.0,
                 taker_fee: float = 0.00055, slippage_bps: float = 2.0,
                 pairs: int = DEFAULT_PAIRS, warm_days: int = 0) -> None:
        """``pairs``: the sim universe's size (``sim.pairs``); the same seed and pairs serve
        the same instruments and candles as the appliance's ``sim`` exchange.

        ``warm_days``: the candles of the last ``warm_days`` days of every pair are computed
        now and kept, so that answering for them costs no generation. A bench's server shares
        this machine's cores with the client it serves (a remote venue's CPU would not); the
        answers are the same either way."""
        check_warm_days(pairs, warm_days)
        keep = max(CACHE_ROW_DAYS, (warm_days + 2) * pairs)
        self.market = SimMarket(seed, pairs=pairs, cache_symbol_days=keep)
        self.faults = faults
        self.api_keys = dict(DEFAULT_API_KEYS if api_keys is None else api_keys)
        self.clock = clock or time.time
        if warm_days:
            now_ms = int(self.clock() * 1000)
            self.market.precompute(now_ms - warm_days * DAY_MS, now_ms + 1)
        self.limits = limits
        self.stats = Stats()
        self._rng = random.Random(seed if fault_seed is None else fault_seed)
        self._ip = _Windows()
        self._endpoint = _Windows()
        self._accounts: dict[str, Account] = {}
        self._account_cfg = dict(starting_balance=starting_balance, taker_fee=taker_fee,
                                 slippage_bps=slippage_bps)
        #: held while a request is handled: the server answers the admin routes and looks up
        #: outages from other threads than the one that processes API requests in turn
        self.lock = threading.Lock()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def account(self, api_key: str) -> Account:
        if api_key not in self._accounts:
            self._accounts[api_key] = Account(self.market, self.now_ms, **self._account_cfg)
        return self._accounts[api_key]

    # -- entry point --------------------------------------------------------------------------

    def outage_mode(self, req: FakeRequest) -> str:
        """The whole-venue outage this request meets ("" none, "drop", "stall"), counted in
        the stats' faults (a stalled request answered after the lift is then counted as a
        request by :meth:`handle`); the admin routes never meet one."""
        mode = self.faults.outage
        if not mode or req.path.startswith("/admin/"):
            return ""
        with self.lock:
            self.stats.faults[f"outage_{mode}"] += 1
        return mode

    def handle(self, req: FakeRequest) -> FakeResponse:
        with self.lock:
            if req.path.startswith("/admin/"):
                return self._admin(req)
            return self._handle_api(req)

    def _handle_api(self, req: FakeRequest) -> FakeResponse:
        now = self.now_ms()
        self.stats.requests += 1
        self.stats.by_path[req.path] += 1
        # one draw per knob on every request keeps the fault sequence independent of settings
        f = self.faults
        r_drop, r_err, r_bad = self._rng.random(), self._rng.random(), self._rng.random()
        resp = self._answer(req, now, storm=f.rate_limit_storm, error=r_err < f.error_ratio)
        resp.headers.append(("Timenow", str(now)))
        resp.latency_ms = f.latency_ms
        if resp.status == 200 and r_bad < f.malformed_ratio:
            resp.body = resp.body[: len(resp.body) // 2]
            self.stats.faults["malformed"] += 1
        if r_drop < f.drop_ratio:
            resp.drop = True
            self.stats.faults["drop"] += 1
        self.stats.http_status[resp.status] += 1
        return resp

    def _answer(self, req: FakeRequest, now: int, *, storm: bool, error: bool) -> FakeResponse:
        ok, _, reset = self._ip.take(req.client, now, self.limits.ip_window_ms, self.limits.ip_limit)
        if not ok:
            self._log(req, now, 403, None)
            return FakeResponse(403, b"403 Forbidden: access too frequent (IP rate limit)",
                                [("X-Bapi-Limit-Reset-Timestamp", str(reset))], "text/plain")
        if error:
            self.stats.faults["5xx"] += 1
            self._log(req, now, 503, None)
            return FakeResponse(503, b"503 Service Temporarily Unavailable", [], "text/plain")
        private = _PRIVATE.get((req.method, req.path))
        public = _PUBLIC.get(req.path) if req.method == "GET" else None
        if private is None and public is None:
            self._log(req, now, 404, None)
            return FakeResponse(404, b"404 page not found", [], "text/plain")
        headers: list[tuple[str, str]] = []
        try:
            params = self._params(req)
            who = req.client
            if private is not None:
                payload = req.query if req.method == "GET" else req.body.decode("utf-8", "replace")
                who = check_auth(req.headers, payload, self.api_keys, now)
            headers = self._endpoint_headers(req.path, who, now, storm)
            if private is not None:
                result = private(self.account(who), params)
            else:
                assert public is not None
                if req.path == FUNDING_PATH:  # published a little after the moment
                    result = public(self.market, params,
                                    now - round(self.faults.funding_lag_s * 1000))
                else:
                    result = public(self.market, params, now)
        except _TooMany as fault:
            self.stats.resets_10006.append(int(fault.headers[-1][1]))
            return self._envelope(req, now, fault.ret_code, fault.ret_msg, {}, fault.headers)
        except ApiFault as fault:
            return self._envelope(req, now, fault.ret_code, fault.ret_msg, {}, headers)
        return self._envelope(req, now, 0, "OK", result, headers)

    def _params(self, req: FakeRequest) -> Mapping[str, Any]:
        if req.method == "GET":
            return dict(parse_qsl(req.query, keep_blank_values=True))
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            raise ApiFault(10001, "params error: body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiFault(10001, "params error: body must be a JSON object")
        return body

    def _endpoint_headers(self, path: str, who: str, now: int,
                          storm: bool) -> list[tuple[str, str]]:
        limit = self.limits.endpoint_limits.get(path)
        if limit is None and not storm:
            return []
        limit = limit or 1
        window = self.limits.endpoint_window_ms
        if storm:
            self.stats.faults["storm"] += 1
            ok, remaining, reset = False, 0, (now // window + 1) * window
        else:
            ok, remaining, reset = self._endpoint.take((who, path), now, window, limit)
        headers = [("X-Bapi-Limit", str(limit)), ("X-Bapi-Limit-Status", str(remaining)),
                   ("X-Bapi-Limit-Reset-Timestamp", str(max(reset, now + 1)))]
        if not ok:
            raise _TooMany(headers)
        return headers

    def _envelope(self, req: FakeRequest, now: int, code: int, msg: str, result: Any,
                  headers: list[tuple[str, str]]) -> FakeResponse:
        self._log(req, now, 200, code)
        body = {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now}
        return FakeResponse(200, _json(body), list(headers))

    def _log(self, req: FakeRequest, now: int, status: int, code: int | None) -> None:
        if code is not None:
            self.stats.ret_codes[code] += 1
        self.stats.log.append((self.stats.requests, req.method, req.path, now, status, code))

    # -- admin --------------------------------------------------------------------------------

    def _admin(self, req: FakeRequest) -> FakeResponse:
        if req.client not in ("127.0.0.1", "::1"):
            return FakeResponse(403, b"admin is loopback only", [], "text/plain")
        if req.path == "/admin/faults" and req.method == "POST":
            try:
                changes = json.loads(req.body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                self.faults = self.faults.updated(changes)
            except (ValueError, TypeError) as exc:
                return FakeResponse(400, _json({"error": str(exc)}))
            return FakeResponse(200, _json(asdict(self.faults)))
        if req.path == "/admin/faults" and req.method == "GET":
            return FakeResponse(200, _json(asdict(self.faults)))
        if req.path == "/admin/stats" and req.method == "GET":
            return FakeResponse(200, _json(self.stats.snapshot()))
        return FakeResponse(404, b"unknown admin route", [], "text/plain")


class _TooMany(ApiFault):
    def __init__(self, headers: list[tuple[str, str]]) -> None:
        super().__init__(10006, "Too many visits!")
        self.headers = headers

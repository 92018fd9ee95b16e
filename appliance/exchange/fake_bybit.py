"""Fake Bybit: a loopback HTTP/1.1 server (trio + h11) that speaks the v5 REST wire format.

Backed by :class:`~appliance.exchange.simmarket.SimMarket` on the real UTC clock by default
(inject ``clock`` in tests), so its klines equal the sim market's candles to the last digit.
Endpoints, limits, auth and faults are described in :mod:`appliance.exchange.fake_bybit_app`;
this module owns sockets, keep-alive, the latency and dropped-socket faults and the entry
points::

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_fake_bybit, 0, 7)

    run_fake_bybit(18080, 7, Faults(error_ratio=0.05), {"fake-key": "fake-secret"})  # CLI

Faults can be changed while running: ``POST /admin/faults`` with a JSON object of knobs
(``latency_ms``, ``error_ratio``, ``rate_limit_storm``, ``drop_ratio``, ``malformed_ratio``,
``outage`` "drop" / "stall" / "", ``stall_max_s``); ``GET /admin/faults`` and
``GET /admin/stats`` report. The admin routes answer loopback only and never meet an outage.
"""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import socket
from functools import partial
from typing import Callable, Mapping, Sequence

import h11
import trio

from appliance.exchange.fake_bybit_app import (DEFAULT_API_KEYS, MAX_WARM_SYMBOL_DAYS,
                                               FakeBybitApp, FakeLimits, FakeRequest,
                                               FakeResponse, Faults, check_warm_days)
from appliance.exchange.simmarket import DEFAULT_PAIRS
from appliance.exchange.simuniverse import MAX_PAIRS

__all__ = ["FakeBybitApp", "FakeLimits", "Faults", "FakeBybitServer", "serve_fake_bybit",
           "run_fake_bybit", "main_fake_bybit", "add_fake_bybit_args", "faults_from_args"]

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
MAX_PORT = 65535
IDLE_TIMEOUT_S = 60.0
STALL_POLL_S = 0.05  # how often a stalled request looks whether the outage was lifted
MAX_STALLED = 512  # requests a stall holds at once; any more are dropped
SERVER_HEADER = ("Server", "fake-bybit")


class _BadRequest(Exception):
    """The bytes on the socket are not an HTTP/1.1 request: answer 400 and close."""


class FakeBybitServer:
    """Sockets and HTTP framing around one :class:`FakeBybitApp`."""

    def __init__(self, app: FakeBybitApp) -> None:
        self.app = app
        # The app is synchronous (numpy for the market, dicts for state): API requests are
        # processed in worker threads one at a time, in the order they came (big kline
        # requests stay off the event loop). The admin routes and the outage check do not
        # wait their turn behind that queue of market work: they only wait for the request in
        # progress (the app's lock), so a fault set or lifted applies to the next request read.
        self._limiter = trio.CapacityLimiter(1)
        self._stalled = 0  # requests held by a stall outage right now

    async def serve(self, port: int = 0, host: str = "127.0.0.1", *,
                    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            listeners = await trio.open_tcp_listeners(port, host=host)
        except OSError as exc:  # named: "Address already in use" alone says not which
            raise OSError(exc.errno, f"fake-bybit cannot listen on {_netloc(host, port)}: "
                          f"{exc.strerror}; pick another {_culprit(exc)}") from None
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(bound)
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            client = stream.socket.getpeername()[0]
        except OSError:
            client = "?"
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        async with stream:
            try:
                await self._serve_requests(conn, stream, client)
            except _BadRequest as exc:
                await self._reject(conn, stream, str(exc))
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
                return
            except Exception:
                log.exception("fake-bybit: connection handler failed")

    async def _serve_requests(self, conn: h11.Connection, stream: trio.SocketStream,
                              client: str) -> None:
        """Keep-alive loop; ends when the client closes, idles or must be closed."""
        while True:
            req: FakeRequest | None = None
            with trio.move_on_after(IDLE_TIMEOUT_S):
                req = await self._read_request(conn, stream, client)
            if req is None:
                return
            if self.app.faults.outage and not await self._through_outage(req):
                return
            admin = req.path.startswith("/admin/")
            resp = await trio.to_thread.run_sync(self.app.handle, req,
                                                 limiter=None if admin else self._limiter)
            if resp.latency_ms:
                await trio.sleep(resp.latency_ms / 1000)
            if resp.drop:
                return
            await self._send(conn, stream, resp)
            if h11.MUST_CLOSE in (conn.our_state, conn.their_state):
                return
            conn.start_next_cycle()

    async def _through_outage(self, req: FakeRequest) -> bool:
        """Whether ``req`` gets processed despite a whole-venue outage: at once when it meets
        none; never in ``drop`` mode (its connection is closed unanswered); in ``stall`` mode
        once the outage is lifted, or never when ``stall_max_s`` passes first or
        :data:`MAX_STALLED` requests already wait."""
        mode = await trio.to_thread.run_sync(self.app.outage_mode, req)
        if mode != "stall":
            return not mode
        if self._stalled >= MAX_STALLED:
            return False
        self._stalled += 1
        try:
            with trio.move_on_after(self.app.faults.stall_max_s):
                while self.app.faults.outage == "stall":
                    await trio.sleep(STALL_POLL_S)
                return True
            return False
        finally:
            self._stalled -= 1

    async def _read_request(self, conn: h11.Connection, stream: trio.SocketStream,
                            client: str) -> FakeRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _BadRequest(str(exc)) from None
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    raise _BadRequest("request body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                path, _, query = target.partition("?")
                headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                           for k, v in head.headers}
                return FakeRequest(head.method.decode("ascii"), path, query, headers,
                                   bytes(body), client)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    async def _send(self, conn: h11.Connection, stream: trio.SocketStream,
                    resp: FakeResponse) -> None:
        headers = [SERVER_HEADER, ("Content-Type", resp.content_type),
                   ("Content-Length", str(len(resp.body))), *resp.headers]
        out = conn.send(h11.Response(status_code=resp.status, headers=headers))
        out += conn.send(h11.Data(data=resp.body))
        out += conn.send(h11.EndOfMessage())
        await stream.send_all(out)

    async def _reject(self, conn: h11.Connection, stream: trio.SocketStream, why: str) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"400 Bad Request: {why}".encode()
        try:
            await stream.send_all(conn.send(h11.Response(
                status_code=400, headers=[SERVER_HEADER, ("Content-Type", "text/plain"),
                                          ("Content-Length", str(len(body))),
                                          ("Connection", "close")]))
                + conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            pass


def _netloc(host: str, port: int) -> str:
    """``host:port`` as a URL writes it: an IPv6 address in brackets (``[::1]:18080``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _culprit(exc: OSError) -> str:
    """The flag to change when listening failed: a host that does not resolve or is not this
    machine's, else the port (in use, or below 1024 without the right)."""
    if isinstance(exc, socket.gaierror) or exc.errno in (errno.EADDRNOTAVAIL,
                                                         errno.EAFNOSUPPORT):
        return "--host"
    return "--port"


async def serve_fake_bybit(port: int, seed: int, *, host: str = "127.0.0.1",
                           faults: Faults = Faults(), api_keys: Mapping[str, str] | None = None,
                           clock: Callable[[], float] | None = None,
                           limits: FakeLimits = FakeLimits(), fault_seed: int | None = None,
                           pairs: int = DEFAULT_PAIRS, warm_days: int = 0,
                           task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``nursery.start`` gets the bound port (``port=0``: ephemeral)."""
    app = FakeBybitApp(seed, faults=faults, api_keys=api_keys, clock=clock, limits=limits,
                       fault_seed=fault_seed, pairs=pairs, warm_days=warm_days)
    await FakeBybitServer(app).serve(port, host, task_status=task_status)


def run_fake_bybit(port: int, seed: int, faults: Faults, api_keys: dict[str, str],
                   host: str = "127.0.0.1", limits: FakeLimits = FakeLimits(),
                   pairs: int = DEFAULT_PAIRS, warm_days: int = 0) -> None:
    """Block running the fake server; print the listening line (once ``warm_days`` are
    computed); stop on Ctrl-C / SIGTERM."""

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(partial(serve_fake_bybit, port, seed, host=host,
                                                    faults=faults, api_keys=api_keys,
                                                    limits=limits, pairs=pairs,
                                                    warm_days=warm_days))
                print(f"fake-bybit listening on http://{_netloc(host, bound)}", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

    trio.run(main)


def add_fake_bybit_args(parser: argparse.ArgumentParser) -> None:
    d = Faults()
    parser.add_argument("--port", type=_port, default=18080, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=int, default=7, help="sim market and fault RNG seed")
    parser.add_argument("--pairs", type=_pairs, default=DEFAULT_PAIRS,
                        help=f"size of the sim universe, {DEFAULT_PAIRS}..{MAX_PAIRS} (the "
                             "appliance's sim.pairs): the same seed and pairs serve the same "
                             "market")
    parser.add_argument("--warm-days", type=_warm_days, default=0,
                        help="compute the candles of the last N days of every pair before "
                             "listening (~70 KB a pair-day, kept): a bench's server then spends "
                             "its CPU on answers, not on generating the market; the answers "
                             "are the same")
    parser.add_argument("--latency-ms", type=float, default=d.latency_ms)
    parser.add_argument("--error-ratio", type=float, default=d.error_ratio,
                        help="fraction of requests answered HTTP 503")
    parser.add_argument("--rate-limit-storm", action="store_true",
                        help="answer every API request with retCode 10006")
    parser.add_argument("--drop-ratio", type=float, default=d.drop_ratio,
                        help="fraction of requests whose socket closes unanswered")
    parser.add_argument("--malformed-ratio", type=float, default=d.malformed_ratio,
                        help="fraction of answers with truncated JSON")
    parser.add_argument("--outage", choices=("drop", "stall"), default=None,
                        help="start down: close every API connection unanswered (drop) or "
                             "hold every API request unanswered (stall); lift it with "
                             "POST /admin/faults {\"outage\": \"\"}")
    parser.add_argument("--stall-max-s", type=float, default=d.stall_max_s,
                        help="a stalled request's connection is closed after this long")
    parser.add_argument("--ip-limit", type=_ip_limit, default=FakeLimits().ip_limit,
                        help="requests per 5 s per IP before HTTP 403 (Bybit: 600)")
    parser.add_argument("--api-key", default=next(iter(DEFAULT_API_KEYS)))
    parser.add_argument("--api-secret", default=next(iter(DEFAULT_API_KEYS.values())))


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _port(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_PORT}] (0 picks a free port)")
    return value


def _ip_limit(text: str) -> int:
    value = _integer(text)
    if value < 1:  # 0 or less would answer every request with HTTP 403
        raise argparse.ArgumentTypeError("must be 1 or more requests per 5 s")
    return value


def _pairs(text: str) -> int:
    value = _integer(text)
    if not DEFAULT_PAIRS <= value <= MAX_PAIRS:
        raise argparse.ArgumentTypeError(f"must be in [{DEFAULT_PAIRS}, {MAX_PAIRS}]")
    return value


def _warm_days(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_WARM_SYMBOL_DAYS // DEFAULT_PAIRS:
        raise argparse.ArgumentTypeError(
            f"must be in [0, {MAX_WARM_SYMBOL_DAYS // DEFAULT_PAIRS}] days")
    return value


def faults_from_args(ns: argparse.Namespace) -> Faults:
    return Faults(latency_ms=ns.latency_ms, error_ratio=ns.error_ratio,
                  rate_limit_storm=ns.rate_limit_storm, drop_ratio=ns.drop_ratio,
                  malformed_ratio=ns.malformed_ratio, outage=ns.outage or "",
                  stall_max_s=ns.stall_max_s)


def main_fake_bybit(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="methtrader fake-bybit",
                                     description="Loopback fake of the Bybit v5 REST API.")
    add_fake_bybit_args(parser)
    ns = parser.parse_args(argv)
    try:
        faults = faults_from_args(ns)
        check_warm_days(ns.pairs, ns.warm_days)
    except ValueError as exc:
        parser.error(str(exc))
    run_fake_bybit(ns.port, ns.seed, faults, {ns.api_key: ns.api_secret}, host=ns.host,
                   limits=FakeLimits(ip_limit=ns.ip_limit), pairs=ns.pairs,
                   warm_days=ns.warm_days)
    return 0

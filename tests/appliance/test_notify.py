"""Notifications: bus event always, webhook best effort, trading never held up.

Real-socket tests (a trio + h11 receiver on 127.0.0.1) run on the normal clock with short
backoffs; the tests that need time to jump use the autojump clock with ``httpx.MockTransport``.
"""

from __future__ import annotations

import inspect
import json
import logging
import socket
from collections.abc import Iterator
from functools import partial

import h11
import httpx
import pytest
import trio

from appliance.bus import Bus
from appliance.logs import JsonFormatter
from appliance.notify import Notifier, retry_after_s, safe_url

SECRET = "T0000/B0000/XXXXSECRETTOKEN"


class Receiver:
    """A tiny HTTP/1.1 server: answers each request with the next status of ``statuses``."""

    def __init__(self, statuses: list[int], body: bytes = b"ok") -> None:
        self.statuses = statuses
        self.body = body
        self.requests: list[tuple[str, str, bytes]] = []
        self.port = 0

    def _status(self) -> int:
        i = len(self.requests) - 1
        return self.statuses[min(i, len(self.statuses) - 1)]

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        for _ in range(100):  # requests per connection, bounded
            request: h11.Request | None = None
            body = b""
            for _ in range(1000):  # events per request, bounded
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
            if request is None:
                return
            self.requests.append((request.method.decode(), request.target.decode(), body))
            status = self._status()
            headers = [("content-type", "text/plain"), ("content-length", str(len(self.body)))]
            await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)))
            await stream.send_all(conn.send(h11.Data(data=self.body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def serve(self, nursery: trio.Nursery) -> str:
        listeners = await nursery.start(partial(trio.serve_tcp, self.handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]
        return f"http://127.0.0.1:{self.port}/services/{SECRET}?token=QSECRET"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_done(n: Notifier, count: int = 1, steps: int = 500) -> None:
    for _ in range(steps):
        if n.sent + n.failed >= count:
            return
        await trio.sleep(0.01)
    raise AssertionError(f"sender did not finish: sent={n.sent} failed={n.failed}")


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """Records of the "methtrader" tree, even after setup_logging turned propagation off."""
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            got.append(record)

    handler, logger = Keep(logging.DEBUG), logging.getLogger("methtrader")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield got
    logger.removeHandler(handler)
    logger.setLevel(old_level)


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_local_receiver_gets_the_post_with_the_text():
    rx = Receiver([200])
    async with trio.open_nursery() as nursery:
        url = await rx.serve(nursery)
        n = Notifier(None, url, backoff_initial_s=0.01)
        nursery.start_soon(n.run)
        n.notify("promotion", "model m1 promoted to prod", {"model": "m1"})
        await wait_done(n)
        nursery.cancel_scope.cancel()
    assert n.sent == 1 and n.failed == 0
    method, target, body = rx.requests[0]
    assert (method, target) == ("POST", f"/services/{SECRET}?token=QSECRET")
    assert json.loads(body)["text"] == "[methtrader] promotion: model m1 promoted to prod"


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_5xx_is_retried_until_delivered():
    rx = Receiver([500, 500, 200])
    async with trio.open_nursery() as nursery:
        url = await rx.serve(nursery)
        n = Notifier(None, url, backoff_initial_s=0.01, backoff_max_s=0.05)
        nursery.start_soon(n.run)
        n.notify("freeze", "deploys frozen", {})
        await wait_done(n)
        nursery.cancel_scope.cancel()
    assert (n.sent, n.failed) == (1, 0)
    assert len(rx.requests) == 3


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_receiver_down_gives_up_and_trading_keeps_ticking():
    ticks = 0

    async def trading() -> None:
        nonlocal ticks
        for _ in range(10_000):
            ticks += 1
            await trio.sleep(0.001)

    n = Notifier(None, f"http://127.0.0.1:{closed_port()}/services/{SECRET}", attempts=3,
                 backoff_initial_s=0.01, backoff_max_s=0.02, timeout_s=2.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trading)
        nursery.start_soon(n.run)
        assert n.notify("kill", "maintenance_mode on", {}) is None  # plain call, no coroutine
        await wait_done(n)
        nursery.cancel_scope.cancel()
    assert (n.sent, n.failed) == (0, 1)
    assert ticks > 0


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_webhook_down_never_delays_trading_on_autojump_clock(autojump_clock):
    calls: list[float] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        raise httpx.ConnectError("connection refused", request=request)

    tick_times: list[float] = []

    async def trading() -> None:
        start = trio.current_time()
        for i in range(120):
            tick_times.append(trio.current_time() - start)
            await trio.sleep(0.5)

    assert not inspect.iscoroutinefunction(Notifier.notify)
    n = Notifier(None, "https://hooks.example.com/x", attempts=5,
                 transport=httpx.MockTransport(refuse))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        before = trio.current_time()
        for i in range(3):  # three notifications, nothing awaited: no checkpoint, no time
            n.notify("kill", f"switch {i}", {})
        assert trio.current_time() == before
        await trading()
        nursery.cancel_scope.cancel()
    assert tick_times == [i * 0.5 for i in range(120)]  # not one tick late
    assert (n.sent, n.failed) == (0, 3)
    assert len(calls) == 15
    gaps = [b - a for a, b in zip(calls[:5], calls[1:5])]  # the first message's backoffs
    for i, gap in enumerate(gaps):  # 0.5 s doubling, plus up to 50% jitter
        assert 0.5 * 2**i - 1e-9 <= gap <= 0.5 * 2**i * 1.5 + 1e-9


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_queue_overflow_drops_the_oldest(autojump_clock, records):
    texts: list[str] = []

    def ok(request: httpx.Request) -> httpx.Response:
        texts.append(json.loads(request.content)["text"])
        return httpx.Response(200)

    n = Notifier(None, "https://hooks.example.com/x", max_queue=3,
                 transport=httpx.MockTransport(ok))
    for i in range(5):
        n.notify("archive", f"m{i}", {})
    assert (n.dropped, n.pending) == (2, 3)
    assert any("queue full" in r.getMessage() and r.levelno == logging.WARNING for r in records)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        await wait_done(n, 3)
        nursery.cancel_scope.cancel()
    assert texts == [f"[methtrader] archive: m{i}" for i in (2, 3, 4)]
    assert (n.sent, n.dropped, n.pending) == (3, 2, 0)


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_429_honours_retry_after_capped(autojump_clock):
    calls: list[float] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}),
                    httpx.Response(429, headers={"Retry-After": "3600"}),
                    httpx.Response(200)])

    def limited(request: httpx.Request) -> httpx.Response:
        calls.append(trio.current_time())
        return next(answers)

    n = Notifier(None, "https://hooks.example.com/x", backoff_max_s=30.0,
                 transport=httpx.MockTransport(limited))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(n.run)
        n.notify("rejection", "m2 rejected", {})
        await wait_done(n, steps=10_000)
        nursery.cancel_scope.cancel()
    assert n.sent == 1
    assert [round(b - a, 6) for a, b in zip(calls, calls[1:])] == [7.0, 30.0]


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_404_is_not_retried(records):
    rx = Receiver([404], body=b"no_service " + b"x" * 500)
    async with trio.open_nursery() as nursery:
        url = await rx.serve(nursery)
        n = Notifier(None, url, backoff_initial_s=0.01)
        nursery.start_soon(n.run)
        n.notify("promotion", "m1", {})
        await wait_done(n)
        await trio.sleep(0.05)  # a retry, if any, would land here
        nursery.cancel_scope.cancel()
    assert (n.sent, n.failed, len(rx.requests)) == (0, 1, 1)
    [err] = [r for r in records if r.levelno == logging.ERROR]
    assert err.fields["status"] == 404
    assert err.fields["body"].startswith("no_service") and len(err.fields["body"]) == 200


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_without_webhook_only_the_bus_event_is_published(tmp_path):
    bus = Bus(tmp_path / "bus")
    try:
        n = Notifier(bus, None)
        n.notify("freeze", "deploys frozen: drawdown 8.1%", {"drawdown": 0.081})
        [event] = bus.events_since(0, kinds=["notification"])
        assert event["data"] == {"kind": "freeze", "text": "deploys frozen: drawdown 8.1%",
                                 "data": {"drawdown": 0.081}}
        assert (n.pending, n.dropped) == (0, 0)
        with trio.move_on_after(0.05) as scope:
            await n.run()  # idles: nothing to send, nothing to crash
        assert scope.cancelled_caught and n.sent == n.failed == 0
    finally:
        bus.close()


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_webhook_token_never_reaches_the_logs(records):
    rx = Receiver([500, 404])
    async with trio.open_nursery() as nursery:
        url = await rx.serve(nursery)
        for target in (url, f"http://127.0.0.1:{closed_port()}/services/{SECRET}?token=QSECRET"):
            n = Notifier(None, target, attempts=2, backoff_initial_s=0.01, timeout_s=2.0)
            nursery.start_soon(n.run)
            n.notify("kill", "maintenance_mode on", {})
            await wait_done(n)
        nursery.cancel_scope.cancel()
    fmt = JsonFormatter()
    text = "\n".join(fmt.format(r) for r in records)
    assert "127.0.0.1" in text and "retrying" in text  # the logs do name the endpoint
    for secret in ("SECRETTOKEN", "QSECRET", "T0000", "/services"):
        assert secret not in text


def test_helpers():
    assert safe_url("https://hooks.slack.com/services/T/B/tok?x=1") == "https://hooks.slack.com"
    assert retry_after_s("2.5") == 2.5 and retry_after_s("nonsense") is None
    assert retry_after_s(None) is None
    with pytest.raises(ValueError):
        Notifier(None, "ftp://example.com/x")


class FakeWall:
    """The notifier's wall time, moved by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def sent_texts(bus: Bus) -> list[str]:
    return [e["data"]["text"] for e in bus.events_since(0, kinds=["notification"])]


def test_a_crash_loop_is_one_message_and_the_next_one_counts_the_repeats(tmp_path):
    wall = FakeWall()
    with Bus(tmp_path / "bus") as bus:
        n = Notifier(bus, None, dedupe_s=900.0, now=wall)
        for i in range(200):
            n.notify("service_crash", f"feed crashed: boom #{i}", {}, key="feed")
            wall.t += 1.0
        n.notify("service_crash", "trading crashed: boom", {}, key="trading")  # another subject
        assert sent_texts(bus) == ["feed crashed: boom #0", "trading crashed: boom"]
        wall.t += 900.0
        n.notify("service_crash", "feed crashed: boom #200", {}, key="feed")
        assert sent_texts(bus)[-1] == "feed crashed: boom #200 (199 repeat(s) since the last " \
                                      "message)"
        assert n.suppressed == 199


def test_without_a_key_nothing_is_folded(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        n = Notifier(bus, None, dedupe_s=900.0, now=FakeWall())
        for actor in ("alice", "bob", "alice"):
            n.notify("kill_switch", f"kill switch ON (by {actor})", {})
        assert len(sent_texts(bus)) == 3


def test_the_hourly_cap_holds_back_the_rest_and_says_so(tmp_path):
    wall = FakeWall()
    with Bus(tmp_path / "bus") as bus:
        n = Notifier(bus, None, max_per_hour=3, now=wall)
        for i in range(10):
            n.notify("incident:parity", f"m{i} diverged", {}, key=f"m{i}")
        assert sent_texts(bus) == ["m0 diverged", "m1 diverged", "m2 diverged"]
        wall.t += 3600.0
        n.notify("kill_switch", "kill switch ON", {})
        assert sent_texts(bus)[-1] == ("kill switch ON (7 other message(s) held back by the "
                                       "hourly cap)")


@pytest.mark.trio
@pytest.mark.timeout(30)
async def test_slack_gets_text_and_blocks_and_json_gets_the_data():
    rx = Receiver([200])
    async with trio.open_nursery() as nursery:
        url = await rx.serve(nursery)
        for fmt in ("slack", "json"):
            n = Notifier(None, url, backoff_initial_s=0.01, fmt=fmt)
            nursery.start_soon(n.run)
            n.notify("kill_switch", "kill switch ON (by alice: venue)", {"actor": "alice"})
            await wait_done(n)
        nursery.cancel_scope.cancel()
    slack, plain = (json.loads(body) for _, _, body in rx.requests)
    assert slack["text"] == "[methtrader] kill_switch: kill switch ON (by alice: venue)"
    assert slack["blocks"][0] == {"type": "section", "text": {
        "type": "mrkdwn", "text": "*kill_switch*: kill switch ON (by alice: venue)"}}
    assert slack["blocks"][1]["type"] == "context"
    assert plain["source"] == "methtrader" and plain["kind"] == "kill_switch"
    assert plain["data"] == {"actor": "alice"} and isinstance(plain["ts"], float)
    with pytest.raises(ValueError, match="format 'xml'"):
        Notifier(None, None, fmt="xml")

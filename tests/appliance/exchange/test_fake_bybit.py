"""The fake Bybit server over real TCP: wire shapes, limits, auth, faults, pybit compatibility."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
from pybit.exceptions import InvalidRequestError
from pybit.unified_trading import HTTP

from appliance.exchange.bybit import BybitExchange, BybitSettings
from appliance.exchange.bybit_wire import sign
from appliance.exchange.fake_bybit import FakeBybitApp, FakeBybitServer, FakeLimits, Faults
from appliance.exchange.fake_bybit_app import FakeRequest
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket

from tests.appliance.exchange.bybit_fixtures import KEY, SECRET, T0, fake_bybit, frozen

pytestmark = pytest.mark.timeout(30)

MIN = 60_000
REPO = Path(__file__).resolve().parents[3]


async def get(url: str, path: str, **params) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url) as client:
        return await client.get(path, params=params)


def resample(arr: np.ndarray, minutes: int) -> list[list[float]]:
    """Independent reference: aggregate 1m rows into buckets, oldest first."""
    out: dict[int, list[float]] = {}
    for t, o, h, lo, c, v, q in arr:
        b = int(t) // (minutes * MIN) * minutes * MIN
        if b not in out:
            out[b] = [b, o, h, lo, c, v, q]
        else:
            row = out[b]
            row[2], row[3], row[4] = max(row[2], h), min(row[3], lo), c
            row[5] += v
            row[6] += q
    return [out[k] for k in sorted(out)]


@pytest.mark.trio
async def test_envelope_and_server_time():
    now = T0 + 123_456
    async with fake_bybit(clock=frozen(now)) as (_, url):
        resp = await get(url, "/v5/market/time")
    body = resp.json()
    assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
    assert body["retCode"] == 0 and body["time"] == now
    assert body["result"] == {"timeSecond": str(now // 1000), "timeNano": str(now * 10**6)}
    assert resp.headers["Timenow"] == str(now)


@pytest.mark.trio
async def test_kline_newest_first_limits_and_resampling():
    now = T0 + 2 * 86_400_000
    market = SimMarket(7)
    async with fake_bybit(clock=frozen(now)) as (_, url):
        one = (await get(url, "/v5/market/kline", category="linear", symbol="ETHUSDT",
                         interval="1", end=T0 + 999 * MIN)).json()["result"]["list"]
        five = (await get(url, "/v5/market/kline", category="linear", symbol="ETHUSDT",
                          interval="5", start=T0, end=T0 + 600 * MIN - 1,
                          limit=1000)).json()["result"]["list"]
        too_many = (await get(url, "/v5/market/kline", symbol="ETHUSDT", interval="1",
                              limit=1001)).json()
        bad_interval = (await get(url, "/v5/market/kline", symbol="ETHUSDT",
                                  interval="7")).json()
        bad_symbol = (await get(url, "/v5/market/kline", symbol="NOPEUSDT",
                                interval="1")).json()
    assert len(one) == 200  # the default limit
    times = [int(r[0]) for r in one]
    assert times == sorted(times, reverse=True) and times[0] == T0 + 999 * MIN
    assert all(isinstance(x, str) for r in one for x in r) and all(len(r) == 7 for r in one)
    expected = resample(market.candles("ETHUSDT", T0, T0 + 600 * MIN), 5)
    got = [[float(x) for x in r] for r in reversed(five)]
    assert len(got) == 120
    np.testing.assert_allclose(np.array(got), np.array(expected), rtol=1e-12)
    assert too_many["retCode"] == 10001 and bad_interval["retCode"] == 10001
    assert bad_symbol["retCode"] == 10001 and bad_symbol["retMsg"] == "params error: symbol invalid"


@pytest.mark.trio
async def test_open_candle_is_a_stub_without_future_data():
    now = T0 + 10 * MIN + 30_000
    async with fake_bybit(clock=frozen(now)) as (_, url):
        rows = (await get(url, "/v5/market/kline", symbol="BTCUSDT", interval="1",
                          limit=2)).json()["result"]["list"]
    newest, closed = rows
    assert int(newest[0]) == T0 + 10 * MIN
    assert newest[1] == newest[2] == newest[3] == newest[4] and newest[5] == "0"
    ref = SimMarket(7).candles("BTCUSDT", T0 + 9 * MIN, T0 + 10 * MIN)[0]
    assert [float(x) for x in closed] == list(ref)


@pytest.mark.trio
async def test_instruments_cursor_pagination_and_tickers():
    now = T0 + 5 * MIN
    market = SimMarket(7)
    trading = {i.symbol for i in market.instruments(now) if i.status == "Trading"}
    seen: list[str] = []
    async with fake_bybit(clock=frozen(now)) as (_, url):
        cursor, pages = "", 0
        for _ in range(20):
            result = (await get(url, "/v5/market/instruments-info", category="linear", limit=5,
                                **({"cursor": cursor} if cursor else {}))).json()["result"]
            pages += 1
            seen += [i["symbol"] for i in result["list"]]
            cursor = result["nextPageCursor"]
            if not cursor:
                break
        tick = (await get(url, "/v5/market/tickers", category="linear",
                          symbol="SOLUSDT")).json()["result"]["list"]
        every = (await get(url, "/v5/market/tickers", category="linear")).json()["result"]["list"]
        bad_cursor = (await get(url, "/v5/market/instruments-info", category="linear",
                                cursor="zzz")).json()
    assert len(seen) == len(set(seen)) and set(seen) == trading
    assert pages == -(-len(trading) // 5)
    assert float(tick[0]["lastPrice"]) == market.last_price("SOLUSDT", now)
    assert {t["symbol"] for t in every} == {s for s in market.symbols() if market.listed(s, now)}
    assert bad_cursor["retCode"] == 10001


@pytest.mark.trio
async def test_a_200_pair_universe_is_served_as_the_sim_market_has_it():
    """``--pairs 200``: the real adapter, over TCP, sees the instruments and tickers that the
    sim market of the same seed and size has at that moment."""
    now = EPOCH_MS + 1040 * DAY_MS + 7 * MIN
    market = SimMarket(7, pairs=200)
    async with fake_bybit(clock=frozen(now), pairs=200) as (_, url), \
            BybitExchange(BybitSettings(base_url=url)) as ex:
        instruments, tickers = await ex.instruments(), await ex.tickers()

    def spec(i):
        return i.symbol, i.tick_size, i.qty_step, i.launch_time, i.delivery_time

    want = [spec(i) for i in market.instruments(now) if i.status == "Trading"]
    assert sorted(map(spec, instruments)) == sorted(want) and len(want) > 150
    assert {(t.symbol, t.last_price, t.bid, t.ask, t.turnover_24h) for t in tickers} == {
        (t.symbol, t.last_price, t.bid, t.ask, t.turnover_24h) for t in market.tickers(now)}


@pytest.mark.trio
async def test_rate_limit_headers_then_10006_with_future_reset():
    now = T0 + 250  # frozen: the 1 s window cannot roll during the test
    limits = FakeLimits(endpoint_limits={"/v5/market/time": 3})
    async with fake_bybit(clock=frozen(now), limits=limits) as (app, url):
        answers = [await get(url, "/v5/market/time") for _ in range(4)]
    statuses = [int(r.headers["X-Bapi-Limit-Status"]) for r in answers]
    assert [r.headers["X-Bapi-Limit"] for r in answers] == ["3"] * 4
    assert statuses == [2, 1, 0, 0]
    assert [r.json()["retCode"] for r in answers] == [0, 0, 0, 10006]
    assert answers[3].json()["retMsg"] == "Too many visits!"
    assert all(int(r.headers["X-Bapi-Limit-Reset-Timestamp"]) > now for r in answers)
    assert app.stats.ret_codes[10006] == 1


@pytest.mark.trio
async def test_ip_limit_answers_http_403():
    limits = FakeLimits(ip_limit=5, ip_window_ms=5000)
    async with fake_bybit(clock=frozen(T0), limits=limits) as (app, url):
        codes = [(await get(url, "/v5/market/time")).status_code for _ in range(7)]
    assert codes == [200] * 5 + [403, 403]
    assert app.stats.http_status[403] == 2


@pytest.mark.trio
async def test_pybit_wire_compatibility_public_and_private():
    market = SimMarket(7)
    async with fake_bybit() as (app, url):
        def with_pybit():
            session = HTTP(testnet=True, api_key=KEY, api_secret=SECRET, max_retries=1)
            session.endpoint = url
            kl = session.get_kline(category="linear", symbol="BTCUSDT", interval="1",
                                   start=T0, end=T0 + 299 * MIN, limit=1000)
            ack = session.place_order(category="linear", symbol="BTCUSDT", side="Buy",
                                      orderType="Market", qty="0.002", orderLinkId="t-1")
            pos = session.get_positions(category="linear", symbol="BTCUSDT")
            wallet = session.get_wallet_balance(accountType="UNIFIED", coin="USDT")
            return kl, ack, pos, wallet

        kl, ack, pos, wallet = await trio.to_thread.run_sync(with_pybit)
    rows = [[float(x) for x in r] for r in reversed(kl["result"]["list"])]
    assert rows == market.candles("BTCUSDT", T0, T0 + 300 * MIN).tolist()
    order_id = ack["result"]["orderId"]
    assert app.account(KEY).orders[order_id].status == "Filled"
    assert pos["result"]["list"][0]["size"] == "0.002"
    assert pos["result"]["list"][0]["side"] == "Buy"
    coin = wallet["result"]["list"][0]["coin"][0]
    assert coin["coin"] == "USDT" and float(coin["walletBalance"]) < 100_000


@pytest.mark.trio
async def test_signature_checks_10004_10003_10002():
    async with fake_bybit() as (_, url):
        def call(key: str, secret: str):
            session = HTTP(testnet=True, api_key=key, api_secret=secret, max_retries=1)
            session.endpoint = url
            with pytest.raises(InvalidRequestError) as info:
                session.get_positions(category="linear", settleCoin="USDT")
            return info.value.status_code

        assert await trio.to_thread.run_sync(call, KEY, "wrong-secret") == 10004
        assert await trio.to_thread.run_sync(call, "nobody", SECRET) == 10003
        stale = str(int(time.time() * 1000) - 60_000)
        query = "category=linear&settleCoin=USDT"
        headers = {"X-BAPI-API-KEY": KEY, "X-BAPI-TIMESTAMP": stale,
                   "X-BAPI-RECV-WINDOW": "5000",
                   "X-BAPI-SIGN": sign(SECRET, stale, KEY, "5000", query)}
        async with httpx.AsyncClient(base_url=url) as client:
            resp = await client.get(f"/v5/position/list?{query}", headers=headers)
    assert resp.json()["retCode"] == 10002


@pytest.mark.trio
async def test_fault_knobs_and_admin_endpoint():
    async with fake_bybit() as (app, url):
        async with httpx.AsyncClient(base_url=url) as client:
            r = await client.post("/admin/faults", json={"error_ratio": 1.0})
            assert r.status_code == 200 and r.json()["error_ratio"] == 1.0
            assert (await client.get("/v5/market/time")).status_code == 503
            await client.post("/admin/faults", json={"error_ratio": 0.0, "malformed_ratio": 1.0})
            with pytest.raises(json.JSONDecodeError):
                json.loads((await client.get("/v5/market/time")).content)
            await client.post("/admin/faults", json={"malformed_ratio": 0.0,
                                                     "rate_limit_storm": True})
            storm = await client.get("/v5/market/time")
            assert storm.json()["retCode"] == 10006
            assert int(storm.headers["X-Bapi-Limit-Reset-Timestamp"]) > int(storm.headers["Timenow"])
            await client.post("/admin/faults", json={"rate_limit_storm": False, "drop_ratio": 1.0})
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/v5/market/time")
            bad = await client.post("/admin/faults", json={"nonsense": 1})
            assert bad.status_code == 400 and "nonsense" in bad.json()["error"]
            bad = await client.post("/admin/faults", json={"error_ratio": 2})
            assert bad.status_code == 400
            stats = (await client.get("/admin/stats")).json()
    assert stats["faults"] == {"5xx": 1, "malformed": 1, "storm": 1, "drop": 1}
    assert app.faults == Faults(drop_ratio=1.0)


@pytest.mark.trio
async def test_outage_modes_drop_or_stall_every_api_call_but_spare_the_admin_routes():
    async with fake_bybit(clock=frozen(T0)) as (app, url):
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            r = await client.post("/admin/faults", json={"outage": "drop"})
            assert r.status_code == 200 and r.json()["outage"] == "drop"
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get("/v5/market/time")
            await client.post("/admin/faults", json={"outage": "stall"})
            answers: list[httpx.Response] = []

            async def ask() -> None:
                answers.append(await client.get("/v5/market/time"))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask)
                with trio.fail_after(5):
                    while not app.stats.faults["outage_stall"]:
                        await trio.sleep(0.01)
                await trio.sleep(0.3)
                assert answers == []  # held, while the admin routes still answer
                assert (await client.get("/admin/faults")).json()["outage"] == "stall"
                await client.post("/admin/faults", json={"outage": ""})
            assert answers[0].status_code == 200 and answers[0].json()["retCode"] == 0
            await client.post("/admin/faults", json={"outage": "stall", "stall_max_s": 0.2})
            with trio.fail_after(5), pytest.raises(httpx.RemoteProtocolError):
                await client.get("/v5/market/time")  # bounded: dropped after stall_max_s
            assert (await client.post("/admin/faults", json={"outage": "burn"})).status_code \
                == 400
            assert (await client.post("/admin/faults", json={"stall_max_s": 601})).status_code \
                == 400
    assert app.stats.faults == {"outage_drop": 1, "outage_stall": 2}
    assert app.stats.requests == 1  # only the stalled request answered after the lift


@pytest.mark.trio
async def test_a_fault_applies_at_once_while_market_work_is_queued():
    """The admin routes and the outage check wait for the request in progress only, not for
    the queue of API requests behind it: a drop set while big kline requests are queued
    refuses the next request read (the requests admitted before it are still answered)."""
    app = FakeBybitApp(7, clock=frozen(T0), fault_seed=1)
    server = FakeBybitServer(app)
    handle_api = app._handle_api

    def slow(req: FakeRequest):
        time.sleep(0.2)  # a big kline request
        return handle_api(req)

    app._handle_api = slow
    backlog = 8
    codes: list[int] = []
    async with trio.open_nursery() as servers:
        port = await servers.start(server.serve, 0)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                     limits=httpx.Limits(max_connections=2 * backlog)) as client:
            async def ask() -> None:
                codes.append((await client.get("/v5/market/time")).status_code)

            async with trio.open_nursery() as nursery:
                for _ in range(backlog):
                    nursery.start_soon(ask)
                with trio.fail_after(10):  # one in progress, the others waiting their turn
                    while server._limiter.statistics().tasks_waiting < backlog - 1:
                        await trio.sleep(0.01)
                r = await client.post("/admin/faults", json={"outage": "drop"})
                answered_before = app.stats.requests
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/v5/market/time")
                still_queued = server._limiter.statistics().tasks_waiting
        servers.cancel_scope.cancel()
    assert r.status_code == 200 and r.json()["outage"] == "drop"
    assert answered_before <= 2 and still_queued > 0  # the fault did not wait for the queue
    assert codes == [200] * backlog  # admitted before the fault: answered
    assert app.stats.faults == {"outage_drop": 1} and app.stats.requests == backlog


def test_warm_days_are_computed_before_serving_and_answer_the_same_klines():
    """``--warm-days``: a bench's server computes the market's last days before it listens,
    so answering costs no generation; the answers are those of a server that computes them
    on demand, and the warmed days stay computed (they are not evicted by each other)."""
    def klines(app: FakeBybitApp, symbol: str, end_ms: int) -> bytes:
        query = f"category=linear&symbol={symbol}&interval=1&limit=1000&end={end_ms}"
        return app.handle(FakeRequest("GET", "/v5/market/kline", query, {}, b"",
                                      "127.0.0.1")).body

    cold = FakeBybitApp(7, clock=frozen(T0), pairs=40)
    warm = FakeBybitApp(7, clock=frozen(T0), pairs=40, warm_days=45)
    computed = warm.market._cached_rows
    assert computed >= 45 * 40  # every pair's 45 days, before any request
    symbols = warm.market.symbols()
    now_ms = int(T0 * 1000)
    for symbol in (symbols[0], symbols[23], symbols[39]):
        for days_back in (0, 1, 20, 44):
            end = now_ms - days_back * DAY_MS
            assert klines(warm, symbol, end) == klines(cold, symbol, end)
    assert warm.market._cached_rows == computed  # nothing generated on demand, none evicted
    with pytest.raises(ValueError, match="pair-days"):
        FakeBybitApp(7, clock=frozen(T0), pairs=400, warm_days=60)


def test_fault_sequence_is_deterministic_per_seed():
    def run(seed: int) -> list[tuple[int, bool]]:
        app = FakeBybitApp(7, faults=Faults(error_ratio=0.3, drop_ratio=0.3), fault_seed=seed,
                           clock=frozen(T0))
        req = FakeRequest("GET", "/v5/market/time", "", {}, b"", "127.0.0.1")
        return [(r.status, r.drop) for r in (app.handle(req) for _ in range(40))]

    assert run(3) == run(3)
    slow = FakeBybitApp(7, faults=Faults(latency_ms=250), clock=frozen(T0))
    assert slow.handle(FakeRequest("GET", "/v5/market/time", "", {}, b"", "::1")).latency_ms == 250
    assert run(3) != run(4)
    assert {s for s, _ in run(3)} == {200, 503} and any(d for _, d in run(3))


@pytest.mark.trio
async def test_garbage_http_gets_400_and_the_server_keeps_serving():
    async with fake_bybit() as (_, url):
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
            reply = await stream.receive_some(4096)
        assert reply.startswith(b"HTTP/1.1 400")
        assert (await get(url, "/v5/market/time")).status_code == 200


def test_cli_entry_prints_listening_line_and_stops_on_ctrl_c():
    code = ("import sys; from appliance.exchange.fake_bybit import main_fake_bybit; "
            "sys.exit(main_fake_bybit(['--port', '0', '--seed', '3', '--error-ratio', '0.1']))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("fake-bybit listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        faults = httpx.get(f"http://127.0.0.1:{port}/admin/faults").json()
        assert faults["error_ratio"] == 0.1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

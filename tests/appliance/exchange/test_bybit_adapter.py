"""BybitExchange against the fake Bybit over real TCP on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from decimal import Decimal

import httpx
import pytest
import trio

from appliance.domain import OrderIntent, Side
from appliance.exchange.base import Exchange, ExchangeError, RateLimited, yielding_to_rate_limits
from appliance.exchange.bybit import (BybitApiError, BybitAuthError, BybitExchange, BybitSettings,
                                     ValidationError)
from appliance.exchange.fake_bybit import FakeLimits
from appliance.exchange.ratelimit import Priority, RateLimiter
from appliance.exchange.simmarket import SimMarket
from models.costs import CostModel, quoted_half_spread

from tests.appliance.exchange.bybit_fixtures import KEY, SECRET, T0, at_window_start, fake_bybit

pytestmark = [pytest.mark.trio, pytest.mark.timeout(30)]

MIN = 60_000


def settings(url: str, **kw) -> BybitSettings:
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    return BybitSettings(base_url=url, **kw)


def live(url: str, **kw) -> BybitSettings:
    return settings(url, paper=False, api_key=KEY, api_secret=SECRET, **kw)


async def test_paged_backfill_returns_every_minute_once_ascending_equal_to_sim():
    start, end = T0 + 17 * MIN, T0 + 3017 * MIN
    async with fake_bybit() as (app, url), BybitExchange(settings(url)) as ex:
        assert isinstance(ex, Exchange)
        candles = await ex.klines("ETHUSDT", "1m", start, end)
        unaligned = await ex.klines("ETHUSDT", "1m", start - 30_000, start + 2 * MIN)
    times = [c.open_time for c in candles]
    assert len(candles) == 3000
    assert times == list(range(start, end, MIN))
    assert candles == SimMarket(7).candle_records("ETHUSDT", start, end)
    assert [c.open_time for c in unaligned] == [start, start + MIN]
    # three full pages for the backfill, one for the small call; the server sent them newest first
    assert app.stats.by_path["/v5/market/kline"] == 4


async def test_resampled_interval_and_open_candle_dropped():
    now_ms = T0 + 400 * MIN + 30_000  # the 5m candle from T0+400min is still open
    async with fake_bybit(clock=lambda: now_ms / 1000) as (_, url), \
            BybitExchange(settings(url)) as ex:
        five = await ex.klines("BTCUSDT", "5m", T0, T0 + 1000 * MIN)
    assert [c.open_time for c in five] == list(range(T0, T0 + 400 * MIN, 5 * MIN))
    assert all(c.interval == "5m" for c in five)
    sim = SimMarket(7).candles("BTCUSDT", T0, T0 + 5 * MIN)
    assert five[0].high == sim[:, 2].max() and five[0].close == sim[-1, 4]
    assert five[0].volume == pytest.approx(sim[:, 5].sum(), rel=1e-12)


async def test_instruments_tickers_and_server_time():
    async with fake_bybit() as (_, url), BybitExchange(settings(url)) as ex:
        instruments = await ex.instruments()
        tickers = await ex.tickers()
        server = await ex.server_time_ms()
    assert abs(server - time.time() * 1000) < 5_000
    assert {i.symbol for i in instruments} == {t.symbol for t in tickers}
    btc = next(i for i in instruments if i.symbol == "BTCUSDT")
    assert btc.tick_size == Decimal("0.10") and btc.qty_step == Decimal("0.001")


async def test_rate_limit_headers_are_tracked_and_reported():
    seen: list[tuple[str, float]] = []
    async with fake_bybit(clock=at_window_start()) as (_, url), \
            BybitExchange(live(url), on_usage=lambda e, f: seen.append((e, f))) as ex:
        usages = []
        for _ in range(3):
            await ex.positions()
            usages.append(ex.limiter.usage("/v5/position/list"))
        assert ex.rate_limit_usage() == pytest.approx(3 / 50)
    assert usages == [pytest.approx(n / 50) for n in (1, 2, 3)]  # limit 50/s, one window
    assert any(e == "/v5/position/list" and f > 0 for e, f in seen)


async def test_10006_backoff_waits_for_the_reset_then_succeeds():
    async with fake_bybit() as (app, url), BybitExchange(settings(url)) as ex:
        app.faults = replace(app.faults, rate_limit_storm=True)
        result: list[int] = []

        async def fetch() -> None:
            result.append(await ex.server_time_ms())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch)
            for _ in range(2000):
                if app.stats.ret_codes[10006]:
                    break
                await trio.sleep(0.001)
            app.faults = replace(app.faults, rate_limit_storm=False)
    assert result and app.stats.ret_codes[10006] >= 1
    log = [e for e in app.stats.log if e[2] == "/v5/market/time"]
    announced = list(app.stats.resets_10006)
    # every retry arrived at or after the reset announced with the 10006 before it
    for (_, _, _, _, _, code), (_, _, _, t_next, _, _), reset in zip(log, log[1:], announced):
        assert code == 10006 and t_next >= reset - 5  # 5 ms slack for time.time vs monotonic
    assert ex.limiter.endpoint_backoffs == len(announced)


async def test_a_caller_that_yields_to_rate_limits_gives_up_at_the_first_refusal():
    """Discovery's calls are not retried through a rate-limit storm (one request each, a
    RateLimited error); everyone else's still retry, and end as RateLimited when the storm
    outlasts their retries."""
    async with fake_bybit() as (app, url), \
            BybitExchange(settings(url, max_retries=2)) as ex:
        app.faults = replace(app.faults, rate_limit_storm=True)
        with yielding_to_rate_limits(), pytest.raises(RateLimited, match="10006"):
            await ex.tickers()
        assert app.stats.by_path["/v5/market/tickers"] == 1
        with pytest.raises(RateLimited, match="10006"):
            await ex.tickers()  # not yielding: retried max_retries times
        assert app.stats.by_path["/v5/market/tickers"] == 1 + 3
        app.faults = replace(app.faults, rate_limit_storm=False)
        with yielding_to_rate_limits():
            assert await ex.tickers()


async def test_5xx_and_dropped_sockets_are_retried():
    async with fake_bybit() as (app, url), BybitExchange(settings(url)) as ex:
        app.faults = replace(app.faults, error_ratio=0.4, drop_ratio=0.3)
        times = [await ex.server_time_ms() for _ in range(12)]
    assert len(times) == 12
    assert app.stats.faults["5xx"] >= 1 and app.stats.faults["drop"] >= 1
    assert ex.retries >= app.stats.faults["5xx"]


async def test_a_dropped_or_stalled_venue_fails_each_call_within_a_bound():
    """A venue that closes every connection fails a call after max_retries; one that never
    answers fails it after max_timeouts of timeout_s, not max_retries of them."""
    async with fake_bybit() as (app, url), \
            BybitExchange(settings(url, timeout_s=0.2, max_timeouts=2)) as ex:
        app.faults = replace(app.faults, outage="stall")
        t0 = trio.current_time()
        with pytest.raises(ExchangeError, match="stalls"):
            await ex.server_time_ms()
        assert trio.current_time() - t0 < 2 * 0.2 + 1.0
        assert app.stats.faults["outage_stall"] == 2
        app.faults = replace(app.faults, outage="drop")
        with pytest.raises(ExchangeError):
            await ex.server_time_ms()
        assert app.stats.faults["outage_drop"] == ex.settings.max_retries + 1
        app.faults = replace(app.faults, outage="")
        assert await ex.server_time_ms() > 0  # back at once when the venue is


async def test_dropped_order_response_is_not_sent_twice():
    """The server fills the order but the answer is lost; the retry (same orderLinkId) gets
    110072 and the adapter recovers the one fill instead of trading twice."""
    async with fake_bybit() as (app, url), BybitExchange(live(url)) as ex:
        app.faults = replace(app.faults, drop_ratio=1.0)
        fills = []

        async def order() -> None:
            fills.append(await ex.place_order(OrderIntent("BTCUSDT", Side.BUY, Decimal("0.004"))))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(order)
            for _ in range(2000):
                if app.stats.faults["drop"]:
                    break
                await trio.sleep(0.001)
            app.faults = replace(app.faults, drop_ratio=0.0)
    account = app.account(KEY)
    assert len(account.orders) == 1
    assert app.stats.ret_codes[110072] >= 1
    (only,) = account.orders.values()
    assert fills[0].order_id == only.order_id and fills[0].qty == Decimal("0.004")
    assert fills[0].price == only.avg_price


async def test_malformed_json_is_rejected_counted_and_retried_until_giving_up():
    async with fake_bybit() as (app, url), BybitExchange(settings(url, max_retries=2)) as ex:
        app.faults = replace(app.faults, malformed_ratio=1.0)
        with pytest.raises(ValidationError, match="not JSON"):
            await ex.klines("BTCUSDT", "1m", T0, T0 + 10 * MIN)
    assert ex.invalid_payloads == 3
    assert app.stats.by_path["/v5/market/kline"] == 3


def page(rows, symbol="BTCUSDT"):
    return {"retCode": 0, "retMsg": "OK", "result": {"symbol": symbol, "category": "linear",
                                                     "list": rows}, "retExtInfo": {}, "time": T0 * 2}


def row(t, o=10, h=12, lo=9, c=11, v=1, q=10):
    return [str(t), *(str(x) for x in (o, h, lo, c, v, q))]


BAD_PAGES = {
    "unsorted": [row(T0), row(T0 + MIN)],
    "duplicate": [row(T0 + MIN), row(T0 + MIN)],
    "high below low": [row(T0 + MIN, h=8), row(T0)],
    "non-numeric": [row(T0 + MIN, c="abc"), row(T0)],
    "missing field": [[str(T0 + MIN), "1", "2", "1"]],
    "off grid": [row(T0 + 1)],
    "outside window": [row(T0 + 50 * MIN)],
    "nan": [row(T0, v="NaN")],
}


@pytest.mark.parametrize("case", sorted(BAD_PAGES))
async def test_contract_violations_raise_once_and_return_nothing(case):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(200, content=json.dumps(page(BAD_PAGES[case])).encode())

    async with BybitExchange(settings("http://fake.invalid"),
                             transport=httpx.MockTransport(handler)) as ex:
        with pytest.raises(ValidationError):
            await ex.klines("BTCUSDT", "1m", T0, T0 + 2 * MIN)
    assert ex.invalid_payloads == 1 and len(calls) == 1


async def test_newest_first_page_is_accepted_and_reversed():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(page([row(T0 + MIN, c=10.5),
                                                            row(T0)])).encode())

    async with BybitExchange(settings("http://fake.invalid"),
                             transport=httpx.MockTransport(handler)) as ex:
        candles = await ex.klines("BTCUSDT", "1m", T0, T0 + 2 * MIN)
    assert [c.open_time for c in candles] == [T0, T0 + MIN]
    assert candles[1].close == 10.5 and ex.invalid_payloads == 0


async def test_bad_signature_and_unknown_key_are_clear_errors(caplog):
    caplog.set_level(logging.DEBUG)
    async with fake_bybit() as (_, url):
        async with BybitExchange(settings(url, paper=False, api_key=KEY,
                                          api_secret="not-the-secret")) as ex:
            with pytest.raises(BybitApiError) as bad_sign:
                await ex.balance()
        async with BybitExchange(settings(url, paper=False, api_key="stranger",
                                          api_secret=SECRET)) as ex2:
            with pytest.raises(BybitApiError) as bad_key:
                await ex2.positions()
    assert bad_sign.value.ret_code == 10004 and "retCode 10004" in str(bad_sign.value)
    assert bad_key.value.ret_code == 10003
    for refused in (bad_sign.value, bad_key.value):  # no retry mends a key: run stops on it
        assert isinstance(refused, BybitAuthError) and refused.fatal
        assert str(refused).startswith("Bybit refused the API key")
    text = str(bad_sign.value) + repr(ex) + repr(ex.settings) + caplog.text
    assert "not-the-secret" not in text and KEY not in str(bad_sign.value)


async def test_clock_skew_10002_resyncs_and_succeeds():
    skew_s = 60.0
    async with fake_bybit(clock=lambda: time.time() + skew_s) as (app, url), \
            BybitExchange(live(url)) as ex:
        assert await ex.positions() == []
    assert app.stats.ret_codes[10002] == 1
    assert abs(ex._offset_ms - skew_s * 1000) < 2_000


async def test_ip_limit_403_pauses_everything_then_recovers():
    limits = FakeLimits(ip_limit=8, ip_window_ms=400)
    async with fake_bybit(limits=limits) as (app, url), BybitExchange(settings(url)) as ex:
        times = [await ex.server_time_ms() for _ in range(20)]
    assert len(times) == 20
    assert app.stats.http_status[403] >= 1
    assert ex.limiter.global_pauses == app.stats.http_status[403]


async def test_backfill_flood_does_not_hold_up_orders():
    limiter = RateLimiter(capacity=20, window_s=0.5)
    async with fake_bybit() as (app, url), BybitExchange(live(url), limiter=limiter) as ex:
        # the fake's first page of a symbol builds its market (~0.8 s on a cold process):
        # the flood's pages would all queue behind it, whatever the limiter did
        await ex.klines("BTCUSDT", "1m", T0 - MIN, T0)
        await trio.sleep(limiter.window_s)

        async def backfill(i: int) -> None:
            await ex.klines("BTCUSDT", "1m", T0 + i * MIN, T0 + (i + 1) * MIN,
                            priority=Priority.BACKFILL)

        async with trio.open_nursery() as nursery:
            for i in range(48):
                nursery.start_soon(backfill, i)
            for _ in range(5000):  # until the flood is being throttled by its ceiling
                if limiter.waited[Priority.BACKFILL]:
                    break
                await trio.sleep(0.001)
            assert limiter.shared_usage(trio.current_time()) >= 0.6
            fill = await ex.place_order(OrderIntent("ETHUSDT", Side.SELL, Decimal("0.05")))
            kline_before_done = app.stats.by_path["/v5/market/kline"]
    assert fill.qty == Decimal("0.05")
    assert limiter.waited[Priority.ORDER] == 0  # never queued behind the flood
    paths = [e[2] for e in app.stats.log][1:]  # the flood's, after the warm-up page
    assert paths.index("/v5/order/create") < 24 and kline_before_done - 1 < 48
    assert paths.count("/v5/market/kline") == 48


async def test_a_live_update_does_not_queue_behind_the_pages_of_a_backfill():
    """The feed's minute (one page, live priority) is sent while a backfill's pages still wait
    for their ``backfill_concurrency`` slots, not after all of them (the datasets service
    queues a backfill's pages at once: hundreds for new pairs)."""
    async with fake_bybit() as (app, url), \
            BybitExchange(settings(url, backfill_concurrency=2)) as ex:
        app.faults = replace(app.faults, latency_ms=50.0)  # each page holds its slot a while
        pages = 24
        backfill_done: list[int] = []

        async def backfill() -> None:
            rows = await ex.klines_array("BTCUSDT", T0, T0 + pages * 1000 * MIN)
            backfill_done.append(len(rows))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(backfill)
            while app.stats.by_path["/v5/market/kline"] < 2:  # both slots taken
                await trio.sleep(0.001)
            live = await ex.klines_array("ETHUSDT", T0, T0 + MIN)
            served_before_live = app.stats.by_path["/v5/market/kline"] - 1
            assert not backfill_done
    assert len(live) == 1 and backfill_done == [pages * 1000]
    # first come, first served, it would have been the last of the 25 requests
    assert served_before_live < pages // 2


async def test_paper_orders_fill_at_last_seen_price_without_private_calls():
    async with fake_bybit() as (app, url), BybitExchange(settings(url)) as ex:
        await ex.klines("SOLUSDT", "1m", T0, T0 + 10 * MIN)  # old history: not a price
        fill = await ex.place_order(OrderIntent("SOLUSDT", Side.BUY, Decimal("1.5")))
        assert app.stats.by_path["/v5/market/tickers"] == 1  # fetched a fresh last price
        again = await ex.place_order(OrderIntent("SOLUSDT", Side.SELL, Decimal("0.5")))
        assert app.stats.by_path["/v5/market/tickers"] == 1  # reused: seen < 5 s ago
        pos = await ex.positions()
        bal = await ex.balance()
        with pytest.raises(ExchangeError):
            await ex.cancel_order("SOLUSDT", fill.order_id)
    market = SimMarket(7)
    candidates = set()
    for t in (fill.ts - 2_000, fill.ts):  # the minute may turn in between
        last = market.last_price("SOLUSDT", t)
        half = quoted_half_spread(*market.quote("SOLUSDT", last))  # the ticker's bid/ask
        candidates.add(Decimal(str(last)) * (1 + Decimal("0.0002") + Decimal(str(half))))
    assert any(abs(fill.price - c) <= Decimal("0.01") for c in candidates)
    assert again.ts >= fill.ts and again.side is Side.SELL
    assert pos[0].symbol == "SOLUSDT" and pos[0].qty == Decimal("1.0")
    assert bal.wallet == Decimal(100_000) - fill.fee - again.fee + pos[0].realized_pnl
    assert not any(p.startswith(("/v5/order", "/v5/position", "/v5/account"))
                   for p in app.stats.by_path)


async def test_live_order_positions_and_balance_over_the_wire():
    async with fake_bybit() as (app, url), BybitExchange(live(url)) as ex:
        fill = await ex.place_order(OrderIntent("ETHUSDT", Side.BUY, Decimal("0.30"),
                                                order_link_id="strategy-1"))
        pos = await ex.positions()
        bal = await ex.balance()
        with pytest.raises(BybitApiError) as cancel:
            await ex.cancel_order("ETHUSDT", fill.order_id)
    broker = app.account(KEY).broker
    assert pos == [p for p in broker.positions.values() if p.qty]
    assert bal.wallet == broker.wallet and bal.positions == tuple(pos)
    assert fill.fee == Decimal(100_000) - broker.wallet
    assert app.account(KEY).by_link["strategy-1"] == fill.order_id
    assert cancel.value.ret_code == 110001


async def test_settings_validation_and_secrets_out_of_repr():
    with pytest.raises(ValueError):
        BybitSettings(network="moon")  # type: ignore[arg-type]
    with pytest.raises(ExchangeError, match="api_key"):
        BybitExchange(BybitSettings(paper=False))
    s = BybitSettings(network="testnet", api_key="k-123", api_secret="s-456")
    assert s.url == "https://api-testnet.bybit.com"
    assert "s-456" not in repr(s) and "k-123" not in repr(s)


async def test_the_accounts_fee_rate_per_symbol_comes_from_the_venue_when_keys_exist():
    """Issue 10, costs: the venue's own per-symbol taker fee when keys exist and the endpoint
    answers; without keys nothing is asked and the configured fee applies."""
    async with fake_bybit(taker_fee=0.0004) as (app, url):
        async with BybitExchange(settings(url)) as keyless:
            assert await keyless.fee_rates() == {}
        assert app.stats.by_path.get("/v5/account/fee-rate", 0) == 0
        async with BybitExchange(live(url)) as ex:
            fees = await ex.fee_rates()
    assert fees["BTCUSDT"] == 0.0004 and set(fees) == set(SimMarket(7).symbols())
    costs = CostModel(taker_fee=0.00055).with_fees(fees)
    assert costs.fee("BTCUSDT") == 0.0004 and costs.fee("NOTLISTED") == 0.00055
    assert costs.with_spreads({"BTCUSDT": 1e-4}).fee("BTCUSDT") == 0.0004  # kept


async def test_a_fee_rate_that_is_not_one_is_refused():
    from appliance.exchange.bybit_wire import parse_fee_rates
    assert parse_fee_rates({"list": [{"symbol": "BTCUSDT", "takerFeeRate": "0.00055",
                                      "makerFeeRate": "0.0002"}]}) == {"BTCUSDT": 0.00055}
    for bad in ("-0.001", "0.5", "nan"):
        with pytest.raises(ValidationError):
            parse_fee_rates({"list": [{"symbol": "BTCUSDT", "takerFeeRate": bad}]})

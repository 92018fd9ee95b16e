"""The shared-budget rate limiter, on trio's autojump MockClock: all times are virtual."""

from __future__ import annotations

import pytest
import trio

from appliance.exchange.ratelimit import (SHARED, LimitHeaders, Priority, RateLimiter,
                                          parse_limit_headers)

pytestmark = pytest.mark.timeout(30)

EP = "/v5/market/kline"

# wide gaps between the ceilings make each rule visible in a small window
CEILINGS = {Priority.ORDER: 1.0, Priority.LIVE: 0.85, Priority.BACKFILL: 0.6,
            Priority.DISCOVERY: 0.4}


async def grant_times(limiter: RateLimiter, priority: Priority, n: int,
                      endpoint: str = EP) -> list[float]:
    out = []
    for _ in range(n):
        await limiter.acquire(priority, endpoint)
        out.append(trio.current_time())
    return out


def test_parse_limit_headers():
    h = {"x-bapi-limit": "10", "x-bapi-limit-status": "7", "x-bapi-limit-reset-timestamp": "99"}
    assert parse_limit_headers(h) == LimitHeaders(10, 7, 99)
    assert parse_limit_headers({**h, "x-bapi-limit": "ten"}) is None
    assert parse_limit_headers({"x-bapi-limit": "10"}) is None


@pytest.mark.trio
async def test_shared_window_blocks_until_oldest_permit_expires(autojump_clock):
    limiter = RateLimiter(capacity=10, window_s=1.0)
    t0 = trio.current_time()
    times = await grant_times(limiter, Priority.ORDER, 12)
    assert [t - t0 for t in times[:10]] == [0.0] * 10
    assert [round(t - t0, 9) for t in times[10:]] == [1.0, 1.0]
    assert limiter.waited[Priority.ORDER] == 1  # the 12th found room once the 11th got in


@pytest.mark.trio
async def test_ceilings_keep_headroom_for_orders(autojump_clock):
    limiter = RateLimiter(capacity=10, window_s=1.0, ceilings=CEILINGS)
    t0 = trio.current_time()
    backfill = await grant_times(limiter, Priority.BACKFILL, 7)
    assert [round(t - t0, 9) for t in backfill] == [0.0] * 6 + [1.0]
    order = await grant_times(limiter, Priority.ORDER, 4)
    # at t0+1 the first six have expired and one backfill permit is in the window: the
    # orders go at once
    assert [round(t - t0, 9) for t in order] == [1.0] * 4
    discovery = await grant_times(limiter, Priority.DISCOVERY, 1)
    # 5 permits in the window, DISCOVERY's ceiling is 4: it waits for the t0+1 batch to expire
    assert round(discovery[0] - t0, 9) == 2.0


@pytest.mark.trio
async def test_backfill_flood_does_not_delay_an_order(autojump_clock):
    limiter = RateLimiter(capacity=10, window_s=1.0, ceilings=CEILINGS)
    grants: list[tuple[str, float]] = []
    t0 = trio.current_time()

    async def one(kind: str, priority: Priority) -> None:
        await limiter.acquire(priority, EP)
        grants.append((kind, round(trio.current_time() - t0, 9)))

    async with trio.open_nursery() as nursery:
        for _ in range(30):
            nursery.start_soon(one, "backfill", Priority.BACKFILL)
        await trio.sleep(0.25)
        nursery.start_soon(one, "order", Priority.ORDER)
    kinds = [k for k, _ in grants]
    assert kinds.index("order") == 6  # right after the 6 permits backfill may hold
    assert dict(grants)["order"] == 0.25  # granted the moment it asked
    assert limiter.waited[Priority.ORDER] == 0
    backfill_per_window = [sum(1 for k, t in grants if k == "backfill" and int(t) == w)
                           for w in range(5)]
    assert backfill_per_window == [6, 6, 6, 6, 6]


@pytest.mark.trio
async def test_lower_priority_defers_to_a_waiting_higher_one(autojump_clock):
    limiter = RateLimiter(capacity=4, window_s=1.0)
    await grant_times(limiter, Priority.ORDER, 4)  # window full until t0 + 1
    order: list[str] = []

    async def one(kind: str, priority: Priority) -> None:
        await limiter.acquire(priority, EP)
        order.append(kind)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one, "live", Priority.LIVE)
        await trio.sleep(0.1)
        nursery.start_soon(one, "order", Priority.ORDER)
    assert order == ["order", "live"]


@pytest.mark.trio
async def test_server_reported_usage_gates_lower_priorities(autojump_clock):
    seen: list[tuple[str, float]] = []
    limiter = RateLimiter(capacity=100, window_s=1.0, ceilings=CEILINGS, on_usage=lambda e, f: seen.append((e, f)))
    t0 = trio.current_time()
    # 7 of 10 used, the window resets 0.4 s from the reference time
    limiter.observe(EP, LimitHeaders(10, 3, reset_ms=5_400), reference_ms=5_000)
    assert limiter.usage(EP) == pytest.approx(0.7)
    assert (EP, pytest.approx(0.7)) in seen
    assert limiter.max_usage() == pytest.approx(0.7)
    await limiter.acquire(Priority.LIVE, EP)  # 0.7 < 0.85
    assert trio.current_time() == t0
    await limiter.acquire(Priority.BACKFILL, EP)  # 0.7 >= 0.6: waits for the reset
    assert round(trio.current_time() - t0, 9) == 0.4
    assert limiter.usage(EP) == 0.0


@pytest.mark.trio
async def test_10006_backoff_blocks_one_endpoint_for_everyone(autojump_clock):
    limiter = RateLimiter(capacity=100, window_s=1.0, max_backoff_s=2.0)
    t0 = trio.current_time()
    assert limiter.backoff(EP, 0.5) == 0.5
    await limiter.acquire(Priority.ORDER, "/v5/order/create")  # another endpoint: free
    assert trio.current_time() == t0
    assert limiter.usage(EP) == 1.0
    await limiter.acquire(Priority.ORDER, EP)
    assert round(trio.current_time() - t0, 9) == 0.5
    assert limiter.backoff(EP, 60.0) == 2.0  # capped
    assert limiter.endpoint_backoffs == 2


@pytest.mark.trio
async def test_pause_all_blocks_every_endpoint_and_is_capped(autojump_clock):
    limiter = RateLimiter(capacity=100, window_s=1.0, max_backoff_s=3.0)
    t0 = trio.current_time()
    assert limiter.pause_all(600.0) == 3.0
    await limiter.acquire(Priority.ORDER, "/v5/order/create")
    assert round(trio.current_time() - t0, 9) == 3.0
    assert limiter.global_pauses == 1


@pytest.mark.trio
async def test_shared_usage_is_reported_and_decays(autojump_clock):
    seen: list[tuple[str, float]] = []
    limiter = RateLimiter(capacity=4, window_s=1.0, on_usage=lambda e, f: seen.append((e, f)))
    await grant_times(limiter, Priority.LIVE, 2)
    assert seen == [(SHARED, 0.25), (SHARED, 0.5)]
    assert limiter.max_usage() == 0.5
    await trio.sleep(1.0)
    assert limiter.max_usage() == 0.0

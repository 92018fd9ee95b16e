"""Backfill pages in parallel: the pages of one symbol's run are in flight together, up to
``bybit.backfill_concurrency``, and never faster than the shared rate budget allows; against the
real ``methtrader fake-bybit`` process over loopback (with latency, as a venue has)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import trio

from appliance.backfill import backfill_symbol
from appliance.exchange.bybit import BybitExchange, BybitSettings
from appliance.exchange.ratelimit import DEFAULT_CEILINGS, Priority, RateLimiter
from data.lake import DAY_MS, Lake

KLINE = "/v5/market/kline"


class CountingBybit(BybitExchange):
    """The real adapter, noting when each kline request leaves and when its answer is in."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sends: list[tuple[float, float]] = []
        self.in_flight = self.most_in_flight = 0

    async def _send(self, method, path, params, signed):
        if path != KLINE:
            return await super()._send(method, path, params, signed)
        t0 = trio.current_time()
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await super()._send(method, path, params, signed)
        finally:
            self.in_flight -= 1
            self.sends.append((t0, trio.current_time()))


@pytest.fixture
def fake_venue(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "fake-bybit", "--port", "0",
                             "--latency-ms", "80"], stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "fake.err", "w"), text=True)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("fake-bybit listening on http://127.0.0.1:"), line
        yield line.rsplit(" ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.timeout(120)
def test_one_symbols_pages_are_in_flight_together_within_the_rate_budget(fake_venue, tmp_path):
    capacity, window_s, bound = 10, 1.0, 6
    lake = Lake(tmp_path / "lake")
    end = int(time.time() * 1000) // DAY_MS * DAY_MS
    start = end - 12 * DAY_MS  # 18 pages of 1000 minutes in one run

    async def go() -> CountingBybit:
        ex = CountingBybit(BybitSettings(base_url=fake_venue, paper=True,
                                         backfill_concurrency=bound),
                           limiter=RateLimiter(capacity=capacity, window_s=window_s))
        try:
            await backfill_symbol(ex, lake, "BTCUSDT", start, end)
        finally:
            await ex.aclose()
        return ex

    ex = trio.run(go)
    assert len(lake.read("1m", "BTCUSDT")) == 12 * 1440  # every minute, once
    assert len(ex.sends) >= 18
    # in parallel: one symbol's pages overlap, up to the bound and never beyond it
    assert ex.most_in_flight == bound
    # the budget binds (18 pages, 9 permits a second for a backfill): never more than it
    allowed = int(DEFAULT_CEILINGS[Priority.BACKFILL] * capacity)
    starts = sorted(t for t, _ in ex.sends)
    worst = max(sum(1 for s in starts if t - window_s < s <= t) for t in starts)
    assert worst <= allowed
    assert starts[allowed] - starts[0] >= window_s * 0.99  # the next one waited its turn

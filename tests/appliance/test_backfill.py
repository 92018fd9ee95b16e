import numpy as np
import pytest
import trio

from appliance.backfill import backfill_symbol
from appliance.clock import VirtualClock
from appliance.config import SimConfig
from appliance.exchange.sim import SimExchange
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, MINUTE_MS
from data.lake import Lake

# SEIUSDT is delisted on day 825 and relisted on day 840 (a 60-day cycle)
END = EPOCH_MS + 842 * DAY_MS


def sim(end_ms=END):
    return SimExchange(VirtualClock(end_ms / 1000, 1.0), SimConfig(), inline=True)


@pytest.mark.trio
async def test_every_minute_of_the_range_is_stored_once(tmp_path):
    lake = Lake(tmp_path)
    r = await backfill_symbol(sim(), lake, "BTCUSDT", END - 5 * DAY_MS, END, inline=True)
    assert (r.days_written, r.days_skipped, r.missing) == (5, 0, 0)
    rows = lake.read("1m", "BTCUSDT")
    assert len(rows) == 5 * 1440
    assert np.array_equal(rows[:, 0], np.arange(END - 5 * DAY_MS, END, MINUTE_MS))
    truth = sim().market.candles("BTCUSDT", END - 5 * DAY_MS, END)
    assert np.array_equal(rows, truth)


@pytest.mark.trio
async def test_rerun_writes_nothing_and_keeps_the_hash(tmp_path):
    lake = Lake(tmp_path)
    await backfill_symbol(sim(), lake, "ETHUSDT", END - 3 * DAY_MS, END, inline=True)
    before = lake.manifest("ETHUSDT")
    again = await backfill_symbol(sim(), lake, "ETHUSDT", END - 3 * DAY_MS, END, inline=True)
    assert (again.days_written, again.days_skipped) == (0, 3)
    assert lake.manifest("ETHUSDT").sha256 == before.sha256


@pytest.mark.trio
async def test_days_the_exchange_lacks_are_counted_missing(tmp_path):
    lake = Lake(tmp_path)
    r = await backfill_symbol(sim(), lake, "SEIUSDT", EPOCH_MS + 823 * DAY_MS,
                              EPOCH_MS + 827 * DAY_MS, inline=True)
    assert r.missing == 2 * 1440  # days 825 and 826: delisted
    assert len(lake.read("1m", "SEIUSDT")) == 2 * 1440
    assert lake.manifest("SEIUSDT").missing == 2 * 1440


@pytest.mark.trio
async def test_the_unfinished_day_is_refetched_next_time(tmp_path, autojump_clock):
    lake = Lake(tmp_path)
    clock = VirtualClock((END + 6 * 3_600_000) / 1000, 60.0)  # six hours into a day
    ex = SimExchange(clock, SimConfig(), inline=True)
    r = await backfill_symbol(ex, lake, "BTCUSDT", END - DAY_MS, END + 6 * 3_600_000,
                              inline=True)
    assert r.days_written == 2 and lake.day_status("BTCUSDT", END) == (False, 0)
    await trio.sleep(60)  # one market hour later
    r = await backfill_symbol(ex, lake, "BTCUSDT", END - DAY_MS, END + 7 * 3_600_000,
                              inline=True)
    assert (r.days_written, r.days_skipped) == (1, 1)
    assert len(lake.read("1m", "BTCUSDT")) == 1440 + 7 * 60


class GappyExchange(SimExchange):
    """Drops some minutes on the first ask, as a flaky venue does; sends them when asked again."""

    asked: list[tuple[int, int]] = []

    async def klines_array(self, symbol, start_ms, end_ms):
        rows = await super().klines_array(symbol, start_ms, end_ms)
        self.asked.append((start_ms, end_ms))
        if len(self.asked) == 1:
            return np.delete(rows, [10, 11, 12, 500], axis=0)
        return rows


@pytest.mark.trio
async def test_gaps_are_detected_and_refilled(tmp_path):
    lake = Lake(tmp_path)
    ex = GappyExchange(VirtualClock(END / 1000, 1.0), SimConfig(), inline=True)
    r = await backfill_symbol(ex, lake, "BTCUSDT", END - DAY_MS, END, inline=True)
    assert r.missing == 0 and len(lake.read("1m", "BTCUSDT")) == 1440
    day = END - DAY_MS
    assert ex.asked[1:] == [(day + 10 * MINUTE_MS, day + 13 * MINUTE_MS),
                            (day + 500 * MINUTE_MS, day + 501 * MINUTE_MS)]


class CountingExchange(SimExchange):
    """Records every range asked for; ``drop`` minutes are left out of the first answer that
    holds them, as a venue that lost a page does."""

    def __init__(self, *a, drop=(), **k):
        super().__init__(*a, **k)
        self.asked: list[tuple[int, int]] = []
        self.drop = set(drop)

    async def klines_array(self, symbol, start_ms, end_ms):
        rows = await super().klines_array(symbol, start_ms, end_ms)
        self.asked.append((start_ms, end_ms))
        lost = np.isin(rows[:, 0], list(self.drop))
        if lost.any():
            self.drop.clear()
            return rows[~lost]
        return rows


@pytest.mark.trio
async def test_weeks_a_pair_was_not_listed_are_probed_with_one_page_not_asked_twice(tmp_path):
    """SEIUSDT is delisted from day 825 to day 840: the run's 15-day hole is probed with one
    page at its start, which comes back empty, and is not asked for again."""
    lake = Lake(tmp_path)
    ex = CountingExchange(VirtualClock(END / 1000, 1.0), SimConfig(), inline=True)
    start = EPOCH_MS + 823 * DAY_MS
    r = await backfill_symbol(ex, lake, "SEIUSDT", start, END, inline=True)
    hole = EPOCH_MS + 825 * DAY_MS
    assert ex.asked == [(start, END), (hole, hole + 1000 * MINUTE_MS)]
    assert r.missing == 15 * 1440
    assert np.array_equal(lake.read("1m", "SEIUSDT"), sim().market.candles("SEIUSDT", start, END))
    # a run that starts inside the hole: probed with the page right before the relisting
    lake = Lake(tmp_path / "again")
    ex.asked.clear()
    start, back = EPOCH_MS + 830 * DAY_MS, EPOCH_MS + 840 * DAY_MS
    r = await backfill_symbol(ex, lake, "SEIUSDT", start, END, inline=True)
    assert ex.asked == [(start, END), (back - 1000 * MINUTE_MS, back)]
    assert r.missing == 10 * 1440


@pytest.mark.trio
async def test_a_page_the_venue_lost_is_found_by_the_probe_and_asked_for_whole(tmp_path):
    lake = Lake(tmp_path)
    day = END - 2 * DAY_MS
    lost = [day + (300 + i) * MINUTE_MS for i in range(1500)]  # 25 hours, mid-run
    ex = CountingExchange(VirtualClock(END / 1000, 1.0), SimConfig(), inline=True, drop=lost)
    r = await backfill_symbol(ex, lake, "BTCUSDT", day, END, inline=True)
    assert r.missing == 0
    assert np.array_equal(lake.read("1m", "BTCUSDT"), sim().market.candles("BTCUSDT", day, END))
    gap = (lost[0], lost[-1] + MINUTE_MS)
    assert ex.asked == [(day, END), (gap[0], gap[0] + 1000 * MINUTE_MS), gap]

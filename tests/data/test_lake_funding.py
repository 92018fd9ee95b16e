"""Funding rates in the lake: real Parquet files next to the candles, crash-safe, manifested,
filled by the backfill from a real exchange (the sim) and topped up without refetching."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from appliance.backfill import backfill_funding
from appliance.config import SimConfig
from appliance.exchange.sim import SimExchange
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS
from data.lake import FUNDING, Lake
from models.funding import FUNDING_PERIOD_MS

T = EPOCH_MS + 300 * DAY_MS
P = FUNDING_PERIOD_MS


def test_funding_files_merge_read_back_by_span_and_have_a_manifest(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert lake.read_funding("BTCUSDT").shape == (0, 2) and lake.funding_manifest("BTCUSDT") is None
    first = np.array([[T + k * P, 1e-4 * k] for k in range(1, 6)])
    path = lake.write_funding("BTCUSDT", first)
    assert path == tmp_path / "lake" / "funding" / "symbol=BTCUSDT" / "funding.parquet"
    assert pq.read_schema(path).names == ["time", "rate"]
    np.testing.assert_array_equal(lake.read_funding("BTCUSDT"), first)
    m1 = lake.funding_manifest("BTCUSDT")
    assert (m1.interval, m1.dataset_id, m1.rows, m1.start_time, m1.end_time, m1.files) == \
        (FUNDING, "BTCUSDT-funding", 5, T + P, T + 5 * P, 1)
    # newer rows are added, a restated rate replaces the stored one, the file stays sorted
    lake.write_funding("BTCUSDT", np.array([[T + 5 * P, -2e-4], [T + 6 * P, 3e-4]]))
    got = lake.read_funding("BTCUSDT")
    assert got[:, 0].tolist() == [T + k * P for k in range(1, 7)]
    assert got[4, 1] == -2e-4 and got[5, 1] == 3e-4
    # (start, end]: the funding times a position held over that span pays
    assert lake.read_funding("BTCUSDT", T + P, T + 3 * P)[:, 0].tolist() == [T + 2 * P, T + 3 * P]
    m2 = lake.funding_manifest("BTCUSDT")
    assert m2.sha256 != m1.sha256 and m2.rows == 6
    lake.save_manifest(m2)
    assert {m.dataset_id for m in lake.manifests()} == {"BTCUSDT-funding"}
    # another symbol's funding is its own file
    lake.write_funding("ETHUSDT", first[:2])
    assert len(lake.read_funding("ETHUSDT")) == 2 and len(lake.read_funding("BTCUSDT")) == 6


def test_a_bad_write_or_a_crash_leaves_the_stored_funding_whole(tmp_path):
    lake = Lake(tmp_path / "lake")
    good = np.array([[T + P, 1e-4], [T + 2 * P, 2e-4]])
    path = lake.write_funding("BTCUSDT", good)
    for bad in (np.array([[T + 4 * P, 1e-4], [T + 3 * P, 1e-4]]),
                np.array([[T + 4 * P, np.nan]])):
        with pytest.raises(ValueError, match="BTCUSDT"):
            lake.write_funding("BTCUSDT", bad)
    # a writer killed mid-file leaves its temp file, never a half-written funding.parquet
    (path.parent / ".funding.parquet.tmp").write_bytes(b"PAR1 half a file")
    np.testing.assert_array_equal(lake.read_funding("BTCUSDT"), good)
    lake.write_funding("BTCUSDT", np.array([[T + 3 * P, 3e-4]]))
    assert len(lake.read_funding("BTCUSDT")) == 3
    assert [p.name for p in path.parent.iterdir()] == ["funding.parquet"]


class CountingSim(SimExchange):
    """The real sim exchange, recording what the backfill asks it for."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.asked: list[tuple[int, int]] = []

    async def funding_rates(self, symbol, start_ms, end_ms):
        self.asked.append((start_ms, end_ms))
        return await super().funding_rates(symbol, start_ms, end_ms)


class At:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def now(self) -> float:
        return self.ms / 1000


@pytest.mark.trio
async def test_backfill_stores_the_funding_history_and_then_only_tops_it_up(tmp_path):
    lake = Lake(tmp_path / "lake")
    clock = At(T + 5 * 3_600_000)
    ex = CountingSim(clock, SimConfig(), inline=True)
    start = clock.ms - 90 * DAY_MS
    n = await backfill_funding(ex, lake, "SOLUSDT", start, clock.ms, inline=True)
    stored = lake.read_funding("SOLUSDT")
    assert n == len(stored) == 270
    assert [tuple(r) for r in stored] == ex.market.funding_rates("SOLUSDT", start, clock.ms)
    first_end = clock.ms
    clock.ms += DAY_MS  # a day later: only the new funding times are asked for
    assert await backfill_funding(ex, lake, "SOLUSDT", start + DAY_MS, clock.ms,
                                  inline=True) == 3
    assert ex.asked == [(start, first_end), (int(stored[-1, 0]), clock.ms)]
    assert [tuple(r) for r in lake.read_funding("SOLUSDT", start, clock.ms)] == \
        ex.market.funding_rates("SOLUSDT", start, clock.ms)
    # nothing new: nothing written, the file (and its sha256) unchanged
    before = lake.funding_manifest("SOLUSDT").sha256
    assert await backfill_funding(ex, lake, "SOLUSDT", start, clock.ms, inline=True) == 0
    assert lake.funding_manifest("SOLUSDT").sha256 == before

import numpy as np

from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from data.lake import Lake

DAY = EPOCH_MS + 500 * DAY_MS


def test_day_files_round_trip_and_carry_completeness(tmp_path):
    lake = Lake(tmp_path / "lake")
    rows = SimMarket(3).candles("BTCUSDT", DAY, DAY + DAY_MS)
    lake.write_day("BTCUSDT", DAY, rows, complete=True, missing=0)
    lake.write_day("BTCUSDT", DAY + DAY_MS, rows[:0], complete=False, missing=0)
    assert lake.day_status("BTCUSDT", DAY) == (True, 0)
    assert lake.day_status("BTCUSDT", DAY + DAY_MS) == (False, 0)
    assert lake.day_status("BTCUSDT", DAY - DAY_MS) is None
    assert np.array_equal(lake.read("1m", "BTCUSDT"), rows)
    assert lake.symbols() == ["BTCUSDT"]
    path = lake.day_path("BTCUSDT", DAY)
    assert path.parts[-3:] == ("interval=1m", "symbol=BTCUSDT", "day=20250515.parquet")


def test_resampled_intervals_agree_with_the_minutes(tmp_path):
    lake = Lake(tmp_path / "lake")
    rows = SimMarket(3).candles("ETHUSDT", DAY, DAY + DAY_MS)
    lake.write_day("ETHUSDT", DAY, rows, complete=True, missing=0)
    assert lake.resample("ETHUSDT") == {"5m": 288, "1h": 24}
    h = lake.read("1h", "ETHUSDT")
    first = rows[:60]
    assert h[0, 0] == DAY
    assert h[0, 1] == first[0, 1] and h[0, 4] == first[-1, 4]
    assert h[0, 2] == first[:, 2].max() and h[0, 3] == first[:, 3].min()
    assert np.isclose(h[0, 5], first[:, 5].sum()) and np.isclose(h[0, 6], first[:, 6].sum())
    five = lake.read("5m", "ETHUSDT")
    assert np.isclose(five[:12, 5].sum(), h[0, 5])


def test_manifest_hash_is_stable_and_changes_with_the_data(tmp_path):
    lake = Lake(tmp_path / "lake")
    rows = SimMarket(3).candles("SOLUSDT", DAY, DAY + DAY_MS)
    lake.write_day("SOLUSDT", DAY, rows, complete=True, missing=3)
    m1 = lake.manifest("SOLUSDT")
    lake.write_day("SOLUSDT", DAY, rows, complete=True, missing=3)
    m2 = lake.manifest("SOLUSDT")
    assert m1.sha256 == m2.sha256 and m1.rows == 1440 and m1.missing == 3
    assert (m1.start_time, m1.end_time) == (DAY, DAY + DAY_MS - 60_000)
    changed = rows.copy()
    changed[5, 4] = changed[5, 2]
    lake.write_day("SOLUSDT", DAY, changed, complete=True, missing=3)
    assert lake.manifest("SOLUSDT").sha256 != m1.sha256
    lake.save_manifest(m1)
    assert lake.manifests()[0].sha256 == m1.sha256
    assert not list((tmp_path / "lake").rglob("*.tmp"))  # no temp files left behind


def test_a_damaged_day_file_is_treated_as_missing_and_moved_aside(tmp_path):
    """Issue 11 #7: a torn Parquet file must not crash every reader; it is quarantined."""
    lake = Lake(tmp_path / "lake")
    rows = SimMarket(3).candles("BTCUSDT", DAY, DAY + 2 * DAY_MS)
    lake.write_day("BTCUSDT", DAY, rows[:1440], complete=True, missing=0)
    lake.write_day("BTCUSDT", DAY + DAY_MS, rows[1440:], complete=True, missing=0)
    victim = lake.day_path("BTCUSDT", DAY)
    victim.write_bytes(victim.read_bytes()[:100])
    assert lake.day_status("BTCUSDT", DAY) is None  # missing: the backfill fetches it again
    assert not victim.exists()
    moved = list((tmp_path / "lake" / "quarantine").rglob("day=*.parquet.corrupt-*"))
    assert len(moved) == 1 and moved[0].stat().st_size == 100
    assert np.array_equal(lake.read("1m", "BTCUSDT"), rows[1440:])


def test_readers_quarantine_a_damaged_file_they_meet_and_carry_on(tmp_path):
    lake = Lake(tmp_path / "lake")
    rows = SimMarket(3).candles("ETHUSDT", DAY, DAY + 2 * DAY_MS)
    lake.write_day("ETHUSDT", DAY, rows[:1440], complete=True, missing=0)
    lake.write_day("ETHUSDT", DAY + DAY_MS, rows[1440:], complete=True, missing=0)
    lake.day_path("ETHUSDT", DAY).write_bytes(b"PAR1 not really parquet PAR1")
    assert lake.resample("ETHUSDT") == {"5m": 288, "1h": 24}  # from the day that is intact
    assert lake.manifest("ETHUSDT").rows == 1440
    assert len(list((tmp_path / "lake" / "quarantine").rglob("*.corrupt-*"))) == 1

import numpy as np

from appliance.bars import bars_from_minutes
from appliance.exchange.simmarket import DAY_MS, EPOCH_MS, SimMarket
from data.lake import Lake

DAY = EPOCH_MS + 600 * DAY_MS


def test_live_bars_equal_the_lakes_resampled_bars(tmp_path):
    rows = SimMarket(5).candles("ETHUSDT", DAY, DAY + DAY_MS)
    lake = Lake(tmp_path)
    lake.write_day("ETHUSDT", DAY, rows, complete=True, missing=0)
    lake.resample("ETHUSDT")
    live = bars_from_minutes(rows, 300_000, DAY + DAY_MS)
    assert np.allclose(live, lake.read("5m", "ETHUSDT"), rtol=1e-12, atol=0)


def test_a_bucket_still_open_is_not_a_bar():
    rows = SimMarket(5).candles("BTCUSDT", DAY, DAY + 13 * 60_000)
    bars = bars_from_minutes(rows, 300_000, DAY + 13 * 60_000)
    assert list(bars[:, 0]) == [DAY, DAY + 300_000]  # 10:00-10:13 holds two closed bars
    assert bars[1, 4] == rows[9, 4] and bars[1, 1] == rows[5, 1]

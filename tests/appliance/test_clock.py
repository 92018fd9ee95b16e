import json

import pytest
import trio

from appliance.clock import VirtualClock, load_virtual_clock, save_virtual_clock


@pytest.mark.trio
async def test_virtual_clock_runs_at_speed_on_trios_clock(autojump_clock):
    clock = VirtualClock(start=1_000_000.0, speed=600)
    assert clock.now() == 1_000_000.0
    await trio.sleep(2)  # two seconds of trio time = twenty virtual minutes
    assert clock.now() == pytest.approx(1_000_000.0 + 1200)


@pytest.mark.trio
async def test_sleep_until_wakes_at_the_market_time(autojump_clock):
    clock = VirtualClock(start=0.0, speed=3600)
    t0 = trio.current_time()
    await clock.sleep_until(7 * 86400)  # a virtual week
    assert clock.now() == pytest.approx(7 * 86400)
    assert trio.current_time() - t0 == pytest.approx(7 * 24)
    await clock.sleep_until(0)  # the past: returns at once
    assert clock.now() == pytest.approx(7 * 86400)


def test_bad_speed_is_refused():
    with pytest.raises(ValueError, match="positive"):
        VirtualClock(0, 0)


@pytest.mark.trio
async def test_saved_time_resumes_after_restart(tmp_path, autojump_clock):
    clock = load_virtual_clock(tmp_path, speed=60, default_start=5000.0)
    await trio.sleep(10)
    save_virtual_clock(tmp_path, clock)
    resumed = load_virtual_clock(tmp_path, speed=60, default_start=0.0)
    assert resumed.now() == pytest.approx(5600.0)
    (tmp_path / "clock.json").write_text(json.dumps({"oops": 1}))
    with pytest.raises(ValueError, match="damaged"):
        load_virtual_clock(tmp_path, speed=60, default_start=0.0)


@pytest.mark.trio
async def test_worker_threads_see_the_same_market_time(autojump_clock):
    clock = VirtualClock(start=1_000_000.0, speed=600)
    await trio.sleep(1)
    in_thread = await trio.to_thread.run_sync(clock.now)
    assert in_thread == pytest.approx(clock.now()) == pytest.approx(1_000_600.0)


@pytest.mark.trio
async def test_advance_to_moves_market_time_forward_never_back(autojump_clock):
    clock = VirtualClock(start=1_000.0, speed=60.0)
    await trio.sleep(1)
    assert clock.now() == pytest.approx(1_060.0)
    clock.advance_to(5_000.0)
    assert clock.now() == pytest.approx(5_000.0)
    clock.advance_to(100.0)  # the past: nothing changes
    assert clock.now() == pytest.approx(5_000.0)
    await trio.sleep(1)
    assert clock.now() == pytest.approx(5_060.0)  # and it runs on at its speed

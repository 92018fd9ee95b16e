import random

import pytest
import trio

from appliance.config import SupervisorConfig
from appliance.store import StoreDamaged
from appliance.supervision import FAILED, RUNNING, STOPPED, Supervisor, backoff_delay


def test_backoff_doubles_and_is_capped():
    delays = [backoff_delay(a, 0.5, 10.0, 0.0, 0.0) for a in range(8)]
    assert delays[:5] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays[5:] == [10.0, 10.0, 10.0]


def test_jitter_adds_up_to_its_fraction_and_stays_under_the_cap():
    assert backoff_delay(1, 1.0, 100.0, 0.25, 0.0) == 2.0
    assert backoff_delay(1, 1.0, 100.0, 0.25, 0.999) == pytest.approx(2.4995)
    assert backoff_delay(10, 1.0, 5.0, 0.5, 0.999) == 5.0


@pytest.mark.trio
async def test_crashed_service_is_restarted_with_backoff(autojump_clock):
    incidents = []
    starts = []

    async def record(service, kind, message, tb):
        incidents.append((service, kind, message, tb))

    cfg = SupervisorConfig(backoff_initial_s=1.0, backoff_max_s=30.0, backoff_jitter=0.0,
                           max_crashes=10, failure_window_s=1000.0)
    sup = Supervisor(cfg, on_incident=record, rng=random.Random(1))

    async def flaky():
        starts.append(trio.current_time())
        if len(starts) <= 3:
            raise ValueError(f"boom {len(starts)}")

    await sup.supervise("flaky", flaky)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert gaps == pytest.approx([1.0, 2.0, 4.0])
    st = sup.states["flaky"]
    assert st.restarts == 3 and st.state == STOPPED
    crashes = [i for i in incidents if i[1] == "crash"]
    assert [c[2] for c in crashes] == ["ValueError: boom 1", "ValueError: boom 2",
                                       "ValueError: boom 3"]
    assert all("Traceback" in c[3] and "flaky" in c[3] for c in crashes)
    assert [i[1] for i in incidents].count("restart") == 3


@pytest.mark.trio
async def test_a_failed_service_is_left_down_for_its_cool_down_then_tried_again(autojump_clock):
    """Issue 11, hole 1: a service that crashed too often was never retried. Now it is failed
    for ``failed_retry_s`` (no CPU spent on it), then started again from a clean slate."""
    cfg = SupervisorConfig(backoff_initial_s=0.1, backoff_jitter=0.0, max_crashes=3,
                           failure_window_s=60.0, failed_retry_s=60.0)
    kinds = []

    async def record(service, kind, message, tb):
        kinds.append(kind)

    sup = Supervisor(cfg, on_incident=record)
    calls: list[float] = []

    async def broken_for_a_while():
        calls.append(trio.current_time())
        if len(calls) <= 3:
            raise RuntimeError("the disk is full")
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.supervise, "broken", broken_for_a_while)
        await trio.sleep(calls[0] + 30.0 - trio.current_time() if calls else 30.0)
        assert len(calls) == 3  # no try during the cool-down
        assert sup.snapshot()["broken"]["state"] == FAILED and kinds[-1] == "failed"
        await trio.sleep(40.0)
        assert len(calls) == 4 and calls[3] - calls[2] == pytest.approx(60.0)
        assert sup.snapshot()["broken"]["state"] == RUNNING
        assert kinds[-1] == "restart"
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_crashes_spread_beyond_the_window_never_fail(autojump_clock):
    cfg = SupervisorConfig(backoff_initial_s=0.1, backoff_jitter=0.0, max_crashes=2,
                           failure_window_s=10.0)
    sup = Supervisor(cfg)
    calls = 0

    async def rarely_broken():
        nonlocal calls
        calls += 1
        if calls <= 4:
            await trio.sleep(60)  # runs a minute between crashes
            raise RuntimeError("once in a while")

    await sup.supervise("rare", rarely_broken)
    assert calls == 5 and sup.states["rare"].state == STOPPED


@pytest.mark.trio
async def test_failed_service_leaves_the_others_running(autojump_clock):
    cfg = SupervisorConfig(backoff_initial_s=0.1, backoff_jitter=0.0, max_crashes=2)
    sup = Supervisor(cfg)
    ticks = 0

    async def healthy():
        nonlocal ticks
        while True:
            ticks += 1
            await trio.sleep(1)

    async def broken():
        raise RuntimeError("no")

    async with trio.open_nursery() as nursery:
        await nursery.start(sup.supervise, "healthy", healthy)
        await nursery.start(sup.supervise, "broken", broken)
        await trio.sleep(30)
        assert sup.states["broken"].state == FAILED
        assert sup.states["healthy"].state == RUNNING
        nursery.cancel_scope.cancel()
    assert ticks >= 29
    assert sup.states["healthy"].state == STOPPED


@pytest.mark.trio
async def test_cancellation_stops_cleanly_and_is_not_a_crash(autojump_clock):
    kinds = []

    async def record(service, kind, message, tb):
        kinds.append(kind)

    sup = Supervisor(SupervisorConfig(), on_incident=record)
    cleaned = []

    async def service():
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append(True)

    with trio.move_on_after(5):
        await sup.supervise("svc", service)
    assert cleaned == [True]
    assert kinds == []
    assert sup.states["svc"].state == STOPPED


@pytest.mark.trio
async def test_recovery_time_is_measured(autojump_clock):
    cfg = SupervisorConfig(backoff_initial_s=0.5, backoff_jitter=0.0)
    sup = Supervisor(cfg)
    calls = 0

    async def once_broken():
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("first")

    await sup.supervise("svc", once_broken)
    assert sup.states["svc"].recovered_in_s == pytest.approx(0.5)


@pytest.mark.trio
async def test_a_fatal_error_is_never_restarted_and_stops_every_service(autojump_clock):
    """A damaged DuckDB file cannot be mended by a restart: the error is recorded once and
    raised, which cancels the other services (``run`` then fails closed and stops)."""
    cfg = SupervisorConfig(backoff_initial_s=0.1, backoff_jitter=0.0, max_crashes=3)
    incidents = []

    async def record(service, kind, message, tb):
        incidents.append((service, kind, message))

    sup = Supervisor(cfg, on_incident=record)
    starts = 0

    async def healthy():
        await trio.sleep_forever()

    async def reader():
        nonlocal starts
        starts += 1
        await trio.sleep(5)
        raise StoreDamaged("m.duckdb is damaged (checksum)")

    with pytest.raises(BaseExceptionGroup) as raised:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.supervise, "healthy", healthy)
            await nursery.start(sup.supervise, "reader", reader)
    assert [type(e) for e in raised.value.exceptions] == [StoreDamaged]
    assert starts == 1 and sup.states["reader"].restarts == 0
    assert sup.states["reader"].state == FAILED
    assert sup.states["healthy"].state == STOPPED
    assert incidents == [("reader", "fatal", "StoreDamaged: m.duckdb is damaged (checksum)")]

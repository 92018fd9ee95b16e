"""The disk state: what counts as a full disk, injected ENOSPC, episodes, the probe, the lake."""

from __future__ import annotations

import errno
import threading

import numpy as np
import pytest

from data.disk import MAX_INJECT_S, PROBE_NAME, DiskState, is_disk_full
from data.lake import DAY_MS, Lake


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def enospc(what: str = "x") -> OSError:
    return OSError(errno.ENOSPC, f"No space left on device: {what}")


def test_what_counts_as_a_full_disk():
    assert is_disk_full(enospc())
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError('IO Error: Could not write file "x.wal": No space left on '
                                     'device'))  # DuckDB's wording, not an OSError
    assert is_disk_full(RuntimeError("database or disk is full"))  # SQLite's (the bus)
    try:
        try:
            raise enospc()
        except OSError as exc:
            raise RuntimeError("writing the bar failed") from exc
    except RuntimeError as chained:
        assert is_disk_full(chained)
    assert is_disk_full(ExceptionGroup("pass", [enospc("a"), enospc("b")]))
    assert not is_disk_full(ExceptionGroup("pass", [enospc(), ValueError("a bug")]))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(RuntimeError("the disk is full"))  # a bug's own words do not count


def test_an_injected_full_disk_refuses_writes_for_its_time_and_an_episode_ends_at_a_write():
    clock = Clock()
    disk = DiskState(monotonic=clock)
    assert disk.write("duckdb", lambda: 1) == 1 and not disk.full
    disk.inject(5.0)
    assert disk.injected_s == 5.0
    for _ in range(3):
        with pytest.raises(OSError) as caught:
            disk.write("lake", lambda: 1)
        assert caught.value.errno == errno.ENOSPC
    assert disk.full and disk.episodes == 1 and disk.refused == {"lake": 3}
    assert "lake write refused" in disk.reason
    clock.t += 5.0  # the space returns, but the episode lasts until a write goes through
    assert disk.full
    assert disk.write("duckdb", lambda: 2) == 2
    assert not disk.full and disk.snapshot()["reason"] is None
    disk.inject(1.0)
    disk.lift()
    assert disk.write("duckdb", lambda: 3) == 3 and disk.episodes == 1
    for bad in (0.0, -1.0, MAX_INJECT_S + 1, float("nan")):
        with pytest.raises(ValueError):
            disk.inject(bad)


def test_a_real_enospc_starts_an_episode_and_other_errors_do_not(tmp_path):
    disk = DiskState()

    def full() -> None:
        raise enospc()

    def bug() -> None:
        raise ValueError("not the disk")

    with pytest.raises(ValueError):
        disk.write("duckdb", bug)
    assert not disk.full
    with pytest.raises(OSError):
        disk.write("duckdb", full)
    assert disk.full and disk.refused == {"duckdb": 1}
    assert disk.probe(tmp_path)  # a probe that goes through ends it
    assert not disk.full and not (tmp_path / PROBE_NAME).exists()


def test_a_write_begun_before_the_disk_filled_does_not_end_the_episode():
    """One full disk is one episode: a long write on another thread that began before the
    fault and finishes after a refusal proves nothing about the disk now."""
    clock = Clock()
    disk = DiskState(monotonic=clock)
    started, release = threading.Event(), threading.Event()
    results: list[int] = []

    def slow() -> int:
        started.set()
        assert release.wait(10)
        return 1

    long_write = threading.Thread(target=lambda: results.append(disk.write("duckdb", slow)))
    long_write.start()
    assert started.wait(10)
    disk.inject(5.0)
    with pytest.raises(OSError):
        disk.write("lake", lambda: 1)
    release.set()
    long_write.join(10)
    assert results == [1]
    assert disk.full and disk.episodes == 1
    with pytest.raises(OSError):
        disk.write("lake", lambda: 1)
    assert disk.episodes == 1 and disk.refused == {"lake": 2}
    clock.t += 5.0
    assert disk.write("lake", lambda: 2) == 2 and not disk.full and disk.episodes == 1


def test_a_refusal_reported_after_the_disk_recovered_does_not_begin_a_new_episode():
    """A write refused during the fault whose report arrives after a later write went through
    (threads interleave) is counted, but the episode stays over."""
    clock = Clock()
    disk = DiskState(monotonic=clock)
    disk.inject(5.0)
    late = disk.ticket()  # this write begins during the fault...
    with pytest.raises(OSError) as refused:
        disk.check("lake")
    disk.failed("lake", refused.value, disk.ticket())
    assert disk.full and disk.episodes == 1
    clock.t += 5.0
    assert disk.write("probe", lambda: True)
    assert not disk.full
    disk.failed("lake", refused.value, late)  # ...and reports only now
    assert not disk.full and disk.episodes == 1 and disk.refused == {"lake": 2}
    disk.failed("lake", refused.value)  # a write begun now and refused: a new episode
    assert disk.full and disk.episodes == 2


def test_the_probe_meets_an_injected_full_disk_and_leaves_no_file(tmp_path):
    clock = Clock()
    disk = DiskState(monotonic=clock)
    disk.inject(2.0)
    assert not disk.probe(tmp_path)
    assert disk.full and disk.refused == {"probe": 1}
    clock.t += 2.0
    assert disk.probe(tmp_path) and not disk.full
    assert list(tmp_path.iterdir()) == []


def test_lake_writes_meet_the_full_disk_and_write_nothing(tmp_path):
    clock = Clock()
    disk = DiskState(monotonic=clock)
    lake = Lake(tmp_path / "lake", disk)
    day = 20_000 * DAY_MS
    rows = np.column_stack([day + np.arange(3) * 60_000.0, *(np.ones((6, 3)))])
    disk.inject(10.0)
    with pytest.raises(OSError):
        lake.write_day("BTCUSDT", day, rows, complete=True, missing=0)
    with pytest.raises(OSError):
        lake.write_funding("BTCUSDT", np.array([[day, 0.0001]]))
    assert lake.files("1m", "BTCUSDT") == [] and not lake.funding_path("BTCUSDT").exists()
    assert disk.refused == {"lake": 2}
    clock.t += 10.0
    lake.write_day("BTCUSDT", day, rows, complete=True, missing=0)
    assert not disk.full and len(lake.read("1m", "BTCUSDT")) == 3
    m = lake.manifest("BTCUSDT")
    assert m is not None and lake.save_manifest(m).exists()
    assert lake.resample("BTCUSDT") == {"5m": 1, "1h": 1}

"""How ``run`` settles the switches at start (issue 11, hole 2): a real bus, a real DuckDB."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import diskcache
import pytest

from appliance.bus import DEPLOYS_FROZEN, MAINTENANCE_MODE, Bus
from appliance.safety import read_kill_file, write_kill_file
from appliance.store import Store
from appliance.switches import SwitchWatch, audit_log_switches, settle_at_start

pytestmark = pytest.mark.trio


class World:
    """A state dir's bus and DuckDB file, with the incidents ``settle_at_start`` raised."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.store = Store(state / "methtrader.duckdb")
        self.bus = Bus(state / "bus")
        self.incidents: list[tuple[str, str]] = []

    async def settle(self, fresh: bool = False) -> dict[str, bool]:
        async def store_call(fn, *args):
            return fn(self.store, *args)

        async def incident(kind: str, message: str) -> None:
            self.incidents.append((kind, message))

        result = await settle_at_start(self.bus, store_call, fresh=fresh, incident=incident)
        self.copy_journal()
        return result

    def copy_journal(self) -> None:
        """What the operator service does every half second."""
        self.store.copy_audit(self.bus.audit_entries(self.store.max_audit_seq()))

    def lose_the_bus(self) -> None:
        self.bus.close()
        for f in (self.state / "bus").glob("**/cache.db*"):
            f.unlink()
        self.bus = Bus(self.state / "bus")

    def actions(self) -> list[tuple[str, str]]:
        return [(r["action"], r["reason"]) for r in reversed(self.store.audit_log(1000))]

    def close(self) -> None:
        self.bus.close()
        self.store.close()


@pytest.fixture
def world(state_dir: Path):
    w = World(state_dir)
    yield w
    w.close()


async def test_a_fresh_state_dir_starts_with_both_switches_off(world: World) -> None:
    assert world.bus.maintenance_mode and world.bus.deploys_frozen  # unset reads ON
    assert await world.settle(fresh=True) == {MAINTENANCE_MODE: False, DEPLOYS_FROZEN: False}
    assert ("maintenance_mode=off", "initialised on a fresh state dir") in world.actions()
    assert world.incidents == []


async def test_a_lost_bus_gets_the_switches_back_from_audit_log(world: World) -> None:
    await world.settle(fresh=True)
    world.bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="drill")
    world.copy_journal()
    world.lose_the_bus()
    assert await world.settle() == {MAINTENANCE_MODE: True, DEPLOYS_FROZEN: False}
    assert [k for k, _ in world.incidents] == ["switch_restored", "switch_restored"]
    restored = [r for a, r in world.actions() if a == "maintenance_mode=on"][-1]
    assert restored.startswith("restored from audit_log") and "by ops" in restored


async def test_a_lost_switch_with_no_record_anywhere_fails_closed(world: World) -> None:
    assert await world.settle(fresh=False) == {MAINTENANCE_MODE: True, DEPLOYS_FROZEN: True}
    assert {k for k, _ in world.incidents} == {"switch_restored"}


async def test_an_older_bus_that_says_off_loses_to_a_newer_audit_log_on(world: World,
                                                                         tmp_path: Path) -> None:
    """A bus put back from an old copy says off; DuckDB saw a kill after it: fail closed."""
    await world.settle(fresh=True)
    world.bus.close()
    old_copy = tmp_path / "old-bus"
    shutil.copytree(world.state / "bus", old_copy)
    world.bus = Bus(world.state / "bus")
    world.bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="drill")
    world.copy_journal()
    world.bus.close()
    shutil.rmtree(world.state / "bus")
    shutil.copytree(old_copy, world.state / "bus")
    world.bus = Bus(world.state / "bus")
    assert world.bus.maintenance_mode is False  # the old copy's journalled off
    assert (await world.settle())[MAINTENANCE_MODE] is True
    assert [k for k, _ in world.incidents] == ["switch_disagreement"]


async def test_a_switch_written_behind_the_bus_is_audited_and_set_on(world: World) -> None:
    await world.settle(fresh=True)
    world.bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="drill")
    world.copy_journal()
    raw = diskcache.Cache(str(world.state / "bus"))
    raw.set(f"switch:{MAINTENANCE_MODE}", {"value": False, "actor": "ops", "reason": "x",
                                           "ts": 1.0, "source": "cli", "seq": 123})
    raw.close()
    assert world.bus.maintenance_mode is False  # well-formed, but nothing journalled it
    assert (await world.settle())[MAINTENANCE_MODE] is True
    assert [k for k, _ in world.incidents] == ["unaudited_switch_change"]
    assert "maintenance_mode unaudited change" in [a for a, _ in world.actions()]


async def test_a_legacy_record_that_agrees_with_audit_log_is_rewritten_quietly(
        world: World) -> None:
    await world.settle(fresh=True)
    raw = diskcache.Cache(str(world.state / "bus"))
    raw.set(f"switch:{DEPLOYS_FROZEN}", False)  # the format before records named their seq
    raw.close()
    assert world.bus.deploys_frozen is True
    assert (await world.settle())[DEPLOYS_FROZEN] is False
    assert world.incidents == []


async def test_a_kill_file_becomes_an_audited_on_and_goes_away(world: World) -> None:
    await world.settle(fresh=True)
    (world.state / "KILL").write_text(json.dumps({"actor": "carol", "reason": "bus broken",
                                                  "ts": 1.0}))
    assert (await world.settle())[MAINTENANCE_MODE] is True
    assert not (world.state / "KILL").exists()
    assert ("maintenance_mode=on", "kill file: bus broken") in world.actions()
    assert [k for k, _ in world.incidents] == ["kill_file"]
    assert world.bus.switch_meta(MAINTENANCE_MODE)["actor"] == "carol"


async def test_a_second_kill_on_a_broken_bus_keeps_the_first_ones_who_and_why(
        world: World) -> None:
    await world.settle(fresh=True)
    write_kill_file(world.state, "first: spread blew out", "bus damaged")
    write_kill_file(world.state, "second: still bad", "bus damaged")
    kept = read_kill_file(world.state)
    assert kept["reason"] == "second: still bad"
    assert [e["reason"] for e in kept["earlier"]] == ["first: spread blew out"]
    assert (await world.settle())[MAINTENANCE_MODE] is True
    assert "1 earlier kill(s)" in world.incidents[-1][1]
    details = world.bus.audit_entries()[-1]["details"]["kill_file"]
    assert details["earlier"][0]["reason"] == "first: spread blew out"


async def test_the_watch_trusts_a_record_journalled_only_in_duckdb(world: World) -> None:
    """The bus journal may be gone (copied to DuckDB long ago): no false alarm for that."""
    await world.settle(fresh=True)
    world.bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="drill")
    world.copy_journal()
    world.bus.close()
    for f in (world.state / "bus" / "audit").glob("cache.db*"):
        f.unlink()
    world.bus = Bus(world.state / "bus")
    assert world.bus.audit_entries() == [] and world.bus.maintenance_mode

    async def incident(kind: str, message: str) -> None:
        world.incidents.append((kind, message))

    _, known = audit_log_switches(world.store)
    await SwitchWatch(world.bus, known).tick(incident)
    assert world.incidents == [] and world.bus.maintenance_mode
    await SwitchWatch(world.bus).tick(incident)  # without DuckDB's knowledge it would alarm
    assert {k for k, _ in world.incidents} == {"unaudited_switch_change"}

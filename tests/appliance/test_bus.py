import subprocess
import sys
import textwrap

import pytest

from appliance.bus import DEPLOYS_FROZEN, MAINTENANCE_MODE, Bus


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_second_process_flips_the_kill_switch_and_the_first_sees_it(tmp_path):
    bus = Bus(tmp_path / "bus")
    assert bus.maintenance_mode is False
    run_python(f"""
        from appliance.bus import Bus, MAINTENANCE_MODE
        b = Bus({str(tmp_path / 'bus')!r})
        b.set_switch(MAINTENANCE_MODE, True, actor="alice", reason="test", source="cli")
    """)
    assert bus.maintenance_mode is True
    assert bus.switch_meta(MAINTENANCE_MODE)["actor"] == "alice"
    journal = bus.audit_entries()
    assert journal[-1]["action"] == "maintenance_mode=on" and journal[-1]["reason"] == "test"
    bus.close()


def test_events_from_several_processes_get_unique_increasing_numbers(tmp_path):
    path = str(tmp_path / "bus")
    code = f"""
        from appliance.bus import Bus
        b = Bus({path!r})
        for i in range(50):
            b.publish("tick", {{"i": i}}, service="p")
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)]) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    bus = Bus(path)
    events = bus.events_since(0)
    seqs = [e["seq"] for e in events]
    assert len(seqs) == 150 and seqs == sorted(seqs) and len(set(seqs)) == 150
    assert bus.last_event_seq() == 150
    assert [e["seq"] for e in bus.events_since(140)] == list(range(141, 151))
    bus.close()


def test_event_deque_is_bounded_and_keeps_the_newest(tmp_path):
    bus = Bus(tmp_path / "bus", events_maxlen=100)
    for i in range(250):
        bus.publish("tick", {"i": i})
    events = bus.events_since(0)
    assert len(events) == 100 and events[-1]["data"]["i"] == 249
    assert [e["data"]["i"] for e in bus.events_since(0, limit=3)] == [247, 248, 249]
    bus.publish("trade", {"x": 1})
    assert [e["kind"] for e in bus.events_since(0, kinds=["trade"])] == ["trade"]


def test_switches_survive_reopening_and_unknown_switch_is_refused(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        bus.set_switch(DEPLOYS_FROZEN, True, actor="risk", reason="drawdown 8%")
    with Bus(tmp_path / "bus") as bus:
        assert bus.deploys_frozen and not bus.maintenance_mode
        with pytest.raises(KeyError, match="unknown switch"):
            bus.switch("self_destruct")


def test_commands_queue_in_order_and_results_come_back(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        a = bus.send_command("flatten", actor="bob")
        b = bus.send_command("promote", {"model_id": "m1"}, actor="bob")
        assert [c["id"] for c in bus.pending_commands()] == [a, b]
        first = bus.pop_command()
        assert first["command"] == "flatten" and first["actor"] == "bob"
        bus.set_command_result(first["id"], {"ok": True})
        assert bus.command_result(a)["ok"] is True
        assert bus.pop_command()["args"] == {"model_id": "m1"}
        assert bus.pop_command() is None


def test_bus_never_evicts(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        assert bus.cache.eviction_policy == "none"
        bus.set_switch(MAINTENANCE_MODE, True, actor="a", reason="r")
        for i in range(2000):
            bus.put_snapshot(f"s{i}", {"blob": "x" * 1000})
        assert bus.maintenance_mode

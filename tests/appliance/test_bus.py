import os
import shutil
import subprocess
import sys
import textwrap
import time

import diskcache
import pytest

from appliance.bus import DEPLOYS_FROZEN, MAINTENANCE_MODE, SWITCHES, Bus, BusError, operator_name
from appliance.contracts import Event


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_second_process_flips_the_kill_switch_and_the_first_sees_it(tmp_path):
    bus = Bus(tmp_path / "bus")
    bus.set_switch(MAINTENANCE_MODE, False, actor="appliance", reason="initialised")
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
            b.publish("training_progress", {{"i": i}}, service="p")
    """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)]) for _ in range(3)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    bus = Bus(path)
    events = bus.events_since(0)
    seqs = [e["seq"] for e in events]
    assert len(seqs) == 150 and seqs == sorted(seqs) and len(set(seqs)) == 150
    first = seqs[0]  # a new bus numbers from the wall clock: see the rebuild tests below
    assert seqs == list(range(first, first + 150)) and bus.last_event_seq() == first + 149
    assert [e["seq"] for e in bus.events_since(first + 139)] == seqs[-10:]
    bus.close()


@pytest.mark.timeout(120)
def test_a_reader_never_sees_a_number_before_its_entry(tmp_path):
    """CI caught the TUI's trade blotter missing a trade: the counter committed before the
    event it numbered, a reader took the counter as "read up to", and that event was skipped
    for good (the audit copy into DuckDB reads the same way). While another process writes
    events and audit entries, every number the counters show is already in the journal."""
    path = str(tmp_path / "bus")
    code = f"""
        from appliance.bus import Bus
        b = Bus({path!r})
        for i in range(600):
            b.publish("training_progress", {{"i": i}}, service="p")
            b.audit(actor="p", action=f"step {{i}}")
    """
    with Bus(path) as bus:
        events0, audit0 = bus.last_event_seq(), bus.last_audit_seq()
        writer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)])
        ahead, reads = 0, 0
        deadline = time.monotonic() + 90
        while (writer.poll() is None or reads == 0) and time.monotonic() < deadline:
            last_event, last_audit = bus.last_event_seq(), bus.last_audit_seq()
            events = {e["seq"] for e in bus.events_since(events0)}
            audit = {e["seq"] for e in bus.audit_entries(audit0)}
            reads += 1
            ahead += (any(s not in events for s in range(events0 + 1, last_event + 1))
                      or any(s not in audit for s in range(audit0 + 1, last_audit + 1)))
        assert writer.wait(timeout=60) == 0
        assert reads > 20, "the reader barely ran: the test proves nothing"
        assert ahead == 0, f"{ahead} of {reads} reads saw a number before its entry"
        assert len(bus.events_since(events0)) == 600


def test_event_deque_is_bounded_and_keeps_the_newest(tmp_path):
    bus = Bus(tmp_path / "bus", events_maxlen=100)
    for i in range(250):
        bus.publish("training_progress", {"i": i})
    events = bus.events_since(0)
    assert len(events) == 100 and events[-1]["data"]["i"] == 249
    assert [e["data"]["i"] for e in bus.events_since(0, limit=3)] == [247, 248, 249]
    bus.publish("trade", {"x": 1})
    assert [e["kind"] for e in bus.events_since(0, kinds=["trade"])] == ["trade"]


def test_switches_survive_reopening_and_unknown_switch_is_refused(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        bus.set_switch(MAINTENANCE_MODE, False, actor="appliance", reason="initialised")
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
        assert first["uid"] == os.getuid() and first["user"] == operator_name()
        bus.set_command_result(first["id"], {"ok": True})
        assert bus.command_result(a)["ok"] is True
        assert bus.pop_command()["args"] == {"model_id": "m1"}
        assert bus.pop_command() is None


def test_bus_never_evicts(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        assert bus.cache.eviction_policy == "none"
        bus.set_switch(MAINTENANCE_MODE, True, actor="a", reason="r")
        for i in range(2000):
            bus.cache.set(f"snapshot:s{i}", {"blob": "x" * 1000})  # any key, many of them
        assert bus.maintenance_mode


# -- fail closed (issue 11, holes 2 and 3) --------------------------------------------------

def test_a_missing_switch_reads_on_for_both_switches(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        assert bus.maintenance_mode is True and bus.deploys_frozen is True
        for name in SWITCHES:
            bus.set_switch(name, False, actor="appliance", reason="initialised")
        assert bus.maintenance_mode is False and bus.deploys_frozen is False
        bus.cache.delete(f"switch:{MAINTENANCE_MODE}")  # a bus that lost the key
        assert bus.maintenance_mode is True and bus.deploys_frozen is False


def test_a_direct_diskcache_write_of_off_reads_on(tmp_path):
    """Writing ``switch:maintenance_mode = False`` behind the bus's back (no journal entry)
    must not turn trading back on."""
    with Bus(tmp_path / "bus") as bus:
        bus.set_switch(MAINTENANCE_MODE, True, actor="ops", reason="incident")
    raw = diskcache.Cache(str(tmp_path / "bus"))
    raw.set(f"switch:{MAINTENANCE_MODE}", False)
    raw.close()
    with Bus(tmp_path / "bus") as bus:
        assert bus.maintenance_mode is True
        assert bus.switch_meta(MAINTENANCE_MODE) is None  # not a journalled record


def test_the_kill_file_holds_maintenance_on_until_a_resume(tmp_path):
    state = tmp_path / "state"
    with Bus(state / "bus") as bus:
        bus.set_switch(MAINTENANCE_MODE, False, actor="appliance", reason="initialised")
        (state / "KILL").write_text('{"actor": "ops", "reason": "bus broken"}')
        assert bus.maintenance_mode is True and bus.kill_file_present
        bus.set_switch(MAINTENANCE_MODE, False, actor="appliance", reason="restored")
        assert bus.maintenance_mode is True  # only an operator's resume clears it
        entry = bus.set_switch(MAINTENANCE_MODE, False, actor="ops", reason="all clear",
                               clear_kill_file=True)
        assert bus.maintenance_mode is False and not (state / "KILL").exists()
        assert entry["details"]["kill_file_removed"] is True


@pytest.mark.parametrize("damage", ["garbage", "half"])
def test_a_damaged_bus_file_is_a_bus_error_not_a_crash(tmp_path, damage):
    path = tmp_path / "bus"
    with Bus(path) as bus:
        for i in range(500):
            bus.cache.set(f"snapshot:s{i}", {"blob": "x" * 200})
    db = path / "cache.db"
    if damage == "garbage":
        db.write_bytes(os.urandom(8192))
    else:
        with open(db, "r+b") as fh:
            fh.truncate(db.stat().st_size // 2)
    with pytest.raises(BusError, match="damaged"):
        Bus(path)


def test_a_rebuilt_bus_numbers_its_journal_above_the_old_one(tmp_path):
    """DuckDB copies the journal idempotently on its sequence numbers: a bus rebuilt from
    scratch must not reuse numbers it already copied, or new audit rows would be lost."""
    with Bus(tmp_path / "bus") as bus:
        old = bus.audit(actor="ops", action="maintenance_mode=on")["seq"]
    for f in (tmp_path / "bus").glob("**/cache.db*"):
        f.unlink()
    with Bus(tmp_path / "bus") as bus:
        assert bus.audit(actor="ops", action="maintenance_mode=off")["seq"] > old


def test_commands_record_the_os_user_not_the_claimed_actor(tmp_path):
    with Bus(tmp_path / "bus", command_deadline_s=30) as bus:
        before = time.time()
        bus.send_command("promote", {"model_id": "m1"}, actor="root-pretender")
        forever = bus.send_command("flatten", deadline_s=None)
        cmd = bus.pop_command()
        assert cmd["actor"] == "root-pretender"
        assert (cmd["uid"], cmd["user"]) == (os.getuid(), operator_name())
        assert before + 30 <= cmd["deadline"] <= time.time() + 30
        assert bus.pop_command()["deadline"] is None and forever


def test_claim_and_cancel_race_and_exactly_one_wins(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        a = bus.send_command("promote", {"model_id": "m1"})
        b = bus.send_command("promote", {"model_id": "m2"})
        assert bus.cancel_command(a, reason="gave up") is True
        assert bus.claim_command(a) is False  # run must not execute it
        assert bus.claim_command(b) is True
        assert bus.cancel_command(b, reason="too late") is False  # already running
        assert bus.command_state(a)["state"] == "cancelled"


def test_resume_cancels_a_pending_flatten_and_journals_it(tmp_path):
    with Bus(tmp_path / "bus") as bus:
        f = bus.send_command("flatten", {"reason": "weekend"}, deadline_s=None)
        p = bus.send_command("promote", {"model_id": "m1"})
        assert bus.cancel_pending("flatten", actor="ops", reason="resume") == [f]
        assert bus.claim_command(f) is False and bus.claim_command(p) is True
        assert bus.audit_entries()[-1]["action"] == "command:flatten cancelled"


def test_an_undeclared_event_snapshot_or_command_is_refused_by_name(tmp_path):
    """Issue 9, typed contracts: a name typed differently on the two sides of the bus used to
    vanish silently (the TUI read an ``incidents`` snapshot nobody wrote). Now the bus refuses
    a name ``appliance/contracts.py`` does not declare, and says where to declare it."""
    bus = Bus(tmp_path / "bus")
    for call in (lambda: bus.publish("trades", {}), lambda: bus.put_snapshot("statuss", {}),
                 lambda: bus.send_command("promot", {})):
        with pytest.raises(ValueError, match="appliance/contracts.py"):
            call()
    assert bus.events_since(0) == [] and bus.pending_commands() == []
    bus.publish(Event.TRADE, {"symbol": "BTCUSDT"})
    bus.publish("trade", {"symbol": "ETHUSDT"})  # a member is its string
    assert [e["kind"] for e in bus.events_since(0)] == ["trade", "trade"]
    assert type(bus.events_since(0)[0]["kind"]) is str  # the bus stores plain strings


def test_a_bus_knows_when_its_directory_was_deleted_or_replaced_and_reopens_in_place(tmp_path):

    bus = Bus(tmp_path / "bus")
    bus.set_switch("maintenance_mode", True, actor="t", reason="r")
    assert not bus.lost()
    shutil.rmtree(tmp_path / "bus")
    assert bus.lost()  # still writable, but nobody else can see it
    other = Bus(tmp_path / "bus")  # another process recreates it first
    assert bus.lost()
    bus.reopen()
    assert not bus.lost()
    assert bus.switch_record("maintenance_mode") is None  # the new bus: what was lost is gone
    bus.set_tradable_pairs(["BTCUSDT"])
    assert other.tradable_pairs() == ["BTCUSDT"]  # the same bus as other processes now
    other.close()
    bus.close()


# -- sequence numbers across a rebuild (issue 11, bus loss) ---------------------------------

@pytest.mark.timeout(60)
def test_event_numbers_continue_on_a_bus_rebuilt_at_the_same_path(tmp_path):
    """A client that remembered the lost bus's last event number must see every event of the
    bus rebuilt in its place: the new numbers start above the old ones, not at 1."""

    lost = Bus(tmp_path / "bus")
    seen = [lost.publish("trade", {"i": i}) for i in range(3)]
    shutil.rmtree(tmp_path / "bus")
    with Bus(tmp_path / "bus") as rebuilt:
        first = rebuilt.publish("trade", {"i": 3})
        rebuilt.publish_many("trade", [{"i": 4}, {"i": 5}])
        assert first > seen[-1]
        assert [e["data"]["i"] for e in rebuilt.events_since(seen[-1])] == [3, 4, 5]
    lost.close()


@pytest.mark.timeout(60)
def test_raise_sequences_carries_the_lost_bus_numbers_and_never_lowers_them(tmp_path,
                                                                             monkeypatch):
    """A new bus numbers from the wall clock, which may have stepped back since the lost bus
    numbered its events: ``run`` raises the new counters past what the lost one reached."""

    bus = Bus(tmp_path / "bus")
    bus.publish("trade", {"i": 0})
    bus.audit(actor="ops", action="maintenance_mode=on")
    events, audit = bus.last_event_seq(), bus.last_audit_seq()
    shutil.rmtree(tmp_path / "bus")
    real = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real() - 3600)  # NTP stepped the clock back an hour
        bus.reopen()
    assert bus.last_event_seq() < events and bus.last_audit_seq() < audit
    bus.raise_sequences(events=events, audit=audit)
    assert bus.publish("trade", {"i": 1}) == events + 1
    assert bus.audit(actor="ops", action="maintenance_mode=off")["seq"] == audit + 1
    bus.raise_sequences(events=1, audit=1)
    assert (bus.last_event_seq(), bus.last_audit_seq()) == (events + 1, audit + 1)
    bus.close()


@pytest.mark.timeout(60)
def test_the_state_token_moves_with_the_tradable_pairs_and_counters_not_with_switches(tmp_path):
    """What the trading engine polls each bar (the tradable pairs, the registry version's
    mirror) moves the state token, from any process; a switch moves only the switch token,
    and the state token stays put while nothing changes (so the engine reads nothing)."""
    bus = Bus(tmp_path / "bus")
    first, switch = bus.state_token(), bus.switch_token()
    assert first is not None and bus.state_token() == first
    bus.set_switch("maintenance_mode", True, actor="t", reason="r")
    assert bus.state_token() == first and bus.switch_token() != switch
    subprocess.run([sys.executable, "-c", "from appliance.bus import Bus; "
                    f"Bus({str(tmp_path / 'bus')!r}).set_tradable_pairs(['BTCUSDT'])"],
                   check=True, timeout=50)
    second = bus.state_token()
    assert second != first and bus.tradable_pairs() == ["BTCUSDT"]
    switch = bus.switch_token()
    bus.counter_incr("registry_version")
    assert bus.state_token() not in (first, second) and bus.switch_token() == switch
    third = bus.state_token()
    shutil.rmtree(tmp_path / "bus")
    Bus(tmp_path / "bus").close()  # rebuilt by another process: a new, unstamped file
    bus.reopen()
    assert bus.state_token() not in (first, second, third, None)
    bus.close()

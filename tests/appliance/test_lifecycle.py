"""The model lifecycle on a real DuckDB file: transitions, their invariants, rollback, pins."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from appliance import lifecycle
from appliance.bus import Bus
from appliance.lifecycle import Lifecycle, LifecycleError
from appliance.store import Store
from models.registry import get_model, list_models
from tests.builders import fake_run


def modes(store) -> dict[str, str]:
    return {m["model_id"]: m["mode"] for m in list_models(store)}


def add(store, state_dir, run_id, group="t1-a", kind="rf", sharpe=1.0, now=1.0):
    lifecycle.register(store, fake_run(state_dir, run_id, sharpe, group, kind), now=now)
    return f"m-{run_id}"


@pytest.fixture
def store(state_dir):
    s = Store(state_dir / "methtrader.duckdb")
    yield s
    s.close()


def test_a_promotion_retires_the_groups_prod_and_rollback_brings_it_back(store, state_dir):
    a, b = add(store, state_dir, "a"), add(store, state_dir, "b", kind="mlp")
    lifecycle.promote(store, a, actor="ops", reason="first", now=10.0)
    moves = lifecycle.promote(store, b, actor="ops", reason="better", now=20.0)
    assert [(t.model_id, t.from_mode, t.to_mode) for t in moves] == [
        (a, "prod", "retired"), (b, "candidate", "prod")]
    assert modes(store) == {a: "retired", b: "prod"}
    assert get_model(store, a)["mode_since"] == 20.0
    back = lifecycle.rollback(store, "t1-a", actor="ops", reason="b misbehaves", now=30.0)
    assert [(t.model_id, t.to_mode) for t in back] == [(b, "retired"), (a, "prod")]
    assert modes(store) == {a: "prod", b: "retired"}
    audited = [r[0] for r in store.sql("SELECT action FROM audit_log ORDER BY id")]
    assert audited == [f"registered {a}", f"registered {b}", f"promoted {a}", f"retired {a}",
                       f"promoted {b}", f"retired {b}", f"promoted {a}"]


def test_demote_retires_prod_and_the_model_can_be_promoted_again(store, state_dir):
    """Finding 5: a demoted or replaced prod model used to be archived, and `promote` refused
    it although its file was still there."""
    a = add(store, state_dir, "a")
    lifecycle.promote(store, a, actor="ops", reason="go", now=10.0)
    lifecycle.demote(store, a, actor="ops", reason="pause", now=11.0)
    assert modes(store) == {a: "retired"}
    assert store.sql("SELECT count(*) FROM ml_models WHERE mode = 'prod'")[0][0] == 0
    lifecycle.promote(store, a, actor="ops", reason="again", now=12.0)
    assert modes(store) == {a: "prod"}


def test_a_pinned_prod_model_is_never_replaced(store, state_dir):
    a, b = add(store, state_dir, "a"), add(store, state_dir, "b", kind="mlp")
    lifecycle.promote(store, a, actor="ops", reason="go", now=10.0)
    lifecycle.pin(store, a, True, actor="ops", reason="hold", now=11.0)
    version = lifecycle.registry_version(store)
    for attempt in (lambda: lifecycle.promote(store, b, actor="ops", reason="x", now=12.0),
                    lambda: lifecycle.demote(store, a, actor="ops", reason="x", now=12.0)):
        with pytest.raises(LifecycleError, match="pinned"):
            attempt()
    assert modes(store) == {a: "prod", b: "candidate"}
    assert lifecycle.registry_version(store) == version  # refused: nothing was written


def test_newer_candidate_supersedes_older_of_same_group_and_kind(store, state_dir):
    old = add(store, state_dir, "old", now=1.0)
    other_kind = add(store, state_dir, "mlp1", kind="mlp", now=2.0)
    other_group = add(store, state_dir, "g2", group="t2-a", now=3.0)
    new = add(store, state_dir, "new", now=4.0)
    assert modes(store) == {old: "rejected", other_kind: "candidate",
                            other_group: "candidate", new: "candidate"}
    reason = store.sql("SELECT reason FROM model_transitions WHERE model_id = ? AND "
                       "to_mode = 'rejected'", [old])[0][0]
    assert reason == f"superseded by {new}"
    assert lifecycle.register(store, fake_run(state_dir, "new"), now=5.0) == []  # idempotent


def test_only_keep_retired_models_per_group_are_kept(store, state_dir):
    ids = [add(store, state_dir, f"r{i}", kind=f"k{i}") for i in range(5)]
    for i, m in enumerate(ids):
        lifecycle.promote(store, m, actor="ops", reason="next", now=10.0 + i, keep_retired=2)
    assert modes(store) == {ids[0]: "archived", ids[1]: "archived", ids[2]: "retired",
                            ids[3]: "retired", ids[4]: "prod"}
    assert lifecycle.delete_archived_files(store, state_dir) == 2
    assert not (state_dir / "artifacts" / "r0" / "model.onnx").exists()
    assert (state_dir / "artifacts" / "r2" / "model.onnx").exists()
    assert (state_dir / "artifacts" / "r0" / "result.json").exists()  # the record stays


def test_only_models_with_a_verdict_are_archived(store, state_dir):
    fresh = add(store, state_dir, "fresh")
    with pytest.raises(LifecycleError, match="only retired or rejected"):
        lifecycle.archive(store, fresh, actor="disk_guard", reason="full", now=2.0)
    assert modes(store) == {fresh: "candidate"}


def test_effects_bump_the_bus_version_and_notify(store, state_dir):
    with Bus(state_dir / "bus") as bus:
        from appliance.notify import Notifier

        life = Lifecycle(None, bus, Notifier(bus, None), state_dir)
        a = add(store, state_dir, "a")
        life.publish(lifecycle.promote(store, a, actor="ops", reason="go", now=10.0))
        assert bus.counter(lifecycle.REGISTRY_VERSION) == 1
        (event,) = bus.events_since(0, ["model_transition"])
        assert event["data"]["to_mode"] == "prod" and event["data"]["model_id"] == a
        (note,) = bus.events_since(0, ["notification"])
        assert note["data"]["kind"] == "promoted" and "ops" in note["data"]["text"]


def test_models_check_names_two_prods_a_missing_file_and_a_changed_one(
        store, state_dir, capsys):
    """`methtrader models --check`, which the registry's docstring promised and the CLI did
    not have: exit 0 on a sound registry, 1 with one line per problem."""
    from appliance.cli import main

    a, b, c = (add(store, state_dir, r, kind=k) for r, k in (("a", "rf"), ("b", "mlp"),
                                                                ("c", "lstm")))
    lifecycle.promote(store, a, actor="ops", reason="go", now=10.0)
    lifecycle.start_shadow(store, b, actor="ops", reason="try", now=11.0)
    store.close()
    args = ["models", "--check", "--state-dir", str(state_dir)]
    assert main(args) == 0 and "registry OK: 3 models" in capsys.readouterr().out

    broken = Store(state_dir / "methtrader.duckdb")
    broken.sql("UPDATE ml_models SET mode = 'prod' WHERE model_id = ?", [b])  # behind its back
    broken.close()
    (state_dir / "artifacts" / "c" / "model.onnx").unlink()
    with (state_dir / "artifacts" / "a" / "model.onnx").open("ab") as f:
        f.write(b"tampered")
    assert main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert "group t1-a has 2 prod models" in out
    assert any(line.startswith(f"{c} (candidate)") and "missing" in line for line in out)
    assert any(line.startswith(f"{a} (prod)") and "sha256" in line for line in out)
    assert len(out) == 3


def test_migration_keeps_one_prod_per_group(state_dir):
    """Finding 1's damage in an existing file: a group with two prod models keeps the newest."""
    import duckdb

    from appliance.store import migrate

    con = duckdb.connect(str(state_dir / "old.duckdb"))
    migrate(con, 4)
    con.execute("INSERT INTO ml_models (model_id, grp, mode, promoted, created) VALUES "
                "('a', 'g', 'prod', 1, 0), ('b', 'g', 'prod', 2, 0)")
    migrate(con)
    assert dict(con.execute("SELECT model_id, mode FROM ml_models").fetchall()) == {
        "a": "retired", "b": "prod"}
    con.close()


class LifecycleMachine(RuleBasedStateMachine):
    """Random sequences of registrations, verdicts, operator commands, disk-guard runs and
    restarts never break the invariants."""

    GROUPS = ("g1", "g2")
    KINDS = ("rf", "mlp")

    def __init__(self) -> None:
        super().__init__()
        import tempfile
        from pathlib import Path

        self.dir = Path(tempfile.mkdtemp())
        self.store = Store(self.dir / "methtrader.duckdb")
        self.n = 0
        self.now = 1.0
        self.pins: set[str] = set()
        self.refused = 0

    def teardown(self) -> None:
        self.store.close()

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    def _pick(self, data, mode: str | None = None) -> str | None:
        pool = [m["model_id"] for m in list_models(self.store)
                if mode is None or m["mode"] == mode]
        return data.draw(st.sampled_from(sorted(pool))) if pool else None

    def _try(self, op) -> None:
        before = (modes(self.store), lifecycle.registry_version(self.store))
        try:
            op()
        except LifecycleError:
            self.refused += 1
            assert (modes(self.store), lifecycle.registry_version(self.store)) == before

    @rule(group=st.sampled_from(GROUPS), kind=st.sampled_from(KINDS))
    def train(self, group, kind):
        self.n += 1
        lifecycle.register(self.store, fake_run(self.dir, f"r{self.n}", group=group,
                                                kind=kind), now=self._tick())

    @rule(data=st.data())
    def start_shadow(self, data):
        m = self._pick(data, "candidate")
        if m:
            self._try(lambda: lifecycle.start_shadow(self.store, m, actor="shadow",
                                                     reason="slot", now=self._tick()))

    @rule(data=st.data(), promote=st.booleans())
    def nightly_verdict(self, data, promote):
        m = self._pick(data, "shadow")
        if m is None:
            return
        if promote:
            self._try(lambda: lifecycle.promote(self.store, m, actor="shadow", reason="rule",
                                                now=self._tick(), keep_retired=2))
        else:
            self._try(lambda: lifecycle.reject(self.store, m, actor="shadow", reason="rule",
                                               now=self._tick()))

    @rule(data=st.data(), command=st.sampled_from(("promote", "demote", "pin", "unpin")))
    def operator(self, data, command):
        m = self._pick(data)
        if m is None:
            return
        ops = {"promote": lambda: lifecycle.promote(self.store, m, actor="ops", reason="x",
                                                    now=self._tick(), keep_retired=2),
               "demote": lambda: lifecycle.demote(self.store, m, actor="ops", reason="x",
                                                  now=self._tick()),
               "pin": lambda: lifecycle.pin(self.store, m, True, actor="ops", reason="x",
                                            now=self._tick()),
               "unpin": lambda: lifecycle.pin(self.store, m, False, actor="ops", reason="x",
                                              now=self._tick())}
        self._try(ops[command])
        pinned = bool(get_model(self.store, m).get("pinned"))
        (self.pins.add if pinned else self.pins.discard)(m)

    @rule(group=st.sampled_from(GROUPS))
    def rollback(self, group):
        self._try(lambda: lifecycle.rollback(self.store, group, actor="ops", reason="x",
                                             now=self._tick()))

    @rule(data=st.data())
    def disk_guard(self, data):
        m = self._pick(data)
        if m:
            self._try(lambda: lifecycle.archive(self.store, m, actor="disk_guard",
                                                reason="full", now=self._tick()))

    @rule()
    def restart(self):
        self.store.close()
        self.store = Store(self.dir / "methtrader.duckdb")

    @invariant()
    def at_most_one_prod_per_group_and_known_modes(self):
        assert lifecycle.invariants(self.store) == []

    @invariant()
    def every_transition_audited_exactly_once(self):
        transitions = self.store.sql("SELECT count(*) FROM model_transitions")[0][0]
        audited = self.store.sql("SELECT count(*) FROM audit_log WHERE action NOT LIKE 'pin %' "
                                 "AND action NOT LIKE 'unpin %'")[0][0]
        assert transitions == audited
        pins = self.store.sql("SELECT count(*) FROM audit_log WHERE action LIKE 'pin %' OR "
                              "action LIKE 'unpin %'")[0][0]
        assert lifecycle.registry_version(self.store) == transitions + pins
        for details, in self.store.sql("SELECT details FROM audit_log"):
            assert "market_ts" in json.loads(details)

    @precondition(lambda self: bool(self.pins))
    @invariant()
    def pinned_models_stay_prod(self):
        current = modes(self.store)
        for m in self.pins:
            assert current[m] == "prod"


LifecycleMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestLifecycleMachine = LifecycleMachine.TestCase

"""The operator service (issue 11, holes 3 and 4): a command runs only if its sender still
wants it, its deadline has not passed and its uid may act on the state dir; a switch changed
behind the bus is audited and fails closed. Real bus, real DuckDB, trio's autojump clock."""

from __future__ import annotations

import os
import time
from typing import Any

import diskcache
import pytest
import trio

from appliance.bus import MAINTENANCE_MODE
from appliance.services import operator

pytestmark = pytest.mark.trio


class Recorder:
    """A promote handler that records each call (the real ones change the registry)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, ctx, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(args)
        return {"promoted": args["model_id"]}


async def test_a_stale_command_is_dropped_and_audited(make_ctx) -> None:
    ctx = make_ctx()
    handler = Recorder()
    ctx.bus.send_command("promote", {"model_id": "m1", "reason": "late"}, deadline_s=-1)
    fresh = ctx.bus.send_command("promote", {"model_id": "m2", "reason": "now"})
    cmd = ctx.bus.pop_command()
    result = await operator.execute(ctx, cmd, {"promote": handler})
    assert result["ok"] is False and result["error"].startswith("dropped: stale")
    assert await operator.execute(ctx, ctx.bus.pop_command(), {"promote": handler}) is not None
    assert [c["model_id"] for c in handler.calls] == ["m2"]
    assert ctx.bus.command_result(fresh)["ok"] is True
    actions = [e["action"] for e in ctx.bus.audit_entries()]
    assert "command:promote dropped" in actions and "command:promote" in actions


async def test_a_command_from_a_foreign_uid_is_refused_and_audited(make_ctx) -> None:
    ctx = make_ctx()
    handler = Recorder()
    cmd = {"id": "c1", "command": "promote", "args": {"model_id": "m1"}, "actor": "root",
           "user": "mallory", "uid": os.getuid() + 4242, "source": "cli",
           "ts": time.time(), "deadline": time.time() + 60}
    result = await operator.execute(ctx, cmd, {"promote": handler})
    assert result["ok"] is False and "neither owns the state dir" in result["error"]
    assert handler.calls == []
    entry = ctx.bus.audit_entries()[-1]
    assert entry["action"] == "command:promote refused"
    assert (entry["details"]["user"], entry["details"]["uid"]) == ("mallory", os.getuid() + 4242)


async def test_a_command_with_no_uid_is_refused(make_ctx) -> None:
    ctx = make_ctx()
    cmd = {"id": "c2", "command": "promote", "args": {"model_id": "m1"}, "actor": "ops",
           "ts": time.time()}
    assert "refused" in (await operator.execute(ctx, cmd, {"promote": Recorder()}))["error"]


async def test_a_command_cancelled_by_its_sender_never_runs(make_ctx, autojump_clock) -> None:
    ctx = make_ctx()
    handler = Recorder()
    cid = ctx.bus.send_command("promote", {"model_id": "m1"})
    assert ctx.bus.cancel_command(cid, reason="the cli gave up")
    with trio.move_on_after(2):
        await operator.run(ctx, {"promote": handler})
    assert handler.calls == [] and ctx.bus.command_result(cid) is None
    assert ctx.bus.pending_commands() == []


async def test_a_switch_written_behind_the_bus_is_audited_and_turned_on(make_ctx, state_dir,
                                                                        autojump_clock) -> None:
    ctx = make_ctx()
    with trio.move_on_after(2):
        await operator.run(ctx, {})
    ctx.bus.set_switch(MAINTENANCE_MODE, False, actor="ops", reason="journalled resume")
    with trio.move_on_after(2):
        await operator.run(ctx, {})
    assert not any("unaudited" in e["action"] for e in ctx.bus.audit_entries())

    raw = diskcache.Cache(str(state_dir / "bus"))
    raw.set(f"switch:{MAINTENANCE_MODE}", {"value": False, "actor": "ops", "reason": "trust me",
                                           "ts": time.time(), "source": "cli", "seq": 1})
    raw.close()
    with trio.move_on_after(2):
        await operator.run(ctx, {})
    assert ctx.bus.maintenance_mode is True
    incidents = ctx.store.store.sql("SELECT kind, message FROM incidents")
    assert [k for k, _ in incidents] == ["unaudited_switch_change"]
    logged = [r[0] for r in ctx.store.store.sql("SELECT action FROM audit_log ORDER BY id")]
    assert "maintenance_mode unaudited change" in logged and logged[-1] == "maintenance_mode=on"

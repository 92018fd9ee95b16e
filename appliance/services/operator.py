"""Operator actions arriving through the bus.

The CLI and the TUI never touch DuckDB while ``run`` is up: switches are flipped on the bus
directly (so the kill switch works even when this service is down) and journalled there; this
service copies the journal into ``audit_log`` and executes queued commands, recording each
result on the bus and in the audit log. It also watches the switches (see
:mod:`appliance.switches`): a change with no journal entry behind it is audited, raised as an
incident and fails closed.

A command runs only if it is still wanted and was sent by someone entitled to:

* its sender has not cancelled it (the CLI cancels what it stopped waiting for; a resume
  cancels a pending flatten) — claiming and cancelling race on one atomic bus operation;
* its wall-time deadline has not passed (a stale command is dropped and audited, so a command
  the CLI reported as failed never runs later);
* the OS uid that wrote it owns the state dir or is root (otherwise refused and audited).

Later layers register their commands (flatten, promote, demote, pin) in ``handlers``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Awaitable, Callable

import trio

from appliance.context import ServiceContext
from appliance.contracts import Event
from appliance.logs import service_logger
from appliance.store import Store
from appliance.switches import SwitchWatch, audit_log_switches

NAME = "operator"
Handler = Callable[[ServiceContext, dict[str, Any]], Awaitable[dict[str, Any]]]


def copy_audit_journal(store: Store, entries: list[dict[str, Any]]) -> int:
    return store.copy_audit(entries)


async def sync_audit(ctx: ServiceContext) -> int:
    after = await ctx.store.call("max_audit_seq")
    entries = ctx.bus.audit_entries(after)
    if not entries:
        return 0
    return await ctx.store.run(copy_audit_journal, ctx.store.store, entries)


def refusal(cmd: dict[str, Any], owner_uid: int, default_deadline_s: float,
            now: float) -> str | None:
    """Why ``run`` must not execute this command, or None. Pure: no clock of its own."""
    uid = cmd.get("uid")
    if not isinstance(uid, int) or uid not in (owner_uid, 0):
        return (f"refused: sent by uid {uid!r} ({cmd.get('user', '?')}), which neither owns "
                f"the state dir (uid {owner_uid}) nor is root")
    deadline = cmd.get("deadline", "missing")
    if deadline == "missing":  # queued by an older methtrader: the default applies
        deadline = float(cmd.get("ts") or 0) + default_deadline_s
    if deadline is not None and now > float(deadline):
        return f"dropped: stale, its deadline passed {now - float(deadline):.0f} s ago"
    return None


async def execute(ctx: ServiceContext, cmd: dict[str, Any],
                  handlers: dict[str, Handler]) -> dict[str, Any] | None:
    """Claim, check and run one command; None when its sender had cancelled it."""
    if not ctx.bus.claim_command(cmd["id"]):
        return None
    why_not = refusal(cmd, os.stat(ctx.cfg.state_path).st_uid,
                      ctx.cfg.bus.command_deadline_s, time.time())
    handler = handlers.get(cmd["command"])
    if why_not is not None:
        result = {"ok": False, "error": why_not}
    elif handler is None:
        result = {"ok": False, "error": f"unknown command {cmd['command']!r}; known: "
                  f"{', '.join(sorted(handlers)) or 'none yet'}"}
    else:
        try:
            result = {"ok": True, **await handler(ctx, cmd.get("args", {}))}
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    action = f"command:{cmd['command']}" + ("" if why_not is None else
                                           f" {why_not.split(':')[0]}")
    ctx.bus.audit(actor=cmd.get("actor", "unknown"), action=action,
                  reason=str(cmd.get("args", {}).get("reason", "")),
                  details={"args": cmd.get("args", {}), "result": result,
                           "source": cmd.get("source"), "user": cmd.get("user"),
                           "uid": cmd.get("uid"), "command_id": cmd["id"]})
    ctx.bus.set_command_result(cmd["id"], result)
    return result


async def record_incident(ctx: ServiceContext, kind: str, message: str) -> None:
    await ctx.store.call("record_incident", NAME, kind, message, None)
    ctx.bus.publish(Event.INCIDENT, {"service": NAME, "kind": kind, "message": message},
                    service=NAME, market_ts=ctx.clock.now())
    service_logger(NAME).warning(message, kind=kind)


async def run(ctx: ServiceContext, handlers: dict[str, Handler]) -> None:
    log = service_logger(NAME)
    _, known = await ctx.store.run(audit_log_switches, ctx.store.store)
    watch = SwitchWatch(ctx.bus, known)

    async def incident(kind: str, message: str) -> None:
        await record_incident(ctx, kind, message)

    while True:
        ctx.beat(NAME)
        await watch.tick(incident)
        while (cmd := ctx.bus.pop_command()) is not None:
            result = await execute(ctx, cmd, handlers)
            if result is None:
                log.info("command cancelled by its sender, not run", command=cmd["command"],
                         command_id=cmd["id"])
            else:
                log.info("command executed" if result["ok"] else "command not executed",
                         command=cmd["command"], actor=cmd.get("actor"), ok=result["ok"],
                         error=result.get("error"))
        await sync_audit(ctx)
        await trio.sleep(0.5)

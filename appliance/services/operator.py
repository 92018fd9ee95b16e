"""Operator actions arriving through the bus.

The CLI and the TUI never touch DuckDB while ``run`` is up: switches are flipped on the bus
directly (so the kill switch works even when this service is down) and journalled there; this
service copies the journal into ``audit_log`` and executes queued commands, recording each
result on the bus and in the audit log.

Later layers register their commands (flatten, promote, demote, pin) in ``handlers``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio

from appliance.context import ServiceContext
from appliance.logs import service_logger
from appliance.store import Store

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


async def execute(ctx: ServiceContext, cmd: dict[str, Any],
                  handlers: dict[str, Handler]) -> dict[str, Any]:
    handler = handlers.get(cmd["command"])
    if handler is None:
        result = {"ok": False, "error": f"unknown command {cmd['command']!r}; known: "
                  f"{', '.join(sorted(handlers)) or 'none yet'}"}
    else:
        try:
            result = {"ok": True, **await handler(ctx, cmd.get("args", {}))}
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    ctx.bus.audit(actor=cmd.get("actor", "unknown"), action=f"command:{cmd['command']}",
                  reason=str(cmd.get("args", {}).get("reason", "")),
                  details={"args": cmd.get("args", {}), "result": result,
                           "source": cmd.get("source")})
    ctx.bus.set_command_result(cmd["id"], result)
    return result


async def run(ctx: ServiceContext, handlers: dict[str, Handler]) -> None:
    log = service_logger(NAME)
    while True:
        ctx.beat(NAME)
        while (cmd := ctx.bus.pop_command()) is not None:
            result = await execute(ctx, cmd, handlers)
            log.info("command executed", command=cmd["command"], actor=cmd.get("actor"),
                     ok=result["ok"])
        await sync_audit(ctx)
        await trio.sleep(0.5)

"""The appliance's side of ``methtrader chaos``: documented ways to break ``run`` on purpose.

``Command.CHAOS_CRASH {"service": name}`` (sent through the bus like any operator command)
makes the supervisor crash that service (:meth:`Supervisor.inject_crash`), so the chaos harness
can measure how fast it is back. ``Command.CHAOS_STORE_FAULT {"fail": n, "after": k}`` lets the
next ``k`` DuckDB write statements through and makes the ``n`` after them fail
(:meth:`Store.inject_write_faults`; n at most 10). ``Command.CHAOS_DISK_FULL {"seconds": s}``
makes every write of the store (DuckDB) and the lake (Parquet) fail with ``OSError(ENOSPC)`` for
the next ``s`` seconds (at most :data:`~data.disk.MAX_INJECT_S`), as a full disk would
(:meth:`DiskState.inject`; what the appliance does then: :mod:`appliance.disk_full`). All three
are honoured only where no real order can be at stake, never with real orders: always in the
sim, and in a replay or a paper bybit run when ``chaos.enabled`` is set. Anywhere else the
command is refused, and the refusal is audited as every command is.
"""

from __future__ import annotations

from appliance.config import Config
from appliance.context import ServiceContext
from appliance.store import Store
from appliance.supervision import Supervisor
from data.disk import MAX_INJECT_S

MAX_STORE_FAULTS = 10


def chaos_allowed(cfg: Config) -> bool:
    if cfg.general.exchange == "sim":
        return True
    paper = cfg.general.exchange == "replay" or cfg.bybit.paper
    return paper and cfg.chaos.enabled


def crash_handler(supervisor: Supervisor):
    """The operator handler of ``chaos_crash``."""

    async def handler(ctx: ServiceContext, args: dict) -> dict:
        if not chaos_allowed(ctx.cfg):
            raise PermissionError("chaos_crash is refused: set chaos.enabled = true (honoured "
                                  "in sim and paper runs only, never with real orders)")
        name = str(args.get("service", ""))
        if name not in supervisor.states:
            raise ValueError(f"no service {name!r}; services: {', '.join(supervisor.states)}")
        if not supervisor.inject_crash(name, str(args.get("reason") or "chaos experiment")):
            raise RuntimeError(f"{name} is not running ({supervisor.states[name].state})")
        return {"crashed": name}

    return handler


async def store_fault_handler(ctx: ServiceContext, args: dict) -> dict:
    """The operator handler of ``chaos_store_fault``."""
    if not chaos_allowed(ctx.cfg):
        raise PermissionError("chaos_store_fault is refused: set chaos.enabled = true (honoured "
                              "in sim and paper runs only, never with real orders)")
    fail, after = int(args.get("fail", 1)), int(args.get("after", 0))
    if not (1 <= fail <= MAX_STORE_FAULTS and 0 <= after <= 1000):
        raise ValueError(f"fail must be 1..{MAX_STORE_FAULTS} and after 0..1000 "
                         f"(got fail={fail}, after={after})")
    await ctx.store.run(Store.inject_write_faults, ctx.store.store, fail, after)
    return {"fail": fail, "after": after}


async def disk_full_handler(ctx: ServiceContext, args: dict) -> dict:
    """The operator handler of ``chaos_disk_full``."""
    if not chaos_allowed(ctx.cfg):
        raise PermissionError("chaos_disk_full is refused: set chaos.enabled = true (honoured "
                              "in sim and paper runs only, never with real orders)")
    seconds = float(args.get("seconds", 10.0))
    if not 0.0 < seconds <= MAX_INJECT_S:
        raise ValueError(f"seconds must be in (0, {MAX_INJECT_S:g}] (got {seconds:g})")
    ctx.disk.inject(seconds)
    return {"seconds": seconds}

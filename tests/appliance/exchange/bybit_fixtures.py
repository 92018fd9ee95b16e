"""Shared helpers: a fake Bybit on an ephemeral 127.0.0.1 port inside the test's trio run."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from appliance.exchange.fake_bybit import FakeBybitApp, FakeBybitServer

#: 2025-01-01T00:00:00Z — a fixed, long-closed range, so answers never depend on "now"
T0 = 1_735_689_600_000
KEY, SECRET = "fake-key", "fake-secret"


@asynccontextmanager
async def fake_bybit(**kwargs: Any) -> AsyncIterator[tuple[FakeBybitApp, str]]:
    """Yield (app, base_url); the app is the live server state (faults, stats, accounts)."""
    kwargs.setdefault("fault_seed", 1)
    app = FakeBybitApp(7, **kwargs)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(FakeBybitServer(app).serve, 0)
        yield app, f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


def frozen(ms: int):
    """A server clock stopped at ``ms``: rate-limit windows never roll, answers are fixed."""
    return lambda: ms / 1000


def at_window_start():
    """The real clock shifted so that "now" is 1 ms into a fresh 1 s rate-limit window."""
    now = time.time()
    shift = (1.001 - now % 1.0) % 1.0
    return lambda: time.time() + shift

"""What every service receives: the one config, the clock, the bus, the store and the market."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import trio

from appliance.bus import Bus
from appliance.clock import Clock
from appliance.config import Config
from appliance.exchange.base import Exchange
from appliance.metrics import Metrics
from appliance.store import StoreRunner
from data.disk import DiskState

T = TypeVar("T")


@dataclass
class ServiceContext:
    cfg: Config
    clock: Clock
    bus: Bus
    store: StoreRunner
    exchange: Exchange
    metrics: Metrics
    beats: dict[str, float] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)  # service -> why (an outage)
    inline: bool = False  # run blocking work on the loop: tests on trio's autojump clock

    async def io(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking work (disk, CPU, SQLite) in a worker thread, so the loop stays free.

        With ``inline`` it runs on the loop instead: trio's autojump clock would otherwise
        jump ahead while the thread is busy.
        """
        if self.inline:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    @property
    def disk(self) -> DiskState:
        """Whether the disk takes writes (the store's; the lake's writes report to it too)."""
        return self.store.store.disk

    def beat(self, service: str) -> None:
        """A service's own liveness mark (wall time), shown as heartbeat_age_seconds."""
        self.beats[service] = time.time()

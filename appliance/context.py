"""What every service receives: the one config, the clock, the bus, the store and the market."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from appliance.bus import Bus
from appliance.clock import Clock
from appliance.config import Config
from appliance.exchange.base import Exchange
from appliance.metrics import Metrics
from appliance.store import StoreRunner


@dataclass
class ServiceContext:
    cfg: Config
    clock: Clock
    bus: Bus
    store: StoreRunner
    exchange: Exchange
    metrics: Metrics
    beats: dict[str, float] = field(default_factory=dict)

    def beat(self, service: str) -> None:
        """A service's own liveness mark (wall time), shown as heartbeat_age_seconds."""
        self.beats[service] = time.time()

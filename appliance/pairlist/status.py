"""Keep pairs the exchange is trading (not PreLaunch, Settling, Closed, ...)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.pairlist import PairRow


@dataclass(frozen=True)
class StatusFilter:
    name: str = "status"

    def keep(self, row: PairRow) -> bool:
        return row.status == "Trading"

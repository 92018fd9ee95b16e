"""Keep pairs whose 24h turnover is above the bar ($10M by default): liquid enough to trade."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.pairlist import PairRow


@dataclass(frozen=True)
class TurnoverFilter:
    min_turnover_usd: float = 10_000_000.0
    name: str = "turnover"

    def keep(self, row: PairRow) -> bool:
        return row.turnover_24h > self.min_turnover_usd

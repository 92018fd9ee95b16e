"""Keep USDT-quoted pairs: the appliance's money is USDT."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.pairlist import PairRow


@dataclass(frozen=True)
class QuoteFilter:
    quote: str = "USDT"
    name: str = "quote"

    def keep(self, row: PairRow) -> bool:
        return row.quote == self.quote

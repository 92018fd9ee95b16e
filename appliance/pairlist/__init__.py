"""Which pairs are tradable: a chain of small filters, one per file (freqtrade's pairlists).

Each filter takes the candidate rows and returns the ones it keeps, with the reason it dropped
the others. :func:`select` runs the chain; :func:`changes` compares two selections and names
every change (listed, delisted, crossed the bar, dropped below it) for ``pair_events``.
All pure: no clock, no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol

from appliance.domain import Instrument, Ticker


@dataclass(frozen=True)
class PairRow:
    symbol: str
    status: str
    quote: str
    turnover_24h: float
    tradable: bool = False
    dropped_by: str | None = None


class PairFilter(Protocol):
    name: str

    def keep(self, row: PairRow) -> bool: ...


def candidates(instruments: Iterable[Instrument], tickers: Iterable[Ticker]) -> list[PairRow]:
    turnover = {t.symbol: t.turnover_24h for t in tickers}
    return [PairRow(i.symbol, i.status, i.quote_coin, turnover.get(i.symbol, 0.0))
            for i in sorted(instruments, key=lambda i: i.symbol)]


def select(rows: list[PairRow], filters: list[PairFilter]) -> list[PairRow]:
    """Mark each row tradable, or name the first filter that dropped it."""
    out = []
    for row in rows:
        dropped = next((f.name for f in filters if not f.keep(row)), None)
        out.append(PairRow(row.symbol, row.status, row.quote, row.turnover_24h,
                           tradable=dropped is None, dropped_by=dropped))
    return out


@dataclass(frozen=True)
class PairChange:
    symbol: str
    event: str  # listed | delisted | crossed_bar | dropped_below_bar
    turnover_24h: float


def changes(previous: dict[str, PairRow], current: list[PairRow]) -> list[PairChange]:
    """What changed between two selections, keyed by symbol.

    ``listed``/``delisted`` follow the exchange's status; ``crossed_bar``/``dropped_below_bar``
    follow the tradable flag of a pair that stayed listed.
    """
    out: list[PairChange] = []
    now = {r.symbol: r for r in current}
    for sym, row in now.items():
        before = previous.get(sym)
        listed_now = row.status == "Trading"
        listed_before = before is not None and before.status == "Trading"
        if listed_now and not listed_before:
            out.append(PairChange(sym, "listed", row.turnover_24h))
        elif listed_before and not listed_now:
            out.append(PairChange(sym, "delisted", row.turnover_24h))
        was = before is not None and before.tradable
        if row.tradable and not was:
            out.append(PairChange(sym, "crossed_bar", row.turnover_24h))
        elif was and not row.tradable and listed_now:
            out.append(PairChange(sym, "dropped_below_bar", row.turnover_24h))
    for sym, before in previous.items():
        if sym not in now and before.status == "Trading":
            out.append(PairChange(sym, "delisted", before.turnover_24h))
    return out

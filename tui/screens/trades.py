"""Trade feed: the 50 most recent trades (prod and shadow), newest first, P&L coloured."""

from __future__ import annotations

from typing import Any, Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Static

from tui.client import TRADE_ROWS, MissionState
from tui.screens.base import MissionScreen
from tui.widgets import fmt
from tui.widgets.blotter import Blotter

COLUMNS = (("Time (UTC)", 19, "left"), ("Symbol", 12, "left"), ("Side", 4, "left"),
           ("Qty", 10, "right"), ("Price", 12, "right"), ("P&L", 10, "right"),
           ("Model", 16, "left"), ("Mode", 6, "left"))


def trade_cells(trade: Mapping[str, Any]) -> tuple[Any, ...]:
    side = fmt.text(trade.get("side"))
    mode = fmt.text(trade.get("mode"))
    return (fmt.timestamp(trade.get("ts_ms")), fmt.text(trade.get("symbol")),
            Text(side, style="green" if side == "Buy" else "red" if side == "Sell" else ""),
            fmt.num(trade.get("qty"), 4), fmt.num(trade.get("price"), 4), fmt.pnl(trade.get("pnl")),
            fmt.text(trade.get("model_id")), Text(mode, style="bold" if mode == "prod" else "dim"))


class TradeFeedScreen(MissionScreen):
    MODE = "trades"

    def compose_body(self) -> ComposeResult:
        yield Static(id="trades-summary", classes="summary")
        yield Blotter(COLUMNS, id="blotter")

    def render_state(self, state: MissionState, changed: frozenset[str]) -> None:
        if "trades" not in changed:
            return
        self.query_one("#blotter", Blotter).set_rows([trade_cells(t) for t in state.trades])
        totals = {"prod": 0.0, "shadow": 0.0}
        for trade in state.trades:
            value = fmt.as_float(trade.get("pnl"))
            if value is not None and trade.get("mode") in totals:
                totals[str(trade["mode"])] += value
        summary = Text(f"Last {len(state.trades)} of at most {TRADE_ROWS} trades, newest first"
                       "  ·  P&L prod ")
        summary.append(fmt.pnl(totals["prod"]))
        summary.append("  ·  P&L shadow ")
        summary.append(fmt.pnl(totals["shadow"]))
        self.query_one("#trades-summary", Static).update(summary)

"""Dashboard: money, trades, models, the two switches, data sources and service health."""

from __future__ import annotations

from typing import Any, Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal

from tui.client import MissionState
from tui.screens.base import MissionScreen
from tui.widgets import fmt
from tui.widgets.cards import NumberCard, TextCard
from tui.widgets.table import fill, make_table


def _tone(value: Any) -> str:
    number = fmt.as_float(value)
    return "" if number is None or number == 0 else "up" if number > 0 else "down"


class DashboardScreen(MissionScreen):
    MODE = "dashboard"

    def compose_body(self) -> ComposeResult:
        with Horizontal(classes="cards"):
            yield NumberCard("Portfolio value (USDT)", id="equity")
            yield NumberCard("Daily P&L", id="daily-pnl")
            yield NumberCard("Sharpe", id="sharpe")
        with Horizontal(classes="cards"):
            yield NumberCard("Trades", id="trades")
            yield TextCard("Active models", id="models")
            yield TextCard("maintenance_mode", id="maintenance")
            yield TextCard("deploys_frozen", id="deploys")
        with Horizontal(classes="tables"):
            yield make_table(("Source", "Lag", "Missing", "Cache hit", "Health"), id="sources")
            yield make_table(("Service", "State", "Restarts", "Last error"), id="services")

    def on_mount(self) -> None:
        self.query_one("#sources").border_title = "Data sources"
        self.query_one("#services").border_title = "Service health"
        super().on_mount()

    def render_state(self, state: MissionState, changed: frozenset[str]) -> None:
        if "status" in changed:
            self._render_status(state.status, state.sources)
        if "switches" in changed:
            self._render_switches(state)
        if "heartbeat" in changed:
            self._render_services(fmt.get(state.heartbeat, "services"))

    def _render_status(self, status: Mapping[str, Any], sources: Mapping[str, Any]) -> None:
        self.query_one("#equity", NumberCard).show(fmt.num(status.get("equity")))
        daily = status.get("daily_pnl")
        self.query_one("#daily-pnl", NumberCard).show(fmt.signed(daily), _tone(daily))
        sharpe = status.get("sharpe")
        self.query_one("#sharpe", NumberCard).show(fmt.num(sharpe), _tone(sharpe))
        self.query_one("#trades", NumberCard).show(fmt.integer(status.get("trades")))
        models = status.get("models")
        self.query_one("#models", TextCard).show(
            f"prod {fmt.integer(fmt.get(models, 'prod'))}   "
            f"shadow {fmt.integer(fmt.get(models, 'shadow'))}",
            subtitle=f"candidates {fmt.integer(fmt.get(models, 'candidate'))}")
        table = self.query_one("#sources")
        fill(table, ((str(name), (
            str(name), fmt.seconds(fmt.get(row, "lag_s")), fmt.integer(fmt.get(row, "missing")),
            fmt.percent(fmt.get(row, "cache_hit_rate")), fmt.healthy(fmt.get(row, "healthy"))))
            for name, row in sorted(sources.items())))
        symbols = status.get("symbols")
        count = len(symbols) if isinstance(symbols, list) else fmt.DASH
        table.border_subtitle = f"{count} symbols · {fmt.integer(status.get('candles'))} candles"

    def _render_switches(self, state: MissionState) -> None:
        for card_id, name, on, labels, on_tone in (
                ("#maintenance", "maintenance_mode", state.maintenance_mode,
                 ("ON — TRADING HALTED", "OFF — trading"), "on"),
                ("#deploys", "deploys_frozen", state.deploys_frozen,
                 ("FROZEN", "OFF — deploys allowed"), "warn")):
            meta = state.switch_meta.get(name)
            who = (f"{fmt.text(fmt.get(meta, 'actor'))}: {fmt.text(fmt.get(meta, 'reason'))}"
                   if isinstance(meta, Mapping) else "")
            self.query_one(card_id, TextCard).show(labels[0] if on else labels[1],
                                                   tone=on_tone if on else "off", subtitle=who)

    def _render_services(self, services: Any) -> None:
        rows = []
        restarts = failed = 0
        for name, row in sorted(services.items() if isinstance(services, Mapping) else []):
            state_name = fmt.get(row, "state")
            restarts += int(fmt.as_float(fmt.get(row, "restarts")) or 0)
            failed += state_name == "failed"
            error = fmt.get(row, "last_error")
            rows.append((str(name), (str(name), fmt.status(state_name),
                                     fmt.integer(fmt.get(row, "restarts")),
                                     Text(fmt.clip(error, 26), style="red" if error else "dim"))))
        table = self.query_one("#services")
        fill(table, rows)
        table.border_subtitle = f"{len(rows)} services · {restarts} restarts · {failed} failed"

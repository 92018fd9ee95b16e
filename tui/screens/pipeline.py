"""Data pipeline: per-source lag, missing candles and cache hit rate, backfill progress per
symbol, the discovery timeline (listed/delisted), feature drift per symbol (the aggregate KL,
a sparkline of its history, the 3σ line, the verdict, and the seasonal volatility ratio with
its regime) and an overall health verdict."""

from __future__ import annotations

from typing import Any, Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal

from textual.widgets import Static

from appliance.drift_view import sparkline
from tui.client import MissionState
from tui.screens.base import MissionScreen
from tui.widgets import fmt
from tui.widgets.table import fill, make_table

EVENT_STYLES = {"listed": "green", "crossed_bar": "green", "delisted": "red",
                "dropped_below_bar": "yellow"}
VERDICT_STYLES = {"drift": "bold red", "ok": "green", "warming": "dim"}
REGIME_STYLES = {"high": "bold yellow", "low": "cyan", "normal": ""}


def health(state: MissionState) -> tuple[str, str]:
    """(verdict, style): DOWN without a heartbeat, DEGRADED when a source is unhealthy."""
    if not state.running:
        return "DOWN — appliance not running", "bold white on red"
    unhealthy = [n for n, row in state.sources.items() if fmt.get(row, "healthy") is False]
    if unhealthy:
        return f"DEGRADED — {', '.join(sorted(map(str, unhealthy)))}", "bold black on yellow"
    if not state.sources:
        return "UNKNOWN — no source reported yet", "bold"
    return "HEALTHY", "bold white on green"


def vol_cell(s: Mapping[str, Any]) -> Text:
    """The seasonal volatility ratio and, when it is not normal, its regime."""
    ratio = fmt.as_float(s.get("vol_ratio"))
    regime = fmt.text(s.get("vol_regime"))
    if ratio is None:
        return Text(fmt.DASH)
    label = f"{ratio:.2f}" + ("" if regime in ("normal", fmt.DASH) else f" {regime}")
    return Text(label, style=REGIME_STYLES.get(regime, ""))


class PipelineScreen(MissionScreen):
    MODE = "pipeline"

    def compose_body(self) -> ComposeResult:
        yield Static(id="pipeline-health", classes="summary")
        with Horizontal(classes="tables"):
            yield make_table(("Source", "Lag", "Missing", "Cache hit", "Health"), id="pipe-sources")
            yield make_table(("Symbol", "Backfill", "Missing"), id="backfill")
        with Horizontal(classes="tables"):
            yield make_table(("Time (UTC)", "Symbol", "Event"), id="discovery")
            yield make_table(("Symbol", "Drift", "History", "3σ line", "Verdict", "Vol ×"),
                             id="drift")

    def on_mount(self) -> None:
        self.query_one("#pipe-sources").border_title = "Sources"
        self.query_one("#backfill").border_title = "Backfill"
        self.query_one("#discovery").border_title = "Discovery timeline"
        self.query_one("#drift").border_title = "Feature drift (KL vs training)"
        super().on_mount()

    def render_state(self, state: MissionState, changed: frozenset[str]) -> None:
        if changed & {"status", "pipeline", "heartbeat"}:
            self._render_health(state)
        if "status" in changed:
            fill(self.query_one("#pipe-sources"), ((str(name), (
                str(name), fmt.seconds(fmt.get(row, "lag_s")), fmt.integer(fmt.get(row, "missing")),
                fmt.percent(fmt.get(row, "cache_hit_rate")), fmt.healthy(fmt.get(row, "healthy"))))
                for name, row in sorted(state.sources.items())))
        if "pipeline" in changed:
            self._render_pipeline(state.pipeline)
        if "drift" in changed:
            self._render_drift(state.drift)

    def _render_drift(self, drift: Mapping[str, Any]) -> None:
        symbols = fmt.get(drift, "symbols")
        symbols = symbols if isinstance(symbols, Mapping) else {}
        table = self.query_one("#drift")
        rows = []
        for sym, s in sorted(symbols.items(), key=lambda kv: str(kv[0])):
            if not isinstance(s, Mapping):
                continue
            history = [fmt.as_float(p[1]) for p in s.get("history") or []
                       if isinstance(p, (list, tuple)) and len(p) == 2]
            line = fmt.as_float(s.get("line"))
            verdict = fmt.text(s.get("verdict"))
            rows.append((str(sym), (str(sym), fmt.num(s.get("kl"), 3),
                                    sparkline([h for h in history if h is not None], line, 16),
                                    fmt.num(line, 3),
                                    Text(verdict, style=VERDICT_STYLES.get(verdict, "")),
                                    vol_cell(s))))
        fill(table, rows)
        drifted = sum(1 for s in symbols.values()
                      if isinstance(s, Mapping) and s.get("verdict") == "drift")
        table.border_subtitle = f"{drifted}/{len(symbols)} drifted" if symbols else "no figures yet"

    def _render_health(self, state: MissionState) -> None:
        verdict, style = health(state)
        line = Text(f" {verdict} ", style=style)
        missing = fmt.get(state.pipeline, "missing")
        total = sum(int(fmt.as_float(v) or 0) for v in missing.values()) \
            if isinstance(missing, Mapping) else None
        line.append(f"   missing candles {fmt.integer(total)}"
                    f" · cache hit rate {fmt.percent(fmt.get(state.pipeline, 'cache_hit_rate'))}")
        self.query_one("#pipeline-health", Static).update(line)

    def _render_pipeline(self, pipeline: Mapping[str, Any]) -> None:
        backfill = fmt.get(pipeline, "backfill")
        missing = fmt.get(pipeline, "missing")
        backfill = backfill if isinstance(backfill, Mapping) else {}
        missing = missing if isinstance(missing, Mapping) else {}
        table = self.query_one("#backfill")
        fill(table, ((str(sym), (str(sym), fmt.bar(backfill.get(sym), 20),
                                 fmt.integer(missing.get(sym))))
                     for sym in sorted(set(backfill) | set(missing), key=str)))
        done = sum(1 for v in backfill.values() if (fmt.as_float(v) or 0) >= 100)
        table.border_subtitle = f"{done}/{len(backfill)} complete"
        events = fmt.get(pipeline, "discovery")
        fill(self.query_one("#discovery"), ((str(i), (
            fmt.timestamp(e.get("ts")), fmt.text(e.get("symbol")),
            Text(fmt.text(e.get("event")), style=EVENT_STYLES.get(str(e.get("event")), ""))))
            for i, e in enumerate(events if isinstance(events, list) else [])
            if isinstance(e, Mapping)))

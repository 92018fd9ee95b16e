"""Incidents: crashes, restarts, failures, chaos experiments with their MTTR, the early
retrains the drift rule queued, and the history of the kill switch (and deploy freeze) from
the operator audit journal."""

from __future__ import annotations

from typing import Any, Mapping

from rich.text import Text
from textual.app import ComposeResult

from textual.widgets import Static

from tui.client import MissionState
from tui.screens.base import MissionScreen
from tui.widgets import fmt
from tui.widgets.table import fill, make_table

KIND_STYLES = {"crash": "bold red", "failed": "bold red", "restart": "yellow", "chaos": "magenta",
               "kill_switch": "bold red"}


def summary(incidents: tuple[Mapping[str, Any], ...]) -> str:
    counts: dict[str, int] = {}
    for item in incidents:
        counts[str(item.get("kind"))] = counts.get(str(item.get("kind")), 0) + 1
    mttrs = [v for v in (fmt.as_float(i.get("mttr_s")) for i in incidents
                         if i.get("kind") == "chaos") if v is not None]
    chaos = (f"chaos {counts.get('chaos', 0)} (MTTR mean {fmt.seconds(sum(mttrs) / len(mttrs))},"
             f" max {fmt.seconds(max(mttrs))})" if mttrs else f"chaos {counts.get('chaos', 0)}")
    return (f"crashes {counts.get('crash', 0)} · restarts {counts.get('restart', 0)} · "
            f"failed {counts.get('failed', 0)} · {chaos}")


class IncidentsScreen(MissionScreen):
    MODE = "incidents"

    def compose_body(self) -> ComposeResult:
        yield Static(id="incidents-summary", classes="summary")
        yield make_table(("Time (UTC)", "Service", "Kind", "Message", "MTTR"), id="incidents")
        yield make_table(("Time (UTC)", "Symbol", "Group", "Drift / line", "Moved most", "Run"),
                         id="drift-retrains")
        yield make_table(("Time (UTC)", "Actor", "Action", "Reason", "Source"), id="switch-history")

    def on_mount(self) -> None:
        self.query_one("#incidents").border_title = "Crashes, restarts, chaos"
        self.query_one("#drift-retrains").border_title = "Drift retrains"
        self.query_one("#switch-history").border_title = "Kill switch history"
        super().on_mount()

    def render_state(self, state: MissionState, changed: frozenset[str]) -> None:
        if "incidents" in changed:
            self.query_one("#incidents-summary", Static).update(summary(state.incidents))
            fill(self.query_one("#incidents"), ((str(i), (
                fmt.timestamp(item.get("ts")), fmt.text(item.get("service")),
                Text(fmt.text(item.get("kind")), style=KIND_STYLES.get(str(item.get("kind")), "")),
                fmt.clip(item.get("message"), 60), fmt.seconds(item.get("mttr_s"))))
                for i, item in enumerate(state.incidents)))
        if "drift" in changed:
            retrains = fmt.get(state.drift, "retrains")
            fill(self.query_one("#drift-retrains"), ((str(i), (
                fmt.timestamp(r.get("ts")), fmt.text(r.get("symbol")), fmt.text(r.get("group")),
                f"{fmt.num(r.get('kl'), 3)} / {fmt.num(r.get('line'), 3)}",
                fmt.clip(", ".join(map(str, r.get("features") or [])), 40),
                fmt.text(r.get("run_id") or "(retraining off)")))
                for i, r in enumerate(retrains if isinstance(retrains, list) else [])
                if isinstance(r, Mapping)))
        if "history" in changed:
            fill(self.query_one("#switch-history"), ((str(fmt.get(e, "seq")), (
                fmt.timestamp(e.get("ts")), fmt.text(e.get("actor")),
                Text(fmt.text(e.get("action")),
                     style="bold red" if str(e.get("action")).endswith("=on") else "green"),
                fmt.text(e.get("reason")), fmt.text(e.get("source"))))
                for e in state.switch_history))

"""Models: the prod vs shadow leaderboard, with promote/demote/rollback behind a confirmation.

Shadow and prod rows show their current book's own figures (Sharpe, P&L, trades — entries and
flips — and fills since the mode period began); candidates show their validation Sharpe.
Models an AutoML study found (tagged ``autogen``) say ``automl`` under Origin, distilled students
``distilled``; the line under the table names the selected model's parent (a student's 1h
teacher), so provenance is a chain the operator can follow.
``v`` opens the selected model's report (:mod:`appliance.report`), the text of
``methtrader report``."""

from __future__ import annotations

from typing import Any, Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from tui.client import MissionState
from tui.dialogs.report import ReportDialog
from tui.screens.base import MissionScreen
from tui.widgets import fmt
from tui.widgets.table import fill, make_table, selected_key

MODE_ORDER = {"prod": 0, "shadow": 1, "candidate": 2, "retired": 3}
COLUMNS = ("Model", "Group", "Kind", "Mode", "Since", "Sharpe", "P&L", "Days in shadow",
           "Trades", "Fills", "Parity", "Pinned", "Origin")


def leaderboard(models: tuple[Mapping[str, Any], ...]) -> list[Mapping[str, Any]]:
    """Prod first, then shadow, then candidates; best Sharpe first within each; no archived."""
    live = [m for m in models if m.get("mode") in MODE_ORDER]

    def rank(model: Mapping[str, Any]) -> tuple[int, bool, float]:
        sharpe = fmt.as_float(model.get("sharpe"))
        return MODE_ORDER[str(model["mode"])], sharpe is None, -(sharpe or 0.0)

    return sorted(live, key=rank)


def origin(model: Mapping[str, Any]) -> Text | str:
    if model.get("parent_run_id"):
        return Text("distilled", style="yellow")
    return Text("automl", style="magenta") if model.get("autogen") else ""


def parent_line(model: Mapping[str, Any] | None, models: tuple[Mapping[str, Any], ...]) -> str:
    """The selected model's provenance: its parent (teacher) model, or that it has none."""
    if model is None:
        return "Parent: no model selected"
    name = fmt.text(model.get("model_id"))
    parent_run = model.get("parent_run_id")
    if not parent_run:
        return f"Parent of {name}: none (trained from the data alone)"
    parent_id = model.get("parent_model_id")
    parent = next((m for m in models if m.get("model_id") == parent_id), None)
    about = ("not in the registry" if parent is None else
             f"{fmt.kind(parent.get('kind'))} {fmt.text(parent.get('timeframe'))}, "
             f"{fmt.text(parent.get('mode'))}")
    return (f"Parent of {name}: {fmt.text(parent_id)} (teacher run {parent_run}; {about})")


class ModelsScreen(MissionScreen):
    MODE = "models"
    BINDINGS = [Binding("p", "promote", "Promote"), Binding("d", "demote", "Demote"),
                Binding("b", "rollback", "Rollback"), Binding("v", "report", "Report")]

    def compose_body(self) -> ComposeResult:
        yield Static(id="models-summary", classes="summary")
        yield make_table(COLUMNS, id="leaderboard", cursor=True)
        yield Static(id="model-parent")

    def render_state(self, state: MissionState, changed: frozenset[str]) -> None:
        if not changed & {"models", "status"}:
            return
        counts = fmt.get(state.status, "models")
        self.query_one("#models-summary", Static).update(
            " · ".join(f"{mode} {fmt.integer(fmt.get(counts, mode))}"
                       for mode in ("prod", "shadow", "candidate", "retired", "rejected", "archived"))
            + "   (p promote · d demote the selected model · b roll its group back · "
              "v its report)")
        fill(self.query_one("#leaderboard", DataTable), ((str(m.get("model_id")), (
            fmt.text(m.get("model_id")), fmt.text(m.get("group")), fmt.kind(m.get("kind")),
            Text(str(m["mode"]), style="bold green" if m["mode"] == "prod" else "cyan"),
            fmt.timestamp(m.get("since"), "%m-%d %H:%M"), fmt.num(m.get("sharpe")),
            fmt.pnl(m.get("pnl")), fmt.num(m.get("days_in_shadow"), 1),
            fmt.integer(m.get("trades")), fmt.integer(m.get("fills")), fmt.num(m.get("parity"), 4),
            "yes" if m.get("pinned") else "", origin(m)))
            for m in leaderboard(state.models)))
        self._show_parent()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_parent()

    def _show_parent(self) -> None:
        self.query_one("#model-parent", Static).update(
            parent_line(self.selected_model(), self.mission.state.models))

    def selected_model(self) -> Mapping[str, Any] | None:
        key = selected_key(self.query_one("#leaderboard", DataTable))
        return next((m for m in self.mission.state.models if str(m.get("model_id")) == key), None)

    def action_report(self) -> None:
        model = self.selected_model()
        if model is None:
            self.notify("Select a model first.", severity="warning")
            return
        model_id = str(model.get("model_id"))
        state_dir, deadline_s = self.mission.state_dir, self.mission.command_deadline_s

        def load() -> str:
            from appliance.report import fetch_report, render_text

            return render_text(fetch_report(state_dir, model_id, deadline_s=deadline_s))

        self.app.push_screen(ReportDialog(model_id, load))

    def action_promote(self) -> None:
        self._ask("promote", ("shadow", "candidate"))

    def action_demote(self) -> None:
        self._ask("demote", ("prod",))

    def action_rollback(self) -> None:
        model = self.selected_model()
        if model is None:
            self.notify("Select a model of the group to roll back first.", severity="warning")
            return
        group = fmt.text(model.get("group"))
        retired = [m for m in self.mission.state.models
                   if m.get("group") == model.get("group") and m.get("mode") == "retired"]
        if not retired:
            self.notify(f"group {group} has no retired model to roll back to.",
                        severity="warning")
            return
        back = max(retired, key=lambda m: fmt.as_float(m.get("since")) or 0.0)
        self.mission.confirm(
            "rollback", f"Roll group {group} back?",
            f"{fmt.text(back.get('model_id'))} becomes prod again; the current prod model of "
            f"{group} is retired. The appliance runs the command and records it.", group=group)

    def _ask(self, action: str, modes: tuple[str, ...]) -> None:
        model = self.selected_model()
        if model is None:
            self.notify("Select a model first.", severity="warning")
            return
        if model.get("mode") not in modes:
            self.notify(f"{action} applies to {' or '.join(modes)} models, "
                        f"not {fmt.text(model.get('mode'))}.", severity="warning")
            return
        model_id = str(model.get("model_id"))
        self.mission.confirm(
            action, f"{action.capitalize()} model {model_id}?",
            f"{model_id}: {fmt.text(model.get('group'))} {fmt.kind(model.get('kind'))}, "
            f"{fmt.text(model.get('mode'))}, Sharpe {fmt.num(model.get('sharpe'))}, "
            f"P&L {fmt.signed(model.get('pnl'))}. The appliance runs the command and records it.",
            model_id=model_id)

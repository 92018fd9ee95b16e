"""The key reference (``?``)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

HELP = """\
[b]Screens[/b]
  1 Dashboard   2 Trade feed   3 Training   4 Data pipeline   5 Models   6 Incidents

[b]Safety (each asks for confirmation; y / Enter on Confirm confirms, n / Esc cancels)[/b]
  k   kill switch: maintenance_mode ON (no new orders); works while the appliance is down
  K   kill and flatten: maintenance_mode ON, then ask the appliance to close all positions
  r   resume: maintenance_mode OFF

[b]Models screen[/b]
  p   promote the selected shadow/candidate model    d   demote the selected prod model
  b   roll the selected model's group back to its previous prod model
  v   the selected model's report: folds, costs, validation vs shadow vs prod

[b]Other[/b]
  ?   this help    q   quit (the appliance keeps running)

Every action is written to the audit journal with your user name.
Over SSH use `ssh -t`; for colours set COLORTERM=truecolor."""


class HelpDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("question_mark", "close", "Close"),
                Binding("q", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(HELP, id="help-text")
            yield Static("Esc, ? or q closes", id="dialog-hint")

    def action_close(self) -> None:
        self.dismiss(None)

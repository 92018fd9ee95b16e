"""A yes/no dialog for every action that changes the appliance (kill, flatten, resume,
promote, demote): ``y`` or Enter on Confirm confirms, ``n`` or Escape cancels."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmDialog(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Confirm"),
                Binding("n", "answer(False)", "Cancel"),
                Binding("escape", "answer(False)", "Cancel")]

    def __init__(self, title: str, body: str, *, focus_confirm: bool = False) -> None:
        """``focus_confirm`` puts the focus on Confirm so Enter confirms; otherwise Enter
        lands on Cancel (for actions that resume or change trading)."""
        super().__init__(classes="dialog")
        self._title = title
        self._body = body
        self._focus_confirm = focus_confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog-box"):
            yield Static(self._title, id="dialog-title")
            yield Static(self._body, id="dialog-body")
            yield Static("y / Enter on Confirm: confirm    n / Esc: cancel", id="dialog-hint")
            with Horizontal(id="dialog-buttons"):
                yield Button("Confirm (y)", variant="error", id="confirm")
                yield Button("Cancel (n)", variant="primary", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#confirm" if self._focus_confirm else "#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")

    def action_answer(self, confirmed: bool) -> None:
        self.dismiss(confirmed)

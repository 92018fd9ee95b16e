"""Dashboard cards: a big number (Textual's Digits) and a coloured switch panel."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Digits, Static

from tui.widgets import fmt


class NumberCard(Vertical):
    """A bordered card whose value is drawn in 3-row digits; "—" when the value is missing."""

    def __init__(self, label: str, *, id: str) -> None:
        super().__init__(id=id, classes="card")
        self.border_title = label

    def compose(self) -> ComposeResult:
        yield Digits("", classes="value")
        yield Static(fmt.DASH, classes="missing")

    def show(self, value: str, tone: str = "") -> None:
        """``tone`` is "up", "down" or "" (colours the digits)."""
        missing = value == fmt.DASH
        self.query_one(Digits).display = not missing
        self.query_one(".missing", Static).display = missing
        if not missing:
            self.query_one(Digits).update(value)
        for name in ("up", "down"):
            self.set_class(tone == name, name)


class TextCard(Vertical):
    """A bordered card with bold text (used for model counts and the switches)."""

    def __init__(self, label: str, *, id: str) -> None:
        super().__init__(id=id, classes="card")
        self.border_title = label

    def compose(self) -> ComposeResult:
        yield Static("", classes="value")

    def show(self, value: str, *, tone: str = "", subtitle: str = "") -> None:
        """``tone``: "on" (red), "warn" (yellow), "off" (green) or "" (plain)."""
        self.query_one(".value", Static).update(value)
        self.border_subtitle = subtitle
        for name in ("on", "warn", "off"):
            self.set_class(tone == name, name)

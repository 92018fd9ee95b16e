"""The frame shared by the six screens: status bar, banner, body, footer of key bindings."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer

from tui.client import SECTIONS, MissionState
from tui.widgets.header import Banner, StatusBar

if TYPE_CHECKING:
    from tui.app import MissionControl


class MissionScreen(Screen):
    """A screen that renders MissionStates. Subclasses set MODE and implement
    ``compose_body`` and ``render_state``; only changed sections need re-rendering."""

    MODE: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__(id=f"screen-{self.MODE}")
        self.shown_version = -1

    @property
    def mission(self) -> "MissionControl":
        return cast("MissionControl", self.app)

    def compose(self) -> ComposeResult:
        yield StatusBar(self.MODE)
        yield Banner(str(self.mission.client.bus_path))
        yield from self.compose_body()
        yield Footer(compact=True)

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets, between the status bar and the footer."""
        raise TypeError(f"{type(self).__name__} must define compose_body()")

    def render_state(self, state: MissionState, changed: frozenset[str]) -> None:
        """Show ``state``; ``changed`` names the parts that changed since the last call."""
        raise TypeError(f"{type(self).__name__} must define render_state()")

    def on_mount(self) -> None:
        self.show(self.mission.state)

    def on_screen_resume(self) -> None:
        if self.shown_version != self.mission.state.version:
            self.show(self.mission.state)

    def show(self, state: MissionState, changed: frozenset[str] | None = None) -> None:
        """Render ``state``; ``changed=None`` re-renders everything (first show, or after
        updates that arrived while another screen was active)."""
        if changed is None or state.version != self.shown_version + 1:
            changed = SECTIONS
        try:
            if changed & {"heartbeat", "switches", "error"}:
                self.query_one(StatusBar).show(state)
                self.query_one(Banner).show(state)
            self.render_state(state, changed)
        except NoMatches:
            # An update can land while the screen's widgets are being removed (the app is
            # closing) or not yet mounted; the next show then re-renders everything.
            self.shown_version = -1
            return
        self.shown_version = state.version

"""A model's report (``v`` on the Models screen): the same text as ``methtrader report``.

The report is read off the UI thread: a thread worker calls the loader (which asks ``run``
through the bus while it holds DuckDB, or reads the file read-only while it is down; see
:func:`appliance.report.fetch_report`) and posts a typed :class:`ReportLoaded` message back,
so the screen never waits on disk or on the appliance.
"""

from __future__ import annotations

from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Static


class ReportLoaded(Message):
    """The report's text, or the one-line reason there is none."""

    def __init__(self, model_id: str, text: str | None, error: str | None = None) -> None:
        super().__init__()
        self.model_id = model_id
        self.text = text
        self.error = error


class ReportDialog(ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("q", "close", "Close"),
                Binding("v", "close", "Close")]

    def __init__(self, model_id: str, load: Callable[[], str]) -> None:
        """``load`` returns the report's text; it runs in a worker thread."""
        super().__init__(classes="dialog")
        self.model_id = model_id
        self._load = load
        self.loaded: ReportLoaded | None = None

    def compose(self) -> ComposeResult:
        with Vertical(id="report-box"):
            yield Static(f"Report of {self.model_id}", id="report-title")
            with VerticalScroll(id="report-scroll"):
                yield Static(f"reading the report of {self.model_id} …", id="report-text")
            yield Static("Esc, q or v closes · ↑↓ scroll · plots: `methtrader report "
                         f"{self.model_id} --html FILE`", id="dialog-hint")

    def on_mount(self) -> None:
        self.run_worker(self._read, thread=True, name="report", exit_on_error=False)

    def _read(self) -> None:
        try:
            message = ReportLoaded(self.model_id, self._load())
        except Exception as exc:  # shown in the dialog; the TUI keeps running
            message = ReportLoaded(self.model_id, None, str(exc).splitlines()[0] if str(exc)
                                   else type(exc).__name__)
        self.post_message(message)

    def on_report_loaded(self, message: ReportLoaded) -> None:
        self.loaded = message
        body = self.query_one("#report-text", Static)
        if message.text is not None:
            body.update(Text(message.text))
        else:
            body.update(Text(f"no report: {message.error}", style="bold red"))

    def action_close(self) -> None:
        self.dismiss(None)

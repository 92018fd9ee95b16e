"""methtrader mission control: a Textual app over the bus, its own process (Textual needs
asyncio, the appliance runs trio). It never opens the DuckDB file while the appliance runs; a
model's report (``v`` on the Models screen) is asked of ``run`` through the bus then, and read
read-only from the file only while it is down (:func:`appliance.report.fetch_report`).

Layout: six screens as Textual modes (keys 1-6), each with the status bar, the
"APPLIANCE NOT RUNNING" banner and a footer of key bindings. One thread (``BusClient``) reads
the bus and posts ``BusUpdate`` messages; the app keeps the last ``MissionState`` and hands it
to the visible screen, which re-renders only the sections that changed.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Sequence

from textual.app import App
from textual.binding import Binding
from textual.screen import ModalScreen

from appliance.paths import StatePaths
from tui.client import POLL_INTERVAL_S, ActionDone, BusClient, BusUpdate, MissionState
from tui.dialogs.confirm import ConfirmDialog
from tui.dialogs.help import HelpDialog
from tui.screens.base import MissionScreen
from tui.screens.dashboard import DashboardScreen
from tui.screens.incidents import IncidentsScreen
from tui.screens.models import ModelsScreen
from tui.screens.pipeline import PipelineScreen
from tui.screens.trades import TradeFeedScreen
from tui.screens.training import TrainingScreen

# Actions a key may not start while a dialog is open (the dialog answers first).
BLOCKED_UNDER_DIALOG = frozenset({"show", "kill", "kill_flatten", "resume", "help", "quit"})
REPORT_DEADLINE_S = 60.0  # how long a report may take from a running appliance


class MissionControl(App[int]):
    CSS_PATH = "methtrader.tcss"
    TITLE = "methtrader mission control"
    ENABLE_COMMAND_PALETTE = False
    MODES = {"dashboard": DashboardScreen, "trades": TradeFeedScreen,
             "training": TrainingScreen, "pipeline": PipelineScreen,
             "models": ModelsScreen, "incidents": IncidentsScreen}
    DEFAULT_MODE = "dashboard"
    BINDINGS = [
        Binding("1", "show('dashboard')", "Dash"),
        Binding("2", "show('trades')", "Trades"),
        Binding("3", "show('training')", "Train"),
        Binding("4", "show('pipeline')", "Data"),
        Binding("5", "show('models')", "Models"),
        Binding("6", "show('incidents')", "Incid"),
        Binding("k", "kill", "Kill", priority=True),
        Binding("K", "kill_flatten", "Kill+flat", priority=True),
        Binding("r", "resume", "Resume", priority=True),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, state_dir: Path, *, now: Callable[[], float] = time.time,
                 poll_interval: float = POLL_INTERVAL_S, actor: str | None = None,
                 events_maxlen: int = 10_000,
                 command_deadline_s: float = REPORT_DEADLINE_S) -> None:
        """``now`` (wall clock, epoch seconds) decides heartbeat staleness; tests inject it.
        ``command_deadline_s`` bounds a command the TUI waits for (a model's report)."""
        super().__init__()
        self.state_dir = Path(state_dir)
        self.command_deadline_s = command_deadline_s
        self.state = MissionState()
        self.actions_done: list[ActionDone] = []
        self.client = BusClient(StatePaths(self.state_dir).bus, self.post_message, now=now,
                                interval=poll_interval, actor=actor, events_maxlen=events_maxlen)

    def on_mount(self) -> None:
        self.run_worker(self.client.run, thread=True, name="bus-client", exit_on_error=False)

    def on_unmount(self) -> None:
        self.client.stop()

    def on_bus_update(self, message: BusUpdate) -> None:
        self.state = message.state
        for screen in self.screen_stack:
            if isinstance(screen, MissionScreen) and screen.is_mounted:
                screen.show(message.state, message.state.changed)

    def on_action_done(self, message: ActionDone) -> None:
        self.actions_done.append(message)
        self.notify(message.detail, severity="information" if message.ok else "error",
                    title=message.action)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action in BLOCKED_UNDER_DIALOG and isinstance(self.screen, ModalScreen))

    def action_show(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_help(self) -> None:
        self.push_screen(HelpDialog())

    def action_quit(self) -> None:
        self.exit(0)

    def action_kill(self) -> None:
        self.confirm("kill", "KILL SWITCH",
                     "Set maintenance_mode ON? The appliance stops opening positions; open "
                     "positions stay. Works through the bus even while the appliance is down. "
                     f"Recorded as {self.client.actor}.", focus_confirm=True)

    def action_kill_flatten(self) -> None:
        self.confirm("kill_flatten", "KILL AND FLATTEN",
                     "Set maintenance_mode ON, then ask the appliance to close every open "
                     "position (the flatten command runs when the appliance is up). "
                     f"Recorded as {self.client.actor}.")

    def action_resume(self) -> None:
        self.confirm("resume", "RESUME TRADING",
                     "Set maintenance_mode OFF? The appliance may open positions again. "
                     f"Recorded as {self.client.actor}.")

    def confirm(self, action: str, title: str, body: str, *, model_id: str | None = None,
                group: str | None = None, focus_confirm: bool = False) -> None:
        """Ask first; on "yes" the bus thread runs the action and reports an ActionDone."""
        def answered(confirmed: bool | None) -> None:
            if confirmed:
                self.client.request(action, model_id, group)
            else:
                self.notify(f"{title.lower()}: cancelled", severity="warning")

        self.push_screen(ConfirmDialog(title, body, focus_confirm=focus_confirm), answered)


def run_tui(state_dir: Path, *, events_maxlen: int = 10_000,
            command_deadline_s: float = REPORT_DEADLINE_S) -> int:
    """Run mission control in this terminal until the operator quits; the exit code."""
    app = MissionControl(Path(state_dir), events_maxlen=events_maxlen,
                         command_deadline_s=command_deadline_s)
    result = app.run()
    return app.return_code if app.return_code is not None else (result or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tui.app [--state-dir DIR]``: the same as ``methtrader tui``."""
    from appliance.config import DEFAULT_STATE_DIR

    parser = argparse.ArgumentParser(prog="methtrader tui", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("METHTRADER_STATE_DIR", DEFAULT_STATE_DIR)),
                        help="the appliance's state directory (the bus is <state-dir>/bus)")
    args = parser.parse_args(argv)
    return run_tui(args.state_dir.expanduser())


if __name__ == "__main__":
    raise SystemExit(main())

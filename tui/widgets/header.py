"""The two lines on top of every screen (screen tabs, switches, appliance state) and the
"APPLIANCE NOT RUNNING" banner."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from appliance.status import health as health_of
from tui.client import MissionState
from tui.widgets import fmt

SCREENS = (("1", "dashboard", "Dashboard"), ("2", "trades", "Trades"),
           ("3", "training", "Training"), ("4", "pipeline", "Pipeline"),
           ("5", "models", "Models"), ("6", "incidents", "Incidents"))


class StatusBar(Static):
    """Screen tabs with the current one highlighted, then the appliance and switch states."""

    def __init__(self, current: str) -> None:
        super().__init__(id="statusbar")
        self._current = current

    def show(self, state: MissionState) -> None:
        line = Text()
        for key, mode, label in SCREENS:
            style = "bold reverse" if mode == self._current else "dim"
            line.append(f" {key} {label} ", style=style)
            line.append(" ")
        line.append("\n")
        hb = state.heartbeat
        if state.running:
            services = hb.get("services") if isinstance(hb.get("services"), dict) else {}
            health = health_of({k: v for k, v in services.items() if isinstance(v, dict)})
            if health == "OK":
                line.append("● RUNNING", style="bold green")
            else:
                line.append(f"● {health}", style="bold red" if health == "FAILED"
                            else "bold yellow")  # running, but a service is not well
        else:
            line.append("○ NOT RUNNING", style="bold red")
        line.append(f"  pid {fmt.text(hb.get('pid'))} · {fmt.text(hb.get('exchange'))}"
                    f" ×{fmt.num(hb.get('speed'), 0)}"
                    f" · market {fmt.timestamp(hb.get('market_time'), '%Y-%m-%d %H:%M')} UTC   ")
        if state.maintenance_mode:
            line.append(" MAINTENANCE ON ", style="bold white on red")
        else:
            line.append("maintenance off", style="green")
        line.append(" · ")
        if state.deploys_frozen:
            line.append(" DEPLOYS FROZEN ", style="bold black on yellow")
        else:
            line.append("deploys live", style="green")
        self.update(line)


class Banner(Static):
    """Shown on every screen while the heartbeat is stale or the bus cannot be read."""

    def __init__(self, bus_path: str) -> None:
        super().__init__(id="banner")
        self._bus_path = bus_path

    def show(self, state: MissionState) -> None:
        parts = []
        if not state.running:
            since = (f"no heartbeat on the bus at {self._bus_path}" if state.stale_for is None
                     else f"last heartbeat {state.stale_for} s ago")
            parts.append(f"APPLIANCE NOT RUNNING — {since}. The kill switch (k) still works.")
        if state.error:
            parts.append(f"BUS ERROR: {state.error}")
        self.update("\n".join(parts))
        self.display = bool(parts)

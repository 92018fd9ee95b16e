"""Reading what the screens show, as plain strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App
from textual.widgets import DataTable, Static

from appliance.bus import Bus
from tui.widgets.blotter import Blotter


def rows(app: App, selector: str) -> list[list[str]]:
    """The cells of a DataTable or a Blotter, as plain strings."""
    table = app.screen.query_one(selector)
    if isinstance(table, Blotter):
        return [[cell.plain for cell in table.cells(i)] for i in range(table.row_count)]
    assert isinstance(table, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def cell(app: App, selector: str, row: int, column: int) -> Any:
    table = app.screen.query_one(selector)
    if isinstance(table, Blotter):
        return table.cells(row)[column]
    assert isinstance(table, DataTable)
    return table.get_row_at(row)[column]


def text(app: App, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


def publish(state_dir: Path, kind: str, data: dict[str, Any],
            market_ts: float | None = None) -> None:
    """Publish from another Bus instance, as the appliance would."""
    with Bus(state_dir / "bus") as bus:
        bus.publish(kind, data, service="test", market_ts=market_ts)

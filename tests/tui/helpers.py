"""Reading what the screens show, as plain strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual.app import App
from textual.widgets import DataTable, Static

from appliance.bus import Bus


def rows(app: App, selector: str) -> list[list[str]]:
    table = app.screen.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


def cell(app: App, selector: str, row: int, column: int) -> Any:
    return app.screen.query_one(selector, DataTable).get_row_at(row)[column]


def text(app: App, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


def publish(state_dir: Path, kind: str, data: dict[str, Any], market_ts: float | None = None) -> None:
    """Publish from another Bus instance, as the appliance would."""
    with Bus(state_dir / "bus") as bus:
        bus.publish(kind, data, service="test", market_ts=market_ts)

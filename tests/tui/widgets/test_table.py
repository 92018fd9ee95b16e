"""Table helpers: a refill keeps the cursor's row and sizes the columns for what it shows."""

from __future__ import annotations

import asyncio

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from tui.widgets.table import fill, make_table, selected_key

pytestmark = pytest.mark.timeout(60)


class _OneTable(App):
    def __init__(self, *columns: str) -> None:
        super().__init__()
        self.columns = columns

    def compose(self) -> ComposeResult:
        yield make_table(self.columns, id="t", cursor=True)


def test_columns_fit_their_cells_before_the_table_goes_idle() -> None:
    asyncio.run(_columns_fit())


async def _columns_fit() -> None:
    app = _OneTable("Source", "Health")
    async with app.run_test():
        table = app.query_one(DataTable)
        fill(table, [("rest", ("bybit-rest", Text("DEGRADED"))), ("ws", ("bybit-ws", "ok"))])
        # No await since the fill: the table has not gone idle, so only fill() sized them.
        widths = [column.get_render_width(table) for column in table.ordered_columns]
        padding = 2 * table.cell_padding
        assert widths == [len("bybit-rest") + padding, len("DEGRADED") + padding]


def test_refill_keeps_the_cursor_on_its_row_and_suffixes_duplicate_keys() -> None:
    asyncio.run(_refill())


async def _refill() -> None:
    app = _OneTable("Symbol")
    async with app.run_test() as pilot:
        table = app.query_one(DataTable)
        fill(table, [(s, (s,)) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")])
        await pilot.pause()
        table.move_cursor(row=2)
        fill(table, [(s, (s,)) for s in ("ADAUSDT", "SOLUSDT", "SOLUSDT", "BTCUSDT")])
        await pilot.pause()
        assert selected_key(table) == "SOLUSDT"
        assert [row.value for row in table.rows] == ["ADAUSDT", "SOLUSDT", "SOLUSDT#2",
                                                     "BTCUSDT"]

"""DataTable helpers: declare columns once, replace all rows while keeping the cursor."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist


def make_table(columns: Sequence[str], *, id: str, cursor: bool = False) -> DataTable:
    table: DataTable = DataTable(id=id, zebra_stripes=True,
                                 cursor_type="row" if cursor else "none")
    table.add_columns(*columns)
    return table


def fill(table: DataTable, rows: Iterable[tuple[str, Sequence[Any]]]) -> None:
    """Replace the rows (``(key, cells)`` pairs), keeping the cursor on the same key if it
    is still there. Duplicate keys from a malformed snapshot get a suffix instead of raising."""
    selected = selected_key(table)
    table.clear()
    seen: set[str] = set()
    for key, cells in rows:
        unique, n = key, 1
        while unique in seen:
            n += 1
            unique = f"{key}#{n}"
        seen.add(unique)
        table.add_row(*cells, key=unique)
        _widen(table, cells)
    if selected is not None and selected in seen:
        table.move_cursor(row=table.get_row_index(selected), animate=False)


def selected_key(table: DataTable) -> str | None:
    """The key of the row under the cursor, or None for an empty table."""
    if table.row_count == 0 or table.cursor_type != "row":
        return None
    try:
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except CellDoesNotExist:
        return None


def _widen(table: DataTable, cells: Sequence[Any]) -> None:
    """Size the auto-width columns for ``cells`` now. DataTable measures new rows only when
    it next goes idle; on a loaded machine a table refilled by every bus update showed its
    columns cut to the width of their labels ("bybit-" for "bybit-rest") for good."""
    for column, cell in zip(table.ordered_columns, cells):
        text = cell.plain if isinstance(cell, Text) else str(cell)
        width = max((cell_len(line) for line in text.splitlines()), default=0)
        column.content_width = max(column.content_width, width)


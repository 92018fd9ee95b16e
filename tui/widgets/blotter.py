"""A fast table for the trade feed, drawn with Textual's Line API.

At 100 events a second the 50-row blotter changes completely several times a second. A
DataTable renders each visible cell through Rich after every change (its caches are keyed by
an update counter), which cost about 11 % of a core on its own. Here a row is a few padded
strings joined into one Strip when the rows are set, and a frame only crops stored strips.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

Column = tuple[str, int, str]  # label, width in cells, "left" or "right"


@lru_cache(maxsize=64)
def _style(style: str) -> Style:
    return Style.parse(style) if style else Style()


def _fit(label: str, width: int, align: str, style: Style | None = None,
         pad: Style | None = None) -> list[Segment]:
    """The cell as segments; the padding is its own segment (SVG export collapses leading
    spaces inside a text segment)."""
    if len(label) > width:
        label = label[: width - 1] + "…"
    text = Segment(label, style)
    if align == "right":
        return [Segment(" " * (width - len(label)), pad), text, Segment("  ", pad)]
    return [text, Segment(" " * (width - len(label) + 2), pad)]


class Blotter(ScrollView, can_focus=True):
    """Fixed-width columns; a header line, then rows (first row on top)."""

    COMPONENT_CLASSES = {"blotter--header", "blotter--stripe"}
    DEFAULT_CSS = """
    Blotter { height: 1fr; }
    Blotter > .blotter--header { text-style: bold; background: $primary 20%; }
    Blotter > .blotter--stripe { background: $foreground 4%; }
    """

    def __init__(self, columns: Sequence[Column], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self._cells: list[tuple[Text, ...]] = []
        self._strips: list[Strip] = []
        self._header: Strip | None = None
        self._width = sum(width for _, width, _ in self.columns) + 2 * len(self.columns)

    @property
    def row_count(self) -> int:
        return len(self._cells)

    def cells(self, row: int) -> tuple[Text, ...]:
        return self._cells[row]

    def set_rows(self, rows: Sequence[Sequence[str | Text]]) -> None:
        self._cells = [tuple(c if isinstance(c, Text) else Text(str(c)) for c in row)
                       for row in rows]
        self._strips = [self._build(row, self.get_component_rich_style("blotter--stripe")
                                    if i % 2 else None)
                        for i, row in enumerate(self._cells)]
        self.virtual_size = Size(self._width, len(self._strips) + 1)
        self.refresh()

    def _build(self, cells: Sequence[Text], background: Style | None) -> Strip:
        segments = [Segment(" ", background)]
        for cell, (_, width, align) in zip(cells, self.columns):
            style = cell.style if isinstance(cell.style, Style) else _style(str(cell.style))
            segments += _fit(cell.plain, width, align, background + style if background else style,
                             background)
        return Strip(segments)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            if self._header is None:
                header = self.get_component_rich_style("blotter--header")
                segments = [Segment(" ")]
                for label, w, align in self.columns:
                    segments += _fit(label, w, align)
                self._header = Strip(segments).apply_style(header)
            strip = self._header
        else:
            index = y - 1 + scroll_y
            if index >= len(self._strips):
                return Strip.blank(width, base)
            strip = self._strips[index]
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)

    def on_resize(self) -> None:
        self._header = None

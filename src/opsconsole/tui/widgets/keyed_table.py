"""A DataTable that updates in place by row key, so refreshes keep the cursor, scroll and selection."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.cache import LRUCache
from textual.color import Color
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import RowKey

from opsconsole.tui import textual_compat


def same_cell(a: Any, b: Any) -> bool:
    """Text equality that also sees the style and alignment (Rich's __eq__ ignores them)."""
    if isinstance(a, Text) and isinstance(b, Text):
        return a.plain == b.plain and a.style == b.style and a.justify == b.justify and a.spans == b.spans
    return a == b


class KeyedTable(DataTable):
    """`sync(rows)` diffs the new rows against the shown ones: removes the gone, updates changed cells,
    adds the new, puts them in the given order, and keeps the cursor on the same key."""

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; }
    """

    def __init__(self, columns: Sequence[tuple[str, str] | tuple[str, str, int]], **kwargs: Any):
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", True)
        # each cell's text as Rich laid it out, by the cell object and width (textual_compat): kept
        # when the styles change (focus, theme), which render_body_cell lays over it each frame
        self._cell_text: LRUCache[tuple[int, int, int], tuple[Any, Any]] = LRUCache(4096)
        # the styles of this render_lines() call, by what asked (see render_lines)
        self._frame_styles: dict[Any, Any] | None = None
        super().__init__(**kwargs)
        self._column_spec = list(columns)

    def render_lines(self, crop: Region) -> list[Strip]:
        """DataTable asks for its own style, its background and a component style (header, even or
        odd row) once or twice for every line it draws, and each answer walks every ancestor's CSS
        (~0.1-0.3 ms here, a quarter of drawing a table, P8); no style changes while one frame's lines
        are drawn, so each is computed once per call."""
        self._frame_styles = {}
        try:
            return super().render_lines(crop)
        finally:
            self._frame_styles = None

    def _in_frame(self, key: Any, compute: Any) -> Any:
        frame = self._frame_styles
        if frame is None:
            return compute()
        if key not in frame:
            frame[key] = compute()
        return frame[key]

    @property
    def rich_style(self) -> Style:
        return self._in_frame("rich_style", lambda: DataTable.rich_style.fget(self))  # type: ignore[attr-defined]

    @property
    def background_colors(self) -> tuple[Color, Color]:
        return self._in_frame("background", lambda: DataTable.background_colors.fget(self))  # type: ignore[attr-defined]

    def get_component_styles(self, *names: str) -> Any:
        return self._in_frame(
            names, lambda: _FrameStyles(super(KeyedTable, self).get_component_styles(*names))
        )

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> Any:
        lines = textual_compat.render_body_cell(
            self, row_index, column_index, base_style, width, cursor, hover, self._cell_text
        )
        if lines is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        return lines

    def on_mount(self) -> None:
        self._add_columns()

    def set_columns(self, columns: Sequence[tuple[str, str] | tuple[str, str, int]]) -> None:
        """Replace the columns (and drop the rows: the next sync adds them with the new columns)."""
        self._column_spec = list(columns)
        self.clear(columns=True)
        self._add_columns()

    def _add_columns(self) -> None:
        """Columns with a width keep it (the layout does not jump as values change); others size to fit."""
        for key, label, *width in self._column_spec:
            self.add_column(label, key=key, width=width[0] if width else None)

    @property
    def cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def keys(self) -> list[str]:
        return [row.key.value for row in self.ordered_rows if row.key.value is not None]

    def sync(self, rows: Iterable[tuple[str, Sequence[Any]]], keep: str | None = None) -> None:
        """keep: the row key to put the cursor on (default: the one under it now)."""
        rows = list(rows)
        if not self.columns:  # called before mount: add the columns now
            self._add_columns()
        column_keys = [spec[0] for spec in self._column_spec]
        # Only auto-width columns need re-measuring: a fixed width never follows its content, and
        # DataTable re-measures the whole column for every updated cell that got narrower (500 rows
        # whose "next try" ticked down cost ~0.3 s on the UI thread per refresh).
        auto_width = {spec[0] for spec in self._column_spec if len(spec) < 3}
        keep = keep if keep is not None else self.cursor_key
        wanted = [key for key, _ in rows]
        wanted_set = set(wanted)
        with self.app.batch_update():
            for key in [k for k in self.keys() if k not in wanted_set]:
                self.remove_row(key)
            present = set(self.keys())
            for key, cells in rows:
                if key in present:
                    for column, value in zip(column_keys, cells, strict=False):
                        if not same_cell(self.get_cell(key, column), value):
                            self.update_cell(key, column, value, update_width=column in auto_width)
                else:
                    self.add_row(*cells, key=key)
            self._reorder(wanted)
            if keep is not None and keep in wanted_set:
                index = wanted.index(keep)
                if index != self.cursor_row:
                    self.move_cursor(row=index, animate=False)

    def _reorder(self, wanted: list[str]) -> None:
        """Put rows in the given key order (what DataTable.sort does, with an explicit order)."""
        if self.keys() == wanted:
            return
        by_value: dict[str, RowKey] = {k.value: k for k in self.rows if k.value is not None}
        textual_compat.reorder_rows(self, {by_value[k]: i for i, k in enumerate(wanted)})


class _FrameStyles:
    """A component's styles with its rich_style computed once (KeyedTable.render_lines)."""

    def __init__(self, styles: Any):
        self._styles = styles
        self.rich_style = styles.rich_style

    def __getattr__(self, name: str) -> Any:
        return getattr(self._styles, name)


_WITH_ENTER: dict[str, type[KeyedTable]] = {}


def keyed_table(
    columns: Sequence[tuple[str, str] | tuple[str, str, int]], enter: str | None = None, **kwargs: Any
) -> KeyedTable:
    """A KeyedTable whose Enter key shows in the footer as `enter` (what Enter does on that pane)."""
    if enter is None:
        return KeyedTable(columns, **kwargs)
    cls = _WITH_ENTER.get(enter)
    if cls is None:
        binding = Binding("enter", "select_cursor", enter, key_display="⏎")
        cls = type(f"KeyedTable{enter.title().replace(' ', '')}", (KeyedTable,), {"BINDINGS": [binding]})
        _WITH_ENTER[enter] = cls
    return cls(columns, **kwargs)

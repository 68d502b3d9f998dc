"""One list behaviour for every pane: `/` filters, `s` sorts by the next column, `S` reverses, a click
on a header sorts by it, `e`/`E` export the list as shown (CSV/JSON) and `y` copies the cursor row.

A pane describes its columns once (`Column`: width it needs, priority, whether it grows for text) and
hands the list rows as (key, record, cells): the record holds the values (what sorting, filtering,
export and copy use), the cells what the table shows. The list picks the columns that fit its width
(secondary ones drop out, highest priority number first), lets text columns grow to their content
while there is room, filters and sorts the rows, and keeps the cursor on its row (KeyedTable).

Filtering happens here, over the records' values, unless the pane filters in the database itself
(`server_filter`: Backlog, the customer search); the list then reports the text (`FilterChanged`) and
shows the rows it is given. Export and copy do not write anything themselves: the list posts
`ExportRequested` with the rows as shown and the pane (screens/base.py) records and writes them
through ops/exports.py, audited in SQL. The list never talks to the database.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input

from opsconsole.tui.widgets.keyed_table import KeyedTable

PADDING = 2  # a DataTable cell's padding, both sides
SCROLLBAR = 2


@dataclass(frozen=True)
class Column:
    """One column of a list.

    key: the column key; label: its header; width: what it needs (a fixed column keeps it);
    field: the record key holding its value (default: key), or a function of the record;
    priority: 0 always shows, higher numbers drop out first when the list is narrow;
    grow: a text column widens up to this many cells while its content needs it and there is room;
    source: "table.column" the value comes from, for the export audit's classifications;
    export: whether export and copy include it (not for a selection marker)."""

    key: str
    label: str
    width: int
    field: str | Callable[[dict[str, Any]], Any] | None = None
    priority: int = 0
    grow: int = 0
    source: str | None = None
    export: bool = True

    def value(self, record: dict[str, Any]) -> Any:
        field = self.field if self.field is not None else self.key
        if callable(field):
            return field(record)
        return record.get(field)


def text_of(value: Any) -> str:
    """A value as the filter and the CSV see it."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Text):
        return value.plain
    return str(value)


def _sort_key(value: Any) -> tuple:
    """None last; numbers as numbers, times as times, the rest case-insensitively as text."""
    if value is None:
        return (2, 0)
    if isinstance(value, bool):
        return (0, int(value))
    if isinstance(value, int | float | decimal.Decimal):
        return (0, value)
    if isinstance(value, dt.datetime):
        return (0, value.timestamp())
    if isinstance(value, dt.date):
        return (0, value.toordinal())
    return (1, text_of(value).casefold())


def fit_columns(columns: Sequence[Column], width: int, longest: dict[str, int]) -> list[tuple[Column, int]]:  # noqa: E501
    """The columns shown in `width` cells and the width of each: drop the highest priority number
    first (the later column of equals) until the rest fit, then share the room left among the
    growing columns, up to their longest content (or their `grow` cap)."""
    shown = list(columns)
    room = width - SCROLLBAR

    def used(cols: Sequence[Column]) -> int:
        return sum(c.width + PADDING for c in cols)

    while used(shown) > room:
        droppable = [c for c in shown if c.priority > 0]
        if not droppable:
            break
        worst = max(droppable, key=lambda c: (c.priority, shown.index(c)))
        shown.remove(worst)
    left = max(0, room - used(shown))
    widths = {c.key: c.width for c in shown}
    wants = {c.key: min(c.grow, max(c.width, longest.get(c.key, 0))) for c in shown if c.grow > c.width}
    while left > 0:  # share the room out a cell at a time, so every cut text column gains
        hungry = [k for k, want in wants.items() if widths[k] < want]
        if not hungry:
            break
        for key in hungry[:left]:
            widths[key] += 1
            left -= 1
    widths = [(c, widths[c.key]) for c in shown]
    return widths


class ListTable(KeyedTable):
    """The table inside a DataList (a KeyedTable whose columns the list chooses)."""


class DataList(Vertical, can_focus=False):
    DEFAULT_CSS = """
    DataList { height: 1fr; }
    DataList > .list-filter { display: none; margin-bottom: 0; }
    DataList.-filtering > .list-filter { display: block; }
    """

    BINDINGS = [
        Binding("slash", "filter", "Filter", key_display="/", id="list.filter"),
        Binding("s", "sort_next", "Sort", id="list.sort"),
        Binding("S", "sort_reverse", "Reverse sort", show=False, id="list.reverse"),
        Binding("e", "export('csv')", "Export", id="list.export"),
        Binding("E", "export('json')", "Export JSON", show=False, id="list.export_json"),
        Binding("y", "copy_row", "Copy row", show=False, id="list.copy"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="list.clear"),
    ]

    class Changed(Message):
        """The sort or the filter changed (the pane shows them in its title)."""

        def __init__(self, data_list: DataList):
            super().__init__()
            self.data_list = data_list

    class FilterChanged(Message):
        """A server-filtered list's filter text changed: the pane fetches again."""

        def __init__(self, data_list: DataList, text: str):
            super().__init__()
            self.data_list = data_list
            self.text = text

    class ExportRequested(Message):
        """Export (fmt csv/json) or copy (fmt clipboard) these rows, as shown."""

        def __init__(self, data_list: DataList, fmt: str, columns: list[Column], rows: list[list[Any]]):
            super().__init__()
            self.data_list = data_list
            self.fmt = fmt
            self.columns = columns
            self.rows = rows

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        name: str,
        table_id: str,
        server_filter: bool = False,
        placeholder: str = "filter: any text in the row",
        enter: str | None = None,
        filter_id: str | None = None,
        keep_box: bool = False,
        **kwargs: Any,
    ):
        """name: what the list is called in titles and file names; table_id: the inner table's id;
        filter_id: the filter box's id; keep_box: the box shows even when empty (a search)."""
        super().__init__(**kwargs)
        self.list_name = name
        self.columns = list(columns)
        self.server_filter = server_filter
        self.filter_text = ""
        self.sort_key: str | None = None
        self.sort_reverse = False
        self._records: list[tuple[str, dict[str, Any], Sequence[Any]]] = []
        self._shown: list[tuple[str, dict[str, Any], Sequence[Any]]] = []
        self._fitted: list[tuple[Column, int]] | None = None
        self._placeholder = placeholder
        self._table_id = table_id
        self._enter = enter
        self._filter_id = filter_id
        self.keep_box = keep_box
        if keep_box:
            self.add_class("-filtering")

    def compose(self) -> ComposeResult:
        yield Input(
            placeholder=self._placeholder, classes="list-filter", id=self._filter_id, select_on_focus=False
        )
        table_cls: type[ListTable] = ListTable
        if self._enter is not None:
            binding = Binding("enter", "select_cursor", self._enter, key_display="⏎")
            table_cls = type("ListTableWithEnter", (ListTable,), {"BINDINGS": [binding]})
        yield table_cls([], id=self._table_id)

    @property
    def table(self) -> ListTable:
        return self.query_one(ListTable)

    @property
    def filter_box(self) -> Input:
        return self.query_one(".list-filter", Input)

    def focus_table(self) -> None:
        self.table.focus()

    # -- rows ------------------------------------------------------------------------------------
    def set_rows(self, rows: Iterable[tuple[str, dict[str, Any], Sequence[Any]]]) -> None:
        """The list's rows in the pane's order: (key, record, a cell per column)."""
        self._records = list(rows)
        self._show_rows()

    def update_cells(self, column_key: str, cells: dict[str, Any]) -> None:
        """Replace one column's cells of some rows (by key) in place, for a value that ticks with the
        clock (the Backlog's "next try"): no filter, sort or full sync of every row (P8). Only for a
        column whose new text changes neither the filter's matches nor the sort (both read records)."""
        if not cells:
            return
        index = next(i for i, c in enumerate(self.columns) if c.key == column_key)

        def swap(row: tuple[str, dict[str, Any], Sequence[Any]]) -> tuple[str, dict[str, Any], Sequence[Any]]:
            key, record, old = row
            if key not in cells:
                return row
            return key, record, (*old[:index], cells[key], *old[index + 1 :])

        self._records = [swap(r) for r in self._records]
        self._shown = [swap(r) for r in self._shown]
        if not self.is_mounted or not any(c.key == column_key for c, _ in self._fitted or []):
            return
        table = self.table
        with self.app.batch_update():
            for key, value in cells.items():
                if key in table.rows:
                    table.update_cell(key, column_key, _cell(value), update_width=False)

    @property
    def shown_records(self) -> list[dict[str, Any]]:
        return [record for _, record, _ in self._shown]

    def cursor_record(self) -> dict[str, Any] | None:
        key = self.table.cursor_key if self.is_mounted else None
        return next((record for k, record, _ in self._shown if k == key), None)

    def _longest(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.columns:
            if c.grow:
                index = self.columns.index(c)
                out[c.key] = max(
                    (len(text_of(cells[index])) for _, _, cells in self._records if index < len(cells)),
                    default=0,
                )
        return out

    def _show_rows(self) -> None:
        if not self.is_mounted:
            return
        rows = self._records
        if self.filter_text.strip() and not self.server_filter:
            needle = self.filter_text.strip().casefold()
            rows = [
                r
                for r in rows
                if any(needle in text_of(c.value(r[1])).casefold() for c in self.columns)
                or any(needle in text_of(cell).casefold() for cell in r[2])
            ]
        column = next((c for c in self.columns if c.key == self.sort_key), None)
        if column is not None:
            # a stable sort: equal values keep the pane's order, in both directions
            keyed = [(_sort_key(column.value(r[1])), i, r) for i, r in enumerate(rows)]
            nones = [k for k in keyed if k[0][0] == 2]
            values = [k for k in keyed if k[0][0] != 2]
            values.sort(key=lambda k: k[0], reverse=self.sort_reverse)  # Python keeps ties in order
            rows = [k[2] for k in values + nones]
        self._shown = list(rows)
        table = self.table
        keep = table.cursor_key
        self._relayout()
        assert self._fitted is not None
        indexes = [self.columns.index(c) for c, _ in self._fitted]
        table.sync(((key, [_cell(cells[i]) for i in indexes]) for key, _, cells in self._shown), keep=keep)

    def _relayout(self) -> None:
        """Choose the columns for the current width; rebuild the table's columns when they changed."""
        width = self.size.width or self.table.size.width or 80  # the table may not be resized yet
        layout = fit_columns(self.columns, width, self._longest())
        if layout == self._fitted:
            return
        self._fitted = layout
        self.table.set_columns([(c.key, self._label(c), w) for c, w in layout])

    def _label(self, column: Column) -> str:
        if column.key == self.sort_key:
            return f"{column.label} {'▼' if self.sort_reverse else '▲'}"
        return column.label

    def on_resize(self) -> None:
        if self._records or self._fitted is not None:
            self._show_rows()

    # -- sort ------------------------------------------------------------------------------------
    def sort_by(self, key: str | None, reverse: bool = False) -> None:
        self.sort_key = key
        self.sort_reverse = reverse
        self._fitted = None  # the header shows the arrow
        self._show_rows()
        self.post_message(self.Changed(self))

    def action_sort_next(self) -> None:
        """Sort by the next shown column (from the pane's own order to the first; after the last,
        back to the pane's order)."""
        keys = [c.key for c, _ in (self._fitted or []) if c.export]
        if not keys:
            return
        if self.sort_key not in keys:
            self.sort_by(keys[0])
        elif self.sort_key == keys[-1]:
            self.sort_by(None)
        else:
            self.sort_by(keys[keys.index(self.sort_key) + 1])

    def action_sort_reverse(self) -> None:
        if self.sort_key is None:
            keys = [c.key for c, _ in (self._fitted or []) if c.export]
            if keys:
                self.sort_by(keys[0], reverse=True)
            return
        self.sort_by(self.sort_key, not self.sort_reverse)

    @on(DataTable.HeaderSelected)
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        if key == self.sort_key:
            self.sort_by(key, not self.sort_reverse)
        else:
            self.sort_by(key)

    def describe(self) -> str:
        """The sort and the filter in words, for the pane's title ('' when neither is set)."""
        parts = []
        column = next((c for c in self.columns if c.key == self.sort_key), None)
        if column is not None:
            parts.append(f"sort {column.label} {'▼' if self.sort_reverse else '▲'}")
        if self.filter_text.strip():
            parts.append(f"filter “{self.filter_text.strip()}”")
        return " · ".join(parts)

    # -- filter ----------------------------------------------------------------------------------
    def action_filter(self) -> None:
        self.add_class("-filtering")
        self.screen.set_focus(self.filter_box)  # at once: the keys typed right after / are the filter

    @on(Input.Changed, ".list-filter")
    def filter_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.filter_text = event.value
        if self.server_filter:
            self.post_message(self.FilterChanged(self, event.value))
        else:
            self._show_rows()
        self.post_message(self.Changed(self))

    @on(Input.Submitted, ".list-filter")
    def filter_submitted(self, event: Input.Submitted) -> None:
        if not self.filter_text.strip() and not self.keep_box:
            self.remove_class("-filtering")
        self.focus_table()

    def set_filter(self, text: str) -> None:
        box = self.filter_box
        box.value = text  # posts Input.Changed
        self.set_class(bool(text) or box.has_focus or self.keep_box, "-filtering")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":  # else Escape goes on to the pane (Backlog: clear the selection)
            return self.filter_box.has_focus or bool(self.filter_text)
        return True

    def action_clear_filter(self) -> None:
        box = self.filter_box
        if box.has_focus and self.filter_text.strip() and self.keep_box:
            self.focus_table()  # a search stays; Escape again clears it
            return
        if self.filter_text:
            box.value = ""
        if not self.keep_box:
            self.remove_class("-filtering")
        self.focus_table()

    # -- export and copy -------------------------------------------------------------------------
    def export_columns(self) -> list[Column]:
        return [c for c in self.columns if c.export]

    def action_export(self, fmt: str) -> None:
        columns = self.export_columns()
        rows = [[c.value(record) for c in columns] for _, record, _ in self._shown]
        self.post_message(self.ExportRequested(self, fmt, columns, rows))

    def action_copy_row(self) -> None:
        record = self.cursor_record()
        if record is None:
            self.app.notify("No row under the cursor to copy.", severity="warning", timeout=3)
            return
        columns = self.export_columns()
        self.post_message(
            self.ExportRequested(self, "clipboard", columns, [[c.value(record) for c in columns]])
        )


def _cell(value: Any) -> Any:
    """A cell that never wraps and ends in … when its column is narrower than it."""
    if isinstance(value, Text):
        value.no_wrap = True
        value.overflow = "ellipsis"
        return value
    if isinstance(value, str):
        return Text(value, no_wrap=True, overflow="ellipsis")
    return value

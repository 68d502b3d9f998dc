"""KeyedTable.sync on a big table: refreshes that change many cells must not make the UI thread
re-measure whole columns (P8: the backlog's 500 rows ticking "next try" froze keys for ~0.3 s)."""

from __future__ import annotations

import time

from rich.text import Text
from textual.app import App, ComposeResult

from opsconsole.tui.widgets.keyed_table import KeyedTable

COLUMNS = [("id", "id", 6), ("next", "next try", 9), ("note", "note")]  # two fixed widths, one auto


class TableApp(App):
    def compose(self) -> ComposeResult:
        yield KeyedTable(COLUMNS, id="t")


def rows(n: int, wait: int, note: str) -> list[tuple[str, tuple[Text, Text, Text]]]:
    return [(str(i), (Text(str(i)), Text(f"in {wait}m {i % 60}s"), Text(note))) for i in range(n)]


async def test_sync_of_changed_cells_measures_only_auto_width_columns():
    app = TableApp()
    async with app.run_test(size=(80, 20)) as pilot:
        table = app.query_one("#t", KeyedTable)
        table.sync(rows(500, 10, "a longer note"))
        await pilot.pause()
        widths = {c.key.value: c.get_render_width(table) for c in table.ordered_columns}
        assert widths == {"id": 8, "next": 11, "note": 15}  # fixed 6 and 9, auto 13; +2 padding

        # every "next try" value narrows, and the auto-width note column narrows too
        table.sync(rows(500, 9, "short"))
        queued = {key.column_key.value for key in table._updated_cells}
        assert queued == {"note"}  # the fixed-width column's 500 changed cells are not queued
        started = time.perf_counter()
        await pilot.pause()
        idle_s = time.perf_counter() - started

        assert table.get_cell("7", "next") == Text("in 9m 7s")
        assert table.get_row_at(499)[1].plain == "in 9m 19s"
        widths = {c.key.value: c.get_render_width(table) for c in table.ordered_columns}
        assert widths == {"id": 8, "next": 11, "note": 7}  # the auto column shrank to "short"
        assert idle_s < 2.0, f"the idle pass after the sync took {idle_s:.2f} s"


async def test_cells_render_as_datatable_draws_them():
    """KeyedTable lays each frame's styles over a cell's text rendered once (textual_compat.render_body_cell):
    its segments must be DataTable's own, for every kind of cell, under the cursor or not, focused or
    not, and after a cell changed (the cached text of the old cell must not come back)."""
    from decimal import Decimal

    from rich.style import Style
    from textual.widgets import DataTable

    from opsconsole.tui.widgets.data_list import _cell

    cells = (
        Text("42", justify="right"),
        Text("failed", style="bold red"),
        _cell("a message much longer than its column, cut with an ellipsis"),
        Text.assemble(("in ", "dim"), ("3m", "bold")),
        "plain [b]markup[/b]",
        None,
        Decimal("12.50"),
    )
    columns = [(f"c{i}", f"c{i}", 9) for i in range(len(cells))]
    app = TableApp()
    async with app.run_test(size=(120, 20)) as pilot:
        table = app.query_one("#t", KeyedTable)
        table.set_columns(columns)
        table.sync([(str(i), cells) for i in range(4)])
        await pilot.pause()

        def compare() -> int:
            checked = 0
            base = Style(bgcolor="#101010")
            for row in range(4):
                for col, column in enumerate(table.ordered_columns):
                    width = column.get_render_width(table)
                    for cursor in (False, True):
                        ours = table._render_cell(row, col, base, width, cursor=cursor)
                        theirs = DataTable._render_cell(table, row, col, base, width, cursor=cursor)
                        assert ours == theirs, (row, col, cursor)
                        checked += 1
            return checked

        assert compare() == 4 * len(cells) * 2
        table.blur()
        await pilot.pause()
        compare()
        table.update_cell("1", "c1", Text("dead_letter", style="italic"))
        table.update_cell("2", "c2", "now short")
        await pilot.pause()
        compare()
        assert "dead_lett" in "".join(s.text for s in table._render_cell(1, 1, Style(), 11)[0])

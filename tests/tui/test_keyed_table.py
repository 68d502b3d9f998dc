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

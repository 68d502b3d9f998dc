"""Every use of a Textual internal, in one place, checked when the console is imported.

The console relies on a few things Textual does not promise to keep (private names, or public hooks
whose timing is an implementation detail). They were checked against the series pinned in
pyproject.toml (textual 8.2.x). `missing()` lists the ones this Textual lacks; importing the console
with any missing raises TextualMismatch with one sentence, and tests/tui/test_textual_compat.py fails,
so an upgrade shows up as a failed test instead of a broken footer.

What each one is for:
- App._init_mode(mode): compose and mount a mode's screen without switching to it (app.py premount,
  so the first switch to a pane is a redraw, not a compose: P8).
- App._css_update_count and Screen._css_update_count: a screen premounted by _init_mode gets the
  current styles as its widgets mount (a screen's own CSS is loaded by _init_mode itself), but Textual
  counts it as never styled, so premounting it and then the first switch to it each re-parsed the
  whole stylesheet and restyled the app (~0.1-0.3 s on the UI thread each, P8); the app marks it
  styled before mounting it. A later theme change still restyles it when it is shown. The first pane,
  styled while the app starts but before its screen is mounted, is recorded the same way (record_styled).
- App.delay_update(): switch_mode holds frames back 50 ms through it; the app skips that hold for a
  pane that is mounted already (app.py).
- events.ScreenResume.refresh_styles: a pane says its styles are current, so Textual does not restyle
  the whole screen on every switch (screens/base.py).
- Footer._bindings_ready and Footer.bindings_changed(): the footer recomposes only when what it shows
  changed (widgets/chrome.py PaneFooter).
- textual._two_way_dict.TwoWayDict, DataTable._row_locations and DataTable._update_count: reorder the
  rows of a table in place, as DataTable.sort does (widgets/keyed_table.py).
- DataTable._render_cell(), _get_row_renderables(), _get_styles_to_render_cell(), _data,
  _row_locations, _column_locations and _show_hover_cursor: DataTable keys its cell
  render cache on a counter that every update_cell, add_row or resize bumps, and on the focus state, so
  one changed cell, or the focus moving to a filter box, had Rich lay out every visible cell again at
  the next frame (0.2-0.4 ms a cell here: 40-90 ms for the Backlog's rows, P8). KeyedTable renders a
  cell's text once per cell object and width (KeyedTable.sync replaces only the cells that changed)
  and lays each frame's styles over it (render_body_cell below).
- App._driver.write(): raw OSC 9/777 notifications (tui/oncall.py); App.bell() and copy_to_clipboard()
  write through it the same way. Guarded: without a driver nothing is written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import textual
from rich.padding import Padding
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.app import App
from textual.cache import LRUCache
from textual.screen import Screen
from textual.widgets import DataTable, Footer

if TYPE_CHECKING:
    from textual.await_complete import AwaitComplete

try:
    from textual._two_way_dict import TwoWayDict
except ImportError:  # reported by missing()
    TwoWayDict = None  # type: ignore[assignment,misc]

TESTED_SERIES = "8.2"


class TextualMismatch(RuntimeError):
    """The installed Textual lacks an internal the console uses."""


def missing() -> list[str]:
    """The internals this Textual does not have (empty when all are there)."""
    gone = []
    if not callable(getattr(App, "_init_mode", None)):
        gone.append("App._init_mode")
    if not callable(getattr(App, "delay_update", None)):
        gone.append("App.delay_update")
    if "refresh_styles" not in getattr(events.ScreenResume, "__annotations__", {}):
        gone.append("events.ScreenResume.refresh_styles")
    if not hasattr(Footer, "_bindings_ready"):
        gone.append("Footer._bindings_ready")
    if not callable(getattr(Footer, "bindings_changed", None)):
        gone.append("Footer.bindings_changed")
    if TwoWayDict is None:
        gone.append("textual._two_way_dict.TwoWayDict")
    if "_css_update_count" not in App.__init__.__code__.co_names:
        gone.append("App._css_update_count")
    if not hasattr(Screen(), "_css_update_count"):
        gone.append("Screen._css_update_count")
    table = DataTable()
    for name in (
        "_row_locations",
        "_column_locations",
        "_update_count",
        "_data",
        "_show_hover_cursor",
    ):
        if not hasattr(table, name):
            gone.append(f"DataTable.{name}")
    for name in ("_render_cell", "_get_row_renderables", "_get_styles_to_render_cell"):
        if not callable(getattr(DataTable, name, None)):
            gone.append(f"DataTable.{name}")
    return gone


def check() -> None:
    gone = missing()
    if gone:
        raise TextualMismatch(
            f"This console was built for Textual {TESTED_SERIES}.x and Textual {textual.__version__} "
            f"lacks {', '.join(gone)}; install the pinned version with `pip install 'textual>="
            f"{TESTED_SERIES},<8.3'`."
        )


# -- the uses ------------------------------------------------------------------------------------------


def init_mode(app: App, mode: str) -> AwaitComplete | Any:
    """Compose and mount MODE's screen without showing it."""
    return app._init_mode(mode)  # type: ignore[attr-defined]


def mark_styled(app: App, screen: Screen) -> None:
    """A screen about to be mounted ahead of time will have the current styles: no restyle for it."""
    screen._css_update_count = app._css_update_count  # type: ignore[attr-defined]


def record_styled(app: App, screen: Screen) -> None:
    """The first pane is styled as the app starts, but its screen is not mounted yet when Textual
    refreshes the CSS, so Textual never records it as styled (-1) and re-parsed the whole stylesheet
    and restyled the app on the first switch back to it (~100 ms, P8). Record it once it is mounted;
    any later CSS change restyles it as usual."""
    if screen.is_mounted and screen._css_update_count == -1:  # type: ignore[attr-defined]
        screen._css_update_count = app._css_update_count  # type: ignore[attr-defined]


def footer_bindings_ready(footer: Footer) -> bool:
    return bool(footer._bindings_ready)


def footer_set_bindings_ready(footer: Footer) -> None:
    """What Footer.bindings_changed records first, for a footer that schedules its own rebuild."""
    footer._bindings_ready = True


def reorder_rows(table: DataTable, order: dict[Any, int]) -> None:
    """Give each row key its position (what DataTable.sort does) and redraw."""
    assert TwoWayDict is not None
    table._row_locations = TwoWayDict(order)
    table._update_count += 1
    table.refresh()


def render_body_cell(
    table: DataTable,
    row_index: int,
    column_index: int,
    base_style: Style,
    width: int,
    cursor: bool,
    hover: bool,
    rendered: LRUCache[tuple[int, int, int], tuple[Any, list[list[Segment]]]],
) -> list[list[Segment]] | None:
    """What DataTable._render_cell draws for a one-line body cell, from the cell's text rendered once
    (`rendered`: by the cell object and width) with this frame's styles laid over it: the styles are
    what a focus change, the cursor, zebra rows or the row's place change, and laying them over is
    cheap; Rich laying the text out is not. DataTable draws Styled(Padding(cell), pre, post), and
    Styled only lays its two styles over what Padding renders, so this is the same segments. None
    for the header, labels, fixed cells and taller rows (DataTable draws those itself)."""
    if min(row_index, column_index) < 0 or row_index < table.fixed_rows or column_index < table.fixed_columns:
        return None
    row_key = table._row_locations.get_key(row_index)  # type: ignore[attr-defined]
    column_key = table._column_locations.get_key(column_index)  # type: ignore[attr-defined]
    if row_key is None or column_key is None or table.rows[row_key].height != 1:
        return None
    raw = table._data[row_key].get(column_key)  # type: ignore[attr-defined]
    key = (id(raw), width, table.cell_padding)
    hit = rendered.get(key)
    if hit is not None and hit[0] is raw:  # the entry holds the cell, so its id is not reused meanwhile
        lines = hit[1]
    else:
        cell = table._get_row_renderables(row_index).cells[column_index]  # type: ignore[attr-defined]
        options = table.app.console_options.update_dimensions(width, 1).update(no_wrap=True)
        lines = table.app.console.render_lines(Padding(cell, (0, table.cell_padding)), options)
        rendered[key] = (raw, lines)
    component_style, post_style = table._get_styles_to_render_cell(  # type: ignore[attr-defined]
        False,
        False,
        False,
        hover,
        cursor,
        table.show_cursor,
        table._show_hover_cursor,  # type: ignore[attr-defined]
        table.cursor_foreground_priority == "css",
        table.cursor_background_priority == "css",
    )
    pre_style = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
    return [list(Segment.apply_style(line, pre_style, post_style)) for line in lines]


check()


def write_to_terminal(app: App, sequence: str) -> None:
    """Write raw escape sequences to the app's terminal (nothing when headless or driverless)."""
    driver = getattr(app, "_driver", None)
    if sequence and driver is not None and not app.is_headless:
        driver.write(sequence)

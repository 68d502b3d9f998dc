"""Switching panes is a redraw (P8: key press -> screen update, p95 < 100 ms): every pane is mounted
up front, a switch neither holds frames back nor re-applies the stylesheet, a pane shown again does
not render its table cells again or query the database while its data is fresh, and full garbage
collections wait for a quiet keyboard."""

from __future__ import annotations

import datetime as dt
import gc

import pytest
from textual.widgets import DataTable

from opsconsole.tui.gcpolicy import AT_LEAST_S, EVERY_S, NEVER, QUIET_S, GcPolicy
from opsconsole.tui.widgets.keyed_table import KeyedTable
from tests.tui.helpers import SIZE, wait_for
from tools import sample
from tools.drive import wait_loaded


@pytest.fixture
def seeded(db_dsn, conn):
    sample.seed(conn, dt.datetime.now(dt.UTC).replace(microsecond=0))
    return db_dsn


async def test_a_switch_to_a_shown_pane_redraws_without_delay_restyle_or_query(make_app, seeded, monkeypatch):
    app = make_app(dsn=seeded, start_pane="monitor", listen=False, interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        assert all(screen.is_mounted for screen in app.panes.values())  # mounted before first shown
        await pilot.press("2")
        await wait_loaded(app, "backlog")
        await pilot.press("1")
        await wait_for(pilot, lambda: app.screen is app.panes["monitor"])
        await pilot.pause(0.2)

        restyled: list[object] = []
        update_nodes = app.stylesheet.update_nodes

        def counting_update_nodes(nodes, animate=False):
            nodes = list(nodes)
            restyled.extend(nodes)
            return update_nodes(nodes, animate=animate)

        monkeypatch.setattr(app.stylesheet, "update_nodes", counting_update_nodes)
        cells: list[tuple[int, int]] = []
        render_cell = KeyedTable._render_cell  # every pane's tables are KeyedTables

        def counting_render_cell(self, row_index, column_index, *args, **kwargs):
            cells.append((row_index, column_index))
            return render_cell(self, row_index, column_index, *args, **kwargs)

        monkeypatch.setattr(KeyedTable, "_render_cell", counting_render_cell)
        ticks = app.engine.ticks
        fetched_at = app.panes["backlog"].updated_at

        app.action_show_pane("backlog")
        assert app.screen is app.panes["backlog"]
        assert app._batch_count == 0  # no App.delay_update: the next frame shows the pane
        await pilot.pause(0.3)

        assert restyled == []  # the stylesheet was not re-applied to the pane
        assert cells == []  # its table drew from its cache: nothing changed since it was last shown
        assert app.engine.ticks == ticks and not app.engine.in_flight  # fresh data: no query
        assert app.panes["backlog"].updated_at == fetched_at
        assert app.panes["backlog"].query_one("#rows", DataTable).row_count > 0


async def test_the_first_switch_back_to_the_start_pane_does_not_restyle_the_app(
    make_app, seeded, monkeypatch
):
    """The start pane is styled while the app starts, before its screen is mounted, so Textual never
    recorded it as styled and re-parsed the stylesheet and restyled the app on the first switch back
    to it (the slowest pane key of P8)."""
    app = make_app(dsn=seeded, start_pane="monitor", listen=False, interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await wait_for(pilot, lambda: app.premounted, what="every pane mounted")
        await pilot.press("2")
        await wait_loaded(app, "backlog")
        reparsed: list[bool] = []
        refresh_css = app.refresh_css
        monkeypatch.setattr(app, "refresh_css", lambda *a, **k: (reparsed.append(True), refresh_css(*a, **k)))
        app.action_show_pane("monitor")
        assert app.screen is app.panes["monitor"]
        await pilot.pause(0.2)
        assert reparsed == []


async def test_a_pane_shown_again_after_its_data_aged_refreshes(make_app, seeded):
    app = make_app(dsn=seeded, start_pane="monitor", listen=False, interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await pilot.press("2")
        await wait_loaded(app, "backlog")
        first = app.panes["backlog"].updated_at
        await pilot.press("1")
        await wait_for(pilot, lambda: app.screen is app.panes["monitor"])
        app.engine.interval = 0.01  # the backlog's data is now older than the interval
        await pilot.press("2")
        await wait_for(pilot, lambda: app.panes["backlog"].updated_at != first, what="a backlog refresh")


async def test_hidden_panes_do_not_redraw_their_clocks(make_app, seeded):
    app = make_app(dsn=seeded, start_pane="monitor", listen=False, interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        header = app.panes["quality"].query_one("StatusHeader")
        shown_header = app.panes["monitor"].query_one("StatusHeader")
        before, shown_before = header.content, shown_header.content
        app.engine.paused = True  # the shown header's text changes: "paused" instead of "every 1 min"
        await pilot.pause(1.3)  # one tick of the 1 s interval
        assert "paused" in str(shown_header.content) and shown_header.content != shown_before
        assert header.content is before
        await pilot.press("3")  # shown: brought up to date at once
        await wait_for(pilot, lambda: "paused" in str(header.content), what="the quality header")


async def test_the_app_takes_over_full_collections_and_gives_them_back(make_app, seeded):
    saved = gc.get_threshold()
    app = make_app(dsn=seeded, start_pane="monitor", listen=False, interval=60.0)
    async with app.run_test(size=SIZE):
        await wait_loaded(app, "monitor")
        assert app.gc_policy.active
        assert gc.get_threshold() == (saved[0], saved[1], NEVER)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == saved
    assert gc.get_freeze_count() == 0


def test_gc_policy_collects_when_the_keyboard_is_quiet():
    now = [1000.0]
    policy = GcPolicy(clock=lambda: now[0])
    assert not policy.due()  # not started
    saved = gc.get_threshold()
    policy.start()
    try:
        now[0] += EVERY_S - 1
        assert not policy.tick()  # too soon after the last one
        now[0] += 1
        policy.input_seen()
        assert not policy.tick()  # due, but a key was just pressed
        now[0] += QUIET_S
        assert policy.tick() and policy.collections == 1  # quiet: collected
        for _ in range(int(AT_LEAST_S) - 1):  # typing without a pause ...
            now[0] += 1
            policy.input_seen()
            assert not policy.tick()
        now[0] += 1
        policy.input_seen()
        assert policy.tick() and policy.collections == 2  # ... still gets one every AT_LEAST_S
    finally:
        policy.stop()
    assert gc.get_threshold() == saved and gc.get_freeze_count() == 0


async def test_closing_the_backlog_filter_queries_only_when_it_filtered(make_app, seeded):
    app = make_app(dsn=seeded, start_pane="backlog", listen=False, interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        ticks = app.engine.ticks
        await pilot.press("slash", "escape")  # opened and closed, nothing typed
        await pilot.pause(0.3)
        assert not app.screen.query_one("#filter").display
        assert app.engine.ticks == ticks and not app.engine.in_flight
        await pilot.press("slash", "x")
        await wait_loaded(app, "backlog", lambda d: d.filter == "x")
        await pilot.press("escape")  # the rows shown were filtered: fetch them all again
        await wait_loaded(app, "backlog", lambda d: d.filter is None)
        assert app.engine.ticks > ticks + 1


async def test_the_first_switch_to_a_premounted_pane_does_not_restyle_the_app(make_app, seeded, monkeypatch):
    """Premounting a pane styles its widgets as they mount; the first switch to it used to re-parse the
    whole stylesheet and restyle the app all the same (Textual counted the pane as never styled)."""
    app = make_app(dsn=seeded, start_pane="monitor", listen=False, interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await wait_for(pilot, lambda: app.premounted, what="premount")
        reparsed: list[int] = []
        reparse = app.stylesheet.reparse

        def counting_reparse() -> None:
            reparsed.append(1)
            reparse()

        monkeypatch.setattr(app.stylesheet, "reparse", counting_reparse)
        for pane in ("activity", "quality", "backlog"):
            app.action_show_pane(pane)
            assert app.screen is app.panes[pane]
            await pilot.pause(0.1)
        assert reparsed == []
        assert str(app.panes["activity"].query_one("#pane-body").styles.height) == "1fr"  # styled anyway


async def test_a_refresh_with_the_same_data_does_not_lay_the_monitor_out_again(make_app, seeded, monkeypatch):
    """Every refresh rewrites the Monitor's labels; a Static.update lays the whole screen out, so
    unchanged labels (set_text) must not, or each refresh costs the next key press its frame (P8)."""
    app = make_app(dsn=seeded, start_pane="monitor", listen=False, interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await pilot.pause(0.3)
        screen = app.panes["monitor"]
        layouts: list[int] = []
        refresh_layout = type(screen)._refresh_layout

        def counting_refresh_layout(self, *args, **kwargs):
            layouts.append(1)
            return refresh_layout(self, *args, **kwargs)

        monkeypatch.setattr(type(screen), "_refresh_layout", counting_refresh_layout)
        screen.render_data(screen.data)
        screen.update_counters()
        await pilot.pause(0.3)
        assert layouts == []


async def test_set_text_lays_out_only_when_the_height_changes():
    from textual.app import App
    from textual.widgets import Static

    from opsconsole.tui.widgets.chrome import set_text

    class One(App):
        def compose(self):
            yield Static("one line", id="s")

    app = One()
    async with app.run_test(size=(60, 10)) as pilot:
        widget = app.query_one("#s", Static)
        await pilot.pause()
        set_text(widget, "one line")
        assert not widget._layout_required  # the same text: nothing at all
        set_text(widget, "another line")
        assert not widget._layout_required and str(widget.content) == "another line"  # a repaint
        set_text(widget, "two\nlines")
        assert widget._layout_required  # taller: the screen is laid out again
        await pilot.pause()
        assert widget.size.height == 2

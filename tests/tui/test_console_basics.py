"""The console against a real, seeded database: what the panes show, the header, freshness, keys."""

from __future__ import annotations

import datetime as dt

import psycopg

from tests.tui.helpers import SIZE, screen_text, table_rows, wait_for
from tools.drive import wait_screen

T0 = dt.datetime(2025, 3, 14, 12, 0, 0, tzinfo=dt.UTC)


def seed_audit(conn: psycopg.Connection) -> list[int]:
    """Five audit rows one minute apart (the newest last), with known arguments and results."""
    ids = []
    for i in range(5):
        row = conn.execute(
            "INSERT INTO ops_audit_log (occurred_at, actor, application_name, action, arguments, result,"
            " status, duration_ms, reason) VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)"
            " RETURNING audit_id",
            (
                T0 + dt.timedelta(minutes=i),
                f"op{i}",
                "opsconsole:cli",
                f"action_{i}",
                f'{{"batch_id": "b-{i}"}}',
                f'{{"requeued": {i * 10}}}',
                "ok" if i % 2 == 0 else "error",
                i * 100,
                None if i % 2 == 0 else f"boom {i}",
            ),
        ).fetchone()
        ids.append(row["audit_id"])
    return ids


async def test_activity_lists_the_audit_log_newest_first(make_app, conn):
    seed_audit(conn)
    app = make_app(start_pane="activity")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["activity"].data is not None, what="activity data")
        rows = table_rows(app, "#audit")
        # when, ago, who, action, scope, status, result, ms
        assert [r[3] for r in rows] == ["action_4", "action_3", "action_2", "action_1", "action_0"]
        assert [r[2] for r in rows] == ["op4", "op3", "op2", "op1", "op0"]
        assert rows[0][4] == "batch_id=b-4"
        assert rows[0][5] == "ok" and rows[0][6] == "requeued=40" and rows[0][7] == "400"
        assert rows[1][5] == "error" and rows[1][6] == "boom 3"
        assert "6 Activity" in screen_text(app)


async def test_activity_keeps_the_cursor_on_its_row_when_new_rows_arrive(make_app, conn):
    ids = seed_audit(conn)
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["activity"].data is not None)
        table = app.screen.query_one("#audit")
        table.focus()
        await pilot.press("down", "down")
        assert table.cursor_key == str(ids[2])
        conn.execute(
            "INSERT INTO ops_audit_log (occurred_at, action) VALUES (%s, 'newer_a'), (%s, 'newer_b')",
            (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=2)),
        )
        app.engine.kick()
        await wait_for(pilot, lambda: len(app.panes["activity"].data) == 7, what="the new rows")
        await pilot.pause(0.1)
        assert [r[3] for r in table_rows(app, "#audit")][:2] == ["newer_b", "newer_a"]
        assert table.cursor_key == str(ids[2])
        assert table.cursor_row == 4


async def test_header_shows_database_role_version_and_state(make_app, conn):
    version = conn.execute("SELECT current_setting('server_version') AS v").fetchone()["v"].split()[0]
    app = make_app(database_label="db-under-test")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.connected, what="connected")
        await pilot.pause(0.1)
        app.refresh_chrome()
        await pilot.pause(0.05)
        text = screen_text(app)
        header = text.splitlines()[0]
        assert "db db-under-test" in header
        assert "role postgres" in header or "role " + conn.info.user in header
        assert version in header
        assert "● connected" in header
        assert "refreshed" in header
        for key, title in (
            ("1", "Monitor"),
            ("2", "Backlog"),
            ("3", "Data quality"),
            ("4", "Customers"),
            ("5", "Catalog & lineage"),
            ("6", "Activity"),
        ):
            assert f"{key} {title}" in text.splitlines()[1]


async def test_a_narrow_header_drops_details_not_the_state(make_app, conn):
    """At 60 columns the header cannot say everything: the server version, the interval, the last
    refresh and the role go, in that order; the database and its connection state stay whole."""
    app = make_app(database_label="db-under-test")
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.connected, what="connected")
        for width, gone, kept in (
            (120, [], ["PostgreSQL", "every", "refreshed", "role"]),
            (80, ["PostgreSQL", "every"], ["refreshed", "role"]),
            (60, ["PostgreSQL", "every", "refreshed"], ["role"]),
        ):
            await pilot.resize_terminal(width, 24)
            await pilot.pause(0.1)
            app.refresh_chrome()
            await pilot.pause(0.05)
            header = screen_text(app).splitlines()[0].rstrip()
            assert "db db-under-test" in header and "● connected" in header and not header.endswith("·")
            assert len(header) <= width, header
            for word in gone:
                assert word not in header, (width, header)
            for word in kept:
                assert word in header, (width, header)


async def test_a_pane_whose_objects_are_missing_says_why(make_app, conn):
    conn.execute("DROP VIEW IF EXISTS financial_processing_monitor CASCADE")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["monitor"].unavailable, what="monitor probe")
        await pilot.pause(0.05)
        text = screen_text(app)
        assert "not available on this database: financial_processing_monitor does not exist" in text
        assert "not available" in app.query_one("#pane-frame").border_subtitle


async def test_number_keys_switch_panes_and_each_title_shows_its_key(make_app):
    app = make_app(listen=False)
    async with app.run_test(size=SIZE) as pilot:
        for key, pane, title in (
            ("2", "backlog", "2 Backlog"),
            ("3", "quality", "3 Data quality"),
            ("4", "customers", "4 Customers"),
            ("5", "catalog", "5 Catalog & lineage"),
            ("6", "activity", "6 Activity"),
            ("1", "monitor", "1 Monitor"),
        ):
            if app.focused is not None and app.focused.__class__.__name__ == "Input":
                await pilot.press("escape")
            await pilot.press(key)
            await pilot.pause(0.05)
            assert app.current_pane == pane
            assert app.screen.query_one("#pane-frame").border_title == title


async def test_interval_keys_and_pause(make_app):
    app = make_app(listen=False, interval=2.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.connected)
        await pilot.press("plus")
        assert app.engine.interval == 1.0
        await pilot.press("minus", "minus")
        assert app.engine.interval == 5.0
        # the probe timeout stays below the interval
        assert app.engine.slot.timeout_ms == 4000
        await pilot.press("p")
        assert app.engine.paused
        await pilot.pause(0.1)
        assert "paused" in screen_text(app).splitlines()[0]
        ticks = app.engine.ticks
        await pilot.pause(1.3)
        assert app.engine.ticks == ticks  # nothing refreshes while paused
        await pilot.press("p")
        await wait_for(pilot, lambda: app.engine.ticks > ticks, what="a refresh after resuming")


async def test_question_mark_lists_every_binding(make_app):
    app = make_app(listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.connected)
        await pilot.press("question_mark")
        help_screen = await wait_screen(app, "HelpScreen")
        table = help_screen.query_one("#help-table").content
        shown = {(k, w) for k, w in zip(table.columns[1]._cells, table.columns[2]._cells, strict=True)}
        keys = {(r[1], r[2]) for r in app.help_rows()}
        assert keys == shown
        for expected in [
            ("?", "Help"),
            ("p", "Pause"),
            ("+", "Refresh more often"),
            ("-", "Refresh less often"),
            ("q", "Quit"),
            ("b", "Process one batch now"),
            ("c", "Start/stop continuous processing"),
            ("r", "Retry failed rows"),
            ("r", "Run all data-quality checks"),
            ("o", "Run one data-quality rule"),
            ("ctrl+r", "Refresh customer 360"),
            ("r", "Refresh the data catalog"),
            ("/", "Filter"),
            ("s", "Sort"),
            ("S", "Reverse sort"),
            ("e", "Export"),
            ("E", "Export JSON"),
            ("y", "Copy row"),
            ("⏎", "Details"),
        ]:
            assert expected in keys, expected
        await pilot.press("escape")
        assert app.screen is app.panes["monitor"]


async def test_help_shown_again_is_the_same_screen_until_its_rows_change(make_app):
    """P8: `?` composed the help and laid its long table out each time; the same rows show the kept
    screen again (from the top), and other rows (another role's actions) make a new one."""
    app = make_app(listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.connected)
        await pilot.press("question_mark")
        first = await wait_screen(app, "HelpScreen")
        first.query_one("#help-body").scroll_end(animate=False)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is not first, what="the help closed")
        await pilot.press("question_mark")
        again = await wait_screen(app, "HelpScreen")
        assert again is first
        await pilot.pause()
        assert again.query_one("#help-body").scroll_y == 0
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is not first, what="the help closed")
        rows = app.help_rows() + [("Monitor", "z", "Something new", "")]
        app.help_rows = lambda: rows
        await pilot.press("question_mark")
        other = await wait_screen(app, "HelpScreen")
        assert other is not first and other.rows == rows

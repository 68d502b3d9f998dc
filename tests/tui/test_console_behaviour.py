"""Behaviour: NOTIFY refreshes at once, the server going away and coming back, read-only mode,
missing privileges, probe timeouts, themes and the command palette."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import conninfo

from opsconsole.ops.registry import ACTIONS
from opsconsole.tui.widgets.keyed_table import KeyedTable
from tests.tui.helpers import SIZE, screen_text, table_rows, type_in, wait_for


async def test_notify_refreshes_the_affected_pane_without_waiting_for_the_timer(make_app, conn):
    app = make_app(start_pane="activity", interval=60.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["activity"].data is not None)
        await wait_for(pilot, lambda: app.listener.listening, what="LISTEN")
        assert table_rows(app, "#audit") == []
        conn.execute("SELECT record_audit('from_elsewhere', '{\"x\": 1}'::jsonb)")
        conn.execute('NOTIFY opsconsole_dq, \'{"event": "run_completed", "failed": 0}\'')
        rows = await wait_for(pilot, lambda: table_rows(app, "#audit"), timeout=5, what="the pushed refresh")
        assert rows[0][3] == "from_elsewhere"
        assert ("opsconsole_dq", '{"event": "run_completed", "failed": 0}') in app.notifications_seen


async def test_probes_run_with_a_statement_timeout_below_the_interval(make_app):
    app = make_app(interval=2.0, listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.connected)
        with app.engine.slot.lock:
            conn = app.engine.slot.get()
            timeout = conn.execute("SHOW statement_timeout").fetchone()[0]
            read_only = conn.execute("SHOW default_transaction_read_only").fetchone()[0]
        assert timeout == "1600ms" and read_only == "on"


async def test_server_gone_shows_a_banner_keeps_stale_data_and_recovers(make_app, conn, admin_dsn):
    conn.execute("SELECT record_audit('before_the_outage')")
    dbname = conn.info.dbname
    app = make_app(start_pane="activity", interval=1.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["activity"].data, what="data before the outage")
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            try:
                admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS false')
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND starts_with(application_name, 'opsconsole:')",
                    (dbname,),
                )
                await wait_for(pilot, lambda: app.engine.connected is False, what="the disconnect")
                await wait_for(pilot, lambda: app.engine.failures >= 2, timeout=10, what="a failed retry")
                app.refresh_chrome()
                await pilot.pause(0.1)
                text = screen_text(app)
                assert "disconnected, retrying in" in text
                assert "● disconnected" in text.splitlines()[0]
                assert "stale" in app.screen.query_one("#pane-frame").border_subtitle
                assert [r[3] for r in table_rows(app, "#audit")] == ["before_the_outage"]  # last data kept
            finally:
                admin.execute(f'ALTER DATABASE "{dbname}" WITH ALLOW_CONNECTIONS true')
        await wait_for(pilot, lambda: app.engine.connected, timeout=40, what="the reconnect")
        conn.execute("SELECT record_audit('after_the_outage')")
        await wait_for(pilot, lambda: len(table_rows(app, "#audit")) == 2, timeout=10, what="fresh data")
        app.refresh_chrome()
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "disconnected" not in text
        assert "stale" not in app.screen.query_one("#pane-frame").border_subtitle


async def test_read_only_hides_every_action_everywhere(make_app):
    app = make_app(read_only=True, listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.caps is not None)
        changing = [spec for spec in ACTIONS if spec.mutating]
        for spec in changing:
            assert not app.op_allowed(spec.id)
            assert spec.unavailable_reason(app.caps, True) == "the console runs read-only (--read-only)"
        assert app.op_allowed("what_if")  # a read (validators in a read-only transaction) stays
        for key, pane in (("1", "monitor"), ("2", "backlog"), ("3", "quality"), ("5", "catalog")):
            await pilot.press(key)
            await pilot.pause(0.1)
            footer = screen_text(app).splitlines()[-1]
            for spec in changing:
                if pane in spec.panes:
                    assert spec.label not in footer, (pane, spec.label, footer)
            assert "Help" in footer
        await pilot.press("1", "b")  # the process-batch key does nothing
        await pilot.pause(0.2)
        assert app.screen is app.panes["monitor"]
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert not titles & {spec.title for spec in changing}
        assert "read-only" in screen_text(app).splitlines()[0]
        help_states = {what: state for _, _, what, state in app.help_rows()}
        assert help_states["Retry failed rows"] == "unavailable: the console runs read-only (--read-only)"


async def test_missing_privileges_disable_actions_and_panes_with_the_reason(admin_dsn, db_dsn, conn):
    role = f"oc_viewer_{uuid.uuid4().hex[:8]}"
    conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        conn.execute(f'GRANT SELECT ON ops_audit_log TO "{role}"')
        conn.execute(
            "REVOKE EXECUTE ON FUNCTION record_audit(text, jsonb, jsonb, text, numeric, text) FROM PUBLIC"
        )
        from opsconsole.tui.app import OpsConsoleApp

        app = OpsConsoleApp(conninfo.make_conninfo(db_dsn, user=role), database_label="test", listen=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.caps is not None)
            assert app.caps.role == role
            for spec in ACTIONS:
                reason = spec.unavailable_reason(app.caps, False)
                assert reason is not None and not app.op_allowed(spec.id)
                # an action needs EXECUTE; a read (what if) needs SELECT on what it reads
                assert (
                    "lacks EXECUTE" in reason
                    or "does not exist" in reason
                    or (not spec.mutating and "lacks SELECT" in reason)
                ), reason
            reason = app.actions_reason("retry_failed")
            assert f"role {role} lacks" in reason or "does not exist" in reason
            await pilot.press("6")
            await wait_for(pilot, lambda: app.panes["activity"].data is not None, what="the audit pane")
            await pilot.press("2")
            await wait_for(pilot, lambda: app.panes["backlog"].unavailable, what="the backlog probe")
            assert (
                f"role {role} lacks SELECT on financial_transactions_staging"
                in app.panes["backlog"].unavailable
                or "does not exist" in app.panes["backlog"].unavailable
            )
    finally:
        conn.execute(f'DROP OWNED BY "{role}"')
        conn.execute(f'DROP ROLE "{role}"')


async def test_customer_search_as_you_type(make_app, conn):
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone) VALUES"
        " (1, 'Ada', 'Lovelace', 'ada@example.com', '+441234'),"
        " (2, 'Grace', 'Hopper', 'grace@example.com', '+15551'),"
        " (3, 'Adam', 'Smith', 'adam@example.com', '+15552')"
    )
    app = make_app(start_pane="customers", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["customers"].data is not None)
        # number keys still switch panes on arrival (the results have the focus, not the search box)
        assert isinstance(app.focused, KeyedTable)
        await type_in(pilot, "Lovelace")
        rows = await wait_for(
            pilot,
            lambda: (
                [r for r in table_rows(app, "#results")]
                if app.panes["customers"].data.q == "Lovelace"
                else None
            ),
            what="search results",
        )
        assert [(r[0], r[1], r[2]) for r in rows] == [("1", "Ada Lovelace", "ada@example.com")]
        await pilot.press(*["backspace"] * 8, *"grace@")
        rows = await wait_for(
            pilot, lambda: table_rows(app, "#results") if app.panes["customers"].data.q == "grace@" else None
        )
        assert [r[0] for r in rows] == ["2"]
        await pilot.press("escape", "enter")
        await wait_for(pilot, lambda: getattr(app.screen, "data", None) is not None, what="customer detail")
        text = screen_text(app)
        assert "Grace Hopper" in text and "grace@example.com" in text


@pytest.mark.parametrize("theme", ["textual-light", "nord"])
async def test_themes_apply_to_the_console(make_app, conn, theme):
    conn.execute("SELECT record_audit('themed', '{}'::jsonb, NULL, 'error')")
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["activity"].data)
        app.engine.set_paused(True)  # the new colours must come from the theme change itself
        await wait_for(pilot, lambda: not app.engine.in_flight)
        app.theme = theme
        want = str(app.current_theme.error)

        def status_style() -> str:
            return str(app.screen.query_one("#audit").get_row_at(0)[5].style)

        # the rows are restyled on the loop after the theme change (a fixed pause missed it under load)
        await wait_for(pilot, lambda: status_style().endswith(want), what=f"the error colour {want}")
        assert status_style().endswith(want)


async def test_the_palette_offers_every_action_and_says_why_one_is_unavailable(make_app, conn):
    conn.execute("DROP FUNCTION IF EXISTS retry_failed CASCADE")
    app = make_app(listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.caps is not None)
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        for spec in ACTIONS:
            assert spec.title in commands
        assert commands["Retry failed rows"].startswith("unavailable: retry_failed() does not exist")
        assert "Go to Backlog (2)" in commands

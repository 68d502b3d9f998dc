"""Keys rebound by binding id, the theme remembered between runs, and the command palette switching to
another profile's database without a restart; the real console against real databases."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import psycopg
from psycopg import conninfo

from tests.tui.helpers import SIZE, table_rows, wait_for
from tools import sample
from tools.drive import wait_loaded, wait_screen


async def test_a_rebound_key_runs_the_action_and_the_old_key_does_not(make_app, conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    app = make_app(start_pane="backlog", listen=False, keymap={"backlog.retry_failed": "R"})
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        await pilot.press("r")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "BacklogScreen"
        await pilot.press("R")
        await wait_screen(app, "ChoiceScreen")


async def test_the_theme_is_remembered_for_the_next_run(make_app, tmp_path: Path, monkeypatch):
    state = tmp_path / "console.json"
    monkeypatch.setenv("OPSCONSOLE_STATE", str(state))
    app = make_app(listen=False, remember_choices=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.engine.connected)
        app.theme = "nord"
        await pilot.pause(0.1)
    assert json.loads(state.read_text())["theme"] == "nord"
    again = make_app(listen=False, remember_choices=True)
    async with again.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: again.engine.connected)
        assert again.theme == "nord"


async def test_the_palette_switches_profile_and_the_panes_follow(
    make_app, conn, db_dsn, admin_dsn, template_db, tmp_path: Path, monkeypatch
):
    other = f"opsconsole_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'CREATE DATABASE "{other}" TEMPLATE "{template_db}" STRATEGY FILE_COPY')
    other_dsn = conninfo.make_conninfo(admin_dsn, dbname=other)
    try:
        with psycopg.connect(other_dsn, autocommit=True) as o:
            sample.seed_staging(o, dt.datetime.now(dt.UTC))  # only the other database has a backlog
        config = tmp_path / "config.toml"
        config.write_text(
            f'[profiles.staging]\ndsn = "{other_dsn}"\n[profiles.broken]\ndsn = "postgresql:///no_such_db_x"\n'
        )
        monkeypatch.setenv("OPSCONSOLE_CONFIG", str(config))
        app = make_app(start_pane="backlog", listen=False)
        app.oncall.interval = 0.2
        async with app.run_test(size=SIZE) as pilot:
            await wait_loaded(app, "backlog")
            await pilot.pause(0.5)  # the watcher has polled this database
            assert table_rows(app, "#rows") == []
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert "Switch to profile staging" in titles and "Switch to profile broken" in titles

            app.switch_profile("broken")  # what the palette's command calls
            refused = lambda: any(n.startswith("Profile broken: ") for n in app.notices)  # noqa: E731
            await wait_for(pilot, refused, what="the refusal", timeout=20)
            assert any(n.endswith("Still on test.") for n in app.notices)
            assert app.dsn == db_dsn

            await pilot.press("ctrl+p")
            await pilot.press(*"Switch to profile staging")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.profile == "staging", what="the switch")
            await wait_for(
                pilot, lambda: len(table_rows(app, "#rows")) == 11, what="the other database's rows"
            )
            assert app.dsn == other_dsn
            # nothing of the console stays on the database it left: no refresh connection, and no
            # on-call poll that would still read it (and ring for its incidents) every few seconds
            await pilot.pause(1.0)  # the first watcher polls every 0.2 s (below)
            left = conn.execute(
                "SELECT array_agg(application_name ORDER BY application_name) AS apps FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'opsconsole:console%'"
            ).fetchone()["apps"]
            assert left is None
            header = str(app.screen.query_one("StatusHeader").render())
            assert "staging (" in header
            assert "Switch to profile staging" not in [c.title for c in app.get_system_commands(app.screen)]
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as a:
            a.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')

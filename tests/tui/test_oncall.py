"""The console's on-call cues (tui/oncall.py): bell and desktop notification once per incident."""

from __future__ import annotations

import asyncio

import pytest

from opsconsole.config import ConsoleSettings, console_settings
from opsconsole.errors import ConfigProblem
from opsconsole.ops import dq
from opsconsole.ops import pipeline as ops
from opsconsole.tui.oncall import IncidentEdges, escape_sequences
from tests.health_helpers import fail_critical_dq_rule, stage
from tests.tui.helpers import SIZE, wait_for


def test_an_incident_starts_once_and_ends_only_after_it_stayed_away():
    edges = IncidentEdges(clear_after=3)
    assert edges.update([]) == []
    assert edges.update(["sla_breach"]) == ["sla_breach"]
    assert edges.update(["sla_breach"]) == []  # the next refresh: same incident, no new call
    assert edges.update(["sla_breach", "dq:a"]) == ["dq:a"]  # another incident starts on its own
    assert edges.update(["dq:a"]) == []  # the breach flickers away ...
    assert edges.update(["sla_breach", "dq:a"]) == []  # ... and back: still the same incident
    for _ in range(3):
        assert edges.update(["dq:a"]) == []
    assert edges.open == {"dq:a"}  # absent three times in a row: the breach is over
    assert edges.update(["sla_breach", "dq:a"]) == ["sla_breach"]  # a new breach is a new incident


def test_escape_sequences_bell_by_default_osc_when_configured():
    msg = "Critical DQ rule r1 on t fails; see pane 3\x1b[2J"
    assert escape_sequences(msg, ConsoleSettings()) == "\a"
    assert escape_sequences(msg, ConsoleSettings(bell=False)) == ""
    osc9 = escape_sequences(msg, ConsoleSettings(desktop_notifications="osc9"))
    assert osc9 == "\a\x1b]9;opsconsole: Critical DQ rule r1 on t fails  see pane 3 [2J\a"
    osc777 = escape_sequences(msg, ConsoleSettings(bell=False, desktop_notifications="osc777"))
    assert osc777 == "\x1b]777;notify;opsconsole;Critical DQ rule r1 on t fails  see pane 3 [2J\a"


def test_console_settings_come_from_the_config_file(tmp_path):
    path = tmp_path / "config.toml"
    env = {"OPSCONSOLE_CONFIG": str(path)}
    assert console_settings(env) == ConsoleSettings(bell=True, desktop_notifications="off")  # no file
    path.write_text('[console]\ndesktop_notifications = "osc777"\nbell = false\n')
    assert console_settings(env) == ConsoleSettings(bell=False, desktop_notifications="osc777")
    path.write_text('[console]\ndesktop_notifications = "yes"\n')
    with pytest.raises(
        ConfigProblem, match="desktop_notifications must be one of off, osc9, osc777, not 'yes'"
    ):
        console_settings(env)


async def poll(app) -> None:
    """One on-call poll, waited for (its thread, then its result on the UI thread)."""
    while app.oncall.busy:  # the poll the console started by itself
        await asyncio.sleep(0.02)
    thread = app.oncall.poll()
    assert thread is not None
    await asyncio.to_thread(thread.join, 15)


async def test_the_console_calls_once_when_a_critical_dq_failure_and_an_sla_breach_start(make_app, conn):
    written: list[str] = []
    app = make_app(listen=False)
    app.oncall.write = written.append
    app.oncall.settings = ConsoleSettings(desktop_notifications="osc777")
    app.oncall.interval = 3600  # the test polls by hand
    async with app.run_test(size=SIZE) as pilot:
        await poll(app)
        assert app.oncall.alerted == [] and written == []  # a healthy platform: silence

        fail_critical_dq_rule(conn)
        await poll(app)
        await poll(app)  # the next refreshes see the same failure: no second call
        await poll(app)
        assert app.oncall.alerted == [
            "Critical DQ rule customer_email_not_null on crm_customers fails (pane 3 Data quality)."
        ]
        assert written == [
            "\a\x1b]777;notify;opsconsole;Critical DQ rule customer_email_not_null on crm_customers fails "
            "(pane 3 Data quality).\a"
        ]

        stage(conn, 1, 20, ago="30 seconds")  # processed 30 s after ingestion: every row breaches
        ops.process_batch(conn, 100)
        await poll(app)
        await poll(app)
        assert len(app.oncall.alerted) == 2 and app.oncall.alerted[1].startswith("SLA breach: 100.0% of")

        # the rule passes again: after it stayed fixed for a few refreshes, a new failure calls again
        conn.execute("UPDATE crm_customers SET email = 'x@y.z'")
        dq.run_checks(conn, rule="customer_email_not_null")
        for _ in range(3):
            await poll(app)
        assert "dq:customer_email_not_null" not in app.oncall.edges.open
        conn.execute("UPDATE crm_customers SET email = NULL")
        dq.run_checks(conn, rule="customer_email_not_null")
        await poll(app)
        assert len(app.oncall.alerted) == 3 and app.oncall.alerted[2].startswith("Critical DQ rule")
        await wait_for(pilot, lambda: app.panes["monitor"].data is not None)


async def test_an_open_console_holds_three_connections_and_closes_them_when_it_closes(make_app, conn):
    """Fifty consoles at an incident hold 150 connections, not 200: the on-call poll is a background
    read on the refresh engine's connection, not one of its own."""
    app = make_app(start_pane="monitor")  # LISTEN on, as `opsconsole console` runs
    app.oncall.interval = 3600  # the test polls by hand
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["monitor"].data is not None and app.listener.listening)
        await poll(app)
        await app.lookup_async(lambda c: c.execute("SELECT 1"))
        apps = conn.execute(
            "SELECT array_agg(application_name ORDER BY application_name) AS apps FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'opsconsole:%'"
        ).fetchone()["apps"]
        assert apps == ["opsconsole:console", "opsconsole:console-lookup", "opsconsole:listen"]
        assert app.oncall.slot is app.engine.slot
    # closed with the console (the app object is still referenced here, so no collector closed them)
    for _ in range(100):
        left = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'opsconsole:%'"
        ).fetchone()["n"]
        if left == 0:
            break
        await asyncio.sleep(0.05)
    assert left == 0 and app.engine.slot.backend_pid is None

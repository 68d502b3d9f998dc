"""The Backlog's operator controls and the fleet's pause switch, driven through the real console against
the real database: retry exactly what the filter shows, what if, park and bring back, pause/resume shown
in every pane's header."""

from __future__ import annotations

import datetime as dt

import psycopg

from tests.tui.helpers import SIZE, statics_text, table_rows, type_in, wait_for
from tests.tui.test_console_roles import role_dsn as role_dsn  # noqa: F401, F811  (a fixture)
from tests.tui.test_panes_and_actions import audit, confirm, job_done
from tools import sample
from tools.drive import wait_loaded, wait_screen


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT processing_status AS s, count(*) AS n FROM financial_transactions_staging GROUP BY 1"
    ).fetchall()
    return {r["s"]: r["n"] for r in rows}


async def test_retry_what_the_filter_shows_with_its_count_and_what_if(make_app, conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    conn.execute("INSERT INTO financial_transaction_types (transaction_type) VALUES ('bogus')")
    app = make_app(start_pane="backlog", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        await type_in(pilot, "unknown")
        await wait_loaded(app, "backlog", lambda d: d.filter == "unknown")
        shown = {r[1] for r in table_rows(app, "#rows")}
        assert len(shown) == 3
        await pilot.press("enter")  # the filter box gives the focus back to the rows
        await pilot.press("r")
        choice = await wait_screen(app, "ChoiceScreen")
        first = choice.query_one("#choices").get_option_at_index(0)
        assert first.id == "filter"
        assert "what the filter 'unknown' shows (3 failed or dead-lettered; parked rows stay)" in str(
            first.prompt
        )
        await pilot.press("enter")  # the first option: what the filter shows
        screen = await wait_screen(app, "ConfirmScreen")
        text = statics_text(screen)
        assert "Retry [b]3[/] failed and dead-lettered rows the filter 'unknown' shows" in text
        assert "What if: [b]3 of 3[/] would pass validation now" in text  # the type is known now
        await pilot.press("tab", "enter")
        job = await job_done(app, pilot, "retry_failed")
        assert job.message == "re-queued 3 rows"
    requeued = conn.execute(
        "SELECT staging_id FROM financial_transactions_staging WHERE processing_status = 'pending'"
        " AND requeue_count = 1"
    ).fetchall()
    assert {str(r["staging_id"]) for r in requeued} == shown
    [row] = audit(conn, "retry_failed")
    assert row["arguments"]["filter"] == "unknown" and row["result"] == {"requeued": 3}


async def test_what_if_key_shows_counts_by_code_and_changes_nothing(make_app, conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    before = statuses(conn)
    app = make_app(start_pane="backlog", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        await type_in(pilot, "b-03")
        await wait_loaded(app, "backlog", lambda d: d.filter == "b-03")
        await pilot.press("enter", "w")
        detail = await wait_screen(app, "DetailScreen")
        text = statics_text(detail)
        assert "What if: [b]0 of 11[/] would pass validation now" in text
        assert "order_not_found 6" in text and "unknown_type 3" in text and "missing_field 2" in text
    assert statuses(conn) == before
    assert audit(conn) == []  # a read: no audit row


async def test_park_a_dead_letter_and_bring_it_back(make_app, conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    app = make_app(start_pane="backlog", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        await type_in(pilot, "missing_field")
        await wait_loaded(app, "backlog", lambda d: d.filter == "missing_field")
        await pilot.press("enter", "k")
        screen = await wait_screen(app, "ConfirmScreen")
        assert "Park [b]2[/] dead-lettered rows (the rows the filter 'missing_field' shows)" in statics_text(
            screen
        )
        await pilot.press("tab", "enter")
        job = await job_done(app, pilot, "park_dead_letters")
        assert job.message == "parked 2 rows"
        await wait_loaded(app, "backlog", lambda d: any(r["processing_status"] == "parked" for r in d.rows))
        assert {r[2] for r in table_rows(app, "#rows")} == {"parked"}
        assert "parked               2" in str(app.screen.query_one("#backlog-summary").render())
        assert statuses(conn)["parked"] == 2

        # the cursor row only, with no selection and no filter
        await pilot.press("escape")
        await wait_loaded(app, "backlog", lambda d: d.filter is None)
        await type_in(pilot, "parked")
        await wait_loaded(app, "backlog", lambda d: d.filter == "parked")
        await pilot.press("enter", "u")
        await confirm(app, pilot)
        job = await job_done(app, pilot, "unpark_dead_letters")
        assert job.message == "brought back 2 rows"
    assert "parked" not in statuses(conn)
    assert [(r["status"], r["result"]) for r in audit(conn, "park_dead_letters")] == [("ok", {"parked": 2})]
    assert [(r["status"], r["result"]) for r in audit(conn, "unpark_dead_letters")] == [
        ("ok", {"unparked": 2})
    ]


async def test_fleet_pause_shows_in_every_header_and_resumes(make_app, conn):
    app = make_app(start_pane="monitor", listen=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await pilot.press("P")
        screen = await wait_screen(app, "ConfirmScreen")
        assert "Pause processing for [b]every worker[/]" in statics_text(screen)
        await pilot.press("tab", "enter")
        await job_done(app, pilot, "fleet_pause")
        assert conn.execute("SELECT paused FROM pipeline_fleet_control").fetchone()["paused"] is True

        def header() -> str:
            return str(app.screen.query_one("StatusHeader").render())

        await wait_for(pilot, lambda: "PROCESSING PAUSED" in header(), what="the header to show the pause")
        await pilot.press("2")  # another pane: the same header
        await wait_loaded(app, "backlog")
        await wait_for(pilot, lambda: "PROCESSING PAUSED" in header(), what="the backlog header")

        # paused from elsewhere (the CLI) is seen too; here: resumed from elsewhere
        conn.execute("SELECT resume_processing('from the shell')")
        await wait_for(pilot, lambda: "PROCESSING PAUSED" not in header(), what="the header to clear")
    actions = [r["action"] for r in audit(conn) if r["action"] in ("pause_processing", "resume_processing")]
    assert actions == ["pause_processing", "resume_processing"]


async def test_a_viewer_sees_the_pause_but_may_not_pause_park_or_retry(make_app, conn, role_dsn):  # noqa: F811
    conn.execute("SELECT pause_processing('maintenance window')")
    app = make_app(dsn=role_dsn("opsconsole_viewer"), start_pane="backlog", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        await wait_for(
            pilot,
            lambda: "PROCESSING PAUSED" in str(app.screen.query_one("StatusHeader").render()),
            what="the pause in a viewer's header",
        )
        role = app.caps.role
        assert app.actions_reason("fleet_pause") == f"role {role} lacks EXECUTE on pause_processing()"
        assert app.actions_reason("park_dead_letters") == f"role {role} lacks EXECUTE on park_dead_letters()"
        await pilot.press("P", "k")
        await pilot.pause(0.3)
        assert type(app.screen).__name__ == "BacklogScreen"  # no dialog: the keys are not offered
    assert conn.execute("SELECT paused FROM pipeline_fleet_control").fetchone()["paused"] is True


async def test_a_refresh_with_the_same_rows_only_ticks_next_try(make_app, conn):
    """P8: the Backlog re-synced its up to 500 rows every refresh for the "next try" countdown; with
    the same rows it now updates only the countdown cells whose text changed, and a changed row (or
    selection) still syncs the list."""
    from textual.widgets import DataTable

    from opsconsole.tui.clock import FrozenClock

    now = dt.datetime.now(dt.UTC)
    sample.seed_staging(conn, now)
    conn.execute(
        "UPDATE financial_transactions_staging SET next_attempt_at = %s WHERE processing_status = 'failed'",
        (now + dt.timedelta(minutes=5),),
    )
    clock = FrozenClock(now)
    app = make_app(start_pane="backlog", listen=False, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        screen = app.panes["backlog"]
        table = screen.query_one("#rows", DataTable)
        failed = [r for r in screen.data.rows if r["processing_status"] == "failed"]
        assert failed, "the sample has failed rows"
        key = str(failed[0]["staging_id"])
        assert table.get_cell(key, "next").plain == "in 5m"
        before = {k.value: list(table.get_row(k)) for k in table.rows}
        built: list[int] = []  # the rows whose cells the pane builds for a sync of the list
        row_cells = screen._row_cells
        screen._row_cells = lambda r: (built.append(r["staging_id"]), row_cells(r))[1]

        clock.anchor = now + dt.timedelta(seconds=100)  # 3m 20s left
        screen.render_data(screen.data)
        await pilot.pause()
        after = {k.value: list(table.get_row(k)) for k in table.rows}
        assert table.get_cell(key, "next").plain == "in 3m 20s"
        assert built == []  # no row was built again, the list was not synced
        columns = [c.key.value for c in table.ordered_columns]
        at = columns.index("next")
        for k, cells in after.items():  # every other cell is the object it was: nothing re-synced
            assert all(a is b for i, (a, b) in enumerate(zip(cells, before[k], strict=True)) if i != at), k

        screen.selected.add(int(key))  # a selection changes a row's marker: a full sync again
        screen.render_data(screen.data)
        await pilot.pause()
        assert table.get_cell(key, "sel").plain == "●"
        assert len(built) == len(screen.data.rows)

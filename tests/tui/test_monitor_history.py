"""The Monitor at work and in review, the Timeline, and the demo's scenarios, against the real database:
the time cursor walks the rollup history minute by minute, workers/failures/drain come from what the
pipeline really did, a healthy hour raises no alarm, and the timeline puts every kind of change on one
axis, filterable, with operator actions as the Activity pane shows them."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading

import psycopg
from psycopg.rows import dict_row

from opsconsole.datagen import scenarios
from opsconsole.ops import pipeline
from tests.tui.helpers import SIZE, table_rows, type_in, wait_for
from tests.tui.test_panes_and_actions import seed_orders, stage
from tools.drive import wait_loaded


def minutes_of(conn: psycopg.Connection, since: str, until: str | None) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM financial_processing_minutes(" + since + ", " + (until or "NULL") + ")"
        ).fetchall()


def write_minutes(conn: psycopg.Connection, minutes: list[dict]) -> None:
    rollups = json.dumps([m["rollup"] for m in minutes])
    conn.execute("SELECT financial_rollup_minutes_apply(%s::jsonb)", (rollups,))
    conn.execute(
        "SELECT financial_latency_apply(%s::jsonb)", (json.dumps([h for m in minutes for h in m["latency"]]),)
    )


def db_now(conn: psycopg.Connection) -> dt.datetime:
    return conn.execute("SELECT now() AS n").fetchone()["n"]


# -- the view and the function are one definition ----


def test_the_monitor_view_is_the_last_hour_of_the_minutes_function(conn):
    now = db_now(conn)
    write_minutes(conn, scenarios.healthy_minutes(now, 50, seed=3, minutes=150))
    view = conn.execute("SELECT * FROM financial_processing_monitor").fetchall()
    assert 59 <= len(view) <= 61
    assert view == minutes_of(conn, "now() - interval '1 hour'", None)
    older = minutes_of(conn, "now() - interval '150 minutes'", "now() - interval '90 minutes'")
    assert len(older) in (60, 61) and all(r["sla_breach_rate"] == 0 for r in older)


# -- the time cursor ----


async def test_the_time_cursor_steps_back_through_the_rollup_history(make_app, conn):
    now = db_now(conn)
    write_minutes(conn, scenarios.healthy_minutes(now, 20, seed=5, minutes=180))
    breach_minute = (now - dt.timedelta(minutes=150)).replace(second=0, microsecond=0)
    # that minute, long past: half of its rows took longer than the SLA
    conn.execute(
        "SELECT financial_rollup_minutes_apply(%s::jsonb)",
        (json.dumps([{"minute_bucket": breach_minute.isoformat(), "sla_breaches": 900}]),),
    )
    app = make_app(start_pane="monitor", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.panes["monitor"]
        await wait_loaded(app, "monitor", timeout=45)
        assert screen.cursor is None and not screen.has_class("-review")
        assert not app.screen.query_one("#pane-frame").has_class("-breach")  # the live hour is healthy
        newest = screen.data.span["now"].replace(second=0, microsecond=0)

        await pilot.press("left_square_bracket")
        assert screen.cursor == newest - dt.timedelta(minutes=1)
        await pilot.press("left_curly_bracket", "left_curly_bracket", "left_curly_bracket")
        for _ in range(9):
            await pilot.press("left_curly_bracket")
        target = newest - dt.timedelta(minutes=121)
        assert screen.cursor == target
        await wait_for(pilot, lambda: screen.data.until == target, what="the review window")
        shown = table_rows(app, "#minutes")
        expected = minutes_of(
            conn, f"'{target.isoformat()}'::timestamptz - interval '1 hour'", f"'{target.isoformat()}'"
        )
        assert [r[0] for r in shown] == [app.clock.time(m["minute_bucket"], seconds=False) for m in expected]
        assert shown[0][0] == app.clock.time(target, seconds=False)  # the cursor's minute on top
        review = str(app.screen.query_one("#review").render())
        assert f"review {app.clock.time(target, seconds=False)}" in review
        assert re.search(r"2h [12]m back", review)  # (a minute may turn while the test runs)
        assert screen.has_class("-review")
        # the breach 150 minutes ago is in this window: its row is marked, the live alarm is not raised
        breach_row = next(r for r in shown if r[0] == app.clock.time(breach_minute, seconds=False))
        assert float(breach_row[8]) > 5
        assert not app.screen.query_one("#pane-frame").has_class("-breach")

        await pilot.press("right_square_bracket")
        assert screen.cursor == target + dt.timedelta(minutes=1)
        await pilot.press("home")
        oldest = conn.execute("SELECT min(minute_bucket) AS m FROM financial_processing_rollup").fetchone()[
            "m"
        ]
        assert screen.cursor == oldest
        await wait_for(pilot, lambda: screen.data.until == oldest, what="the oldest window")
        assert len(table_rows(app, "#minutes")) == 1
        await pilot.press("end")
        assert screen.cursor is None and not screen.has_class("-review")
        await wait_for(pilot, lambda: screen.data.until is None, what="live again")


# -- workers, failures, drain ----


async def test_the_monitor_shows_each_worker_failures_by_code_and_a_drain_estimate(make_app, conn):
    seed_orders(conn)
    stage(conn, 40)  # valid payments for order 1
    stage(conn, 6, first_id=500, order_id=777)  # an order that does not exist: order_not_found
    worker = psycopg.connect(conn.info.dsn, application_name="opsconsole:worker-7", autocommit=True)
    # the same worker's maintenance loop, idle: its name is longer than the column
    maintenance = psycopg.connect(conn.info.dsn, application_name="opsconsole:worker-maintenance")
    try:
        pipeline.process_batch(worker, 1000, worker="worker-7")
        stage(conn, 25, first_id=900)  # waiting for the next claim
        app = make_app(start_pane="monitor", listen=False)
        async with app.run_test(size=(200, 60)):
            await wait_loaded(app, "monitor", timeout=45)
            workers = table_rows(app, "#workers")  # the claim loops first, then maintenance
            assert len(workers) == 2
            # cut from its start, the part that tells the loops apart stays
            assert workers[1][0] == "…intenance" and workers[1][3] == "—"  # it claims nothing
            name, who, since, rate, chunk = workers[0]
            assert name == "worker-7" and who == conn.info.user
            assert int(rate.replace(",", "")) == round(46 / 60)  # 46 rows claimed in the last minute
            assert chunk.startswith("idle · last 46 rows")
            codes = {r[0]: r[1:] for r in table_rows(app, "#codes")}
            assert codes["order_not_found"] == ["6", "0"]
            kpi = str(app.screen.query_one("#kpi").render())
            assert "backlog 31 (25 pending, 6 retrying" in kpi
            # 46 claimed and 71 arrived since the previous minute began: the backlog is not draining
            assert "drain not draining" in kpi
            # the maintenance loop is shown, not counted: it processes nothing
            label = str(app.screen.query_one("#workers-label").render())
            assert "workers 1 (0 busy) + maintenance" in label
    finally:
        worker.close()
        maintenance.close()


def test_the_drain_estimate_is_the_waiting_rows_over_the_net_pace(conn, db_dsn):
    seed_orders(conn)
    stage(conn, 30)
    with psycopg.connect(db_dsn, autocommit=True) as ops_conn:
        pipeline.process_batch(ops_conn, 1000)
    estimate = pipeline.drain_estimate(conn, waiting=0)
    assert estimate.seconds_left == 0
    assert estimate.claimed_per_min > 0 and estimate.claimed_per_min == estimate.arrived_per_min
    assert pipeline.DrainEstimate(600, 300.0, 100.0).seconds_left == 180
    assert pipeline.DrainEstimate(600, 100.0, 300.0).seconds_left is None


# -- the demo opens healthy ----


async def test_the_demo_history_is_an_hour_in_sla_with_no_alarm(make_app, conn):
    first = scenarios.play_history(conn, rate=200, seed=1)
    assert first["minutes_written"] == 60
    again = scenarios.play_history(conn, rate=200, seed=1)
    assert again["minutes_written"] == 0  # minutes holding data are kept as they are
    audit = conn.execute(
        "SELECT count(*) AS n FROM ops_audit_log WHERE action = 'simulate_history'"
    ).fetchone()
    assert audit["n"] == 2
    app = make_app(start_pane="monitor", listen=False)
    async with app.run_test(size=(80, 24)):
        await wait_loaded(app, "monitor", timeout=45)
        screen = app.panes["monitor"]
        assert len(screen.data.live) >= 55  # (a minute or two may turn while the console starts)
        assert all(float(r["sla_breach_rate"]) == 0 for r in screen.data.live)
        assert max(r["p95_processing_ms"] for r in screen.data.live) < 1000
        assert not app.screen.query_one("#pane-frame").has_class("-breach")
        assert not any(n.startswith("SLA breach") for n in app.notices)
        assert sum(app.screen.query_one("#tp-spark").data) == sum(
            r["processed_count"] for r in screen.data.live
        )


def test_the_seeds_backfill_is_no_sla_breach(db_dsn, conn):
    from opsconsole.datagen import seed as seeding

    seeding.seed(db_dsn, seeding.SeedPlan(customers=50, seed=1, backlog=0))
    rows = conn.execute("SELECT * FROM financial_processing_monitor").fetchall()
    assert sum(r["processed_count"] for r in rows) > 0  # the backfill is counted ...
    assert all(r["sla_breach_rate"] == 0 for r in rows)  # ... but its wait for the load is no breach
    pending = conn.execute(
        "SELECT count(*) AS n FROM financial_transactions_staging WHERE processing_status = 'pending'"
    ).fetchone()
    assert pending["n"] == 0  # --backlog 0: nothing waits for the first worker


# -- the timeline ----


async def test_the_timeline_puts_every_kind_on_one_axis_and_filters(make_app, conn, db_dsn):
    seed_orders(conn)
    stage(conn, 10, ingested_ago_s=5)  # processed 5 s after ingestion: an SLA-breach minute
    with psycopg.connect(db_dsn, autocommit=True) as ops_conn:  # ops/ reads tuples
        pipeline.process_batch(ops_conn, 100)
        stage(conn, 3, first_id=300, order_id=4242)
        pipeline.process_batch(ops_conn, 100)  # order_not_found: failed rows to retry
        pipeline.retry(ops_conn, error_code="order_not_found", reason="incident review")  # an operator action
    conn.execute("SELECT * FROM search_customers('Lovelace')")  # audited with the text masked
    conn.execute(
        "INSERT INTO data_quality_metrics (source_table, metric_name, status, severity, total_rows,"
        " failed_rows, message) VALUES ('erp_orders', 'orders_amount_positive', 'fail', 'error', 10, 2, NULL)"
    )
    conn.execute("ALTER TABLE crm_customers ADD COLUMN loyalty_tier text")  # a schema change
    conn.execute("SELECT refresh_data_catalog()")  # the catalog sees the new column
    app = make_app(start_pane="timeline", listen=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_loaded(app, "timeline", timeout=45)
        screen = app.panes["timeline"]
        assert (screen.unavailable, screen.fetch_error) == (None, None)
        rows = table_rows(app, "#events")
        kinds = {r[1] for r in rows}
        assert kinds >= {"SLA breach", "data quality", "schema change", "catalog", "operator action"}
        when = [e.occurred_at for e in screen.shown_events(screen.data)]
        assert when == sorted(when, reverse=True)  # one axis, newest first
        assert any(
            r[2] == "public.crm_customers" and "loyalty_tier" in r[3] for r in rows if r[1] == "catalog"
        )
        assert any("orders_amount_positive" in r[2] and "2 of 10 rows failed" in r[3] for r in rows)
        assert any(r[2].startswith("retry_failed by ") for r in rows)
        assert not any("Lovelace" in " ".join(r) for r in rows)  # the search text is masked ...
        activity = conn.execute(
            "SELECT arguments FROM ops_audit_log WHERE action = 'search_customers' ORDER BY audit_id DESC"
        ).fetchone()
        search = next(r for r in rows if r[2].startswith("search_customers by "))
        for value in activity["arguments"].values():  # ... exactly as the Activity pane's read has it
            if value not in (None, "", [], {}):
                assert str(value) in search[3]

        await pilot.press("k")  # SLA breaches only
        await wait_for(pilot, lambda: {r[1] for r in table_rows(app, "#events")} == {"SLA breach"})
        await pilot.press("k", "k", "k", "k")  # data quality, schema, catalog, operator actions
        assert screen.kind == "action"
        await wait_for(pilot, lambda: {r[1] for r in table_rows(app, "#events")} == {"operator action"})
        await pilot.press("k")  # all again
        assert screen.kind is None
        await type_in(pilot, "loyalty")
        await wait_for(pilot, lambda: len(table_rows(app, "#events")) == 2, what="the text filter")
        assert {r[1] for r in table_rows(app, "#events")} == {"catalog", "schema change"}
        assert "filter “loyalty”" in str(app.screen.query_one("#pane-frame").border_title)
        await pilot.press("s")  # the list sorts by its first column, the time
        shown = [r[0] for r in table_rows(app, "#events")]
        assert shown == sorted(shown)
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(table_rows(app, "#events")) == len(rows))


# -- the incident scenario ----


def test_the_incident_stalls_the_pipeline_then_drains_it_and_leaves_its_story(db_dsn, conn):
    from opsconsole.datagen import seed as seeding
    from opsconsole.pipeline.worker import Worker

    seeding.seed(db_dsn, seeding.SeedPlan(customers=50, seed=1, backlog=0))
    worker = Worker(db_dsn, concurrency=1)
    worker.start()
    lines: list[str] = []
    try:
        report = scenarios.play_incident(db_dsn, hold=4.0, rate=150.0, tail=4.0, say=lines.append,
                                         stop=threading.Event())  # fmt: skip
    finally:
        worker.stop()
        worker.join(30)
    assert report["traffic"]["staging_rows"] > 500
    breaches = conn.execute(
        "SELECT coalesce(sum(sla_breaches), 0) AS n FROM financial_processing_rollup"
    ).fetchone()
    assert breaches["n"] > 0  # the rows that waited behind the lock missed the SLA
    now = db_now(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        kinds = {
            r["kind"]
            for r in cur.execute(
                "SELECT kind FROM ops_timeline(%s, %s, 0)", (now - dt.timedelta(minutes=10), now)
            ).fetchall()
        }
    assert "sla" in kinds
    assert any("a session locks financial_transactions_processed" in line for line in lines)
    assert any("the lock is gone" in line for line in lines)


async def test_the_minute_table_shows_every_header_whole_at_120_and_200_columns(make_app, conn):
    """A look bug: at 120 columns the side tables took 76 columns beside the minute table, which got
    39 of the 76 it needs and cut its headers from "pending" on; below the width both need the side
    tables go under it."""
    from textual.widgets import DataTable

    from opsconsole.tui.screens.monitor import COLUMNS

    for width, height in ((120, 40), (200, 60)):
        app = make_app(start_pane="monitor", listen=False)
        async with app.run_test(size=(width, height)) as pilot:
            await wait_loaded(app, "monitor")
            await pilot.pause()
            table = app.screen.query_one("#minutes", DataTable)
            needed = sum(c.get_render_width(table) for c in table.ordered_columns)
            assert [c.label.plain for c in table.ordered_columns] == [label for _, label, _ in COLUMNS]
            assert needed <= table.scrollable_content_region.width, (width, needed, table.size)
            header = "".join(s.text for s in table.render_line(0))
            assert "pending" in header and "breach" in header, (width, header)


async def test_a_minute_whose_rows_waited_40_minutes_shows_its_latency_whole(make_app, conn):
    """A look bug: rows processed 40 minutes after they arrived have an average of about 2,400,000
    ms, which the 6-character column cut to "2,400," (read as 2.4 s). Large values are written in
    thousands or millions (2.4M) and the row shows them whole."""
    from textual.widgets import DataTable

    seed_orders(conn)
    stage(conn, 20, ingested_ago_s=2400)
    with psycopg.connect(conn.info.dsn, autocommit=True) as ops_conn:
        pipeline.process_batch(ops_conn, 1000)
    app = make_app(start_pane="monitor", listen=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_loaded(app, "monitor")
        await pilot.pause()
        cells = table_rows(app, "#minutes")
        assert len(cells) == 1
        avg, p95 = cells[0][6], cells[0][7]
        assert re.fullmatch(r"2\.[3-5]M", avg), avg
        assert p95.endswith("M"), p95  # the histogram's bucket: millions of ms too
        table = app.screen.query_one("#minutes", DataTable)
        shown = "".join(s.text for s in table.render_line(1))
        assert f" {avg} " in shown and f" {p95} " in shown, shown

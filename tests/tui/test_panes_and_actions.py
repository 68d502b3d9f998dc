"""Panes against the area migrations (pipeline, DQ, customer 360, lakehouse, catalog) and every operator
action: what the pane shows matches the database; an action changes the database as intended and
leaves an audit row; cancelling its confirmation changes nothing."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
from psycopg.rows import dict_row

from opsconsole.pipeline.arrival import insert_counted
from tests.orders import add_orders
from tests.tui.helpers import SIZE, screen_text, statics_text, table_rows, type_in, wait_for
from tools import sample
from tools.drive import wait_loaded, wait_screen


def audit(conn: psycopg.Connection, action: str | None = None) -> list[dict]:
    sql = "SELECT action, status, arguments, result, application_name FROM ops_audit_log"
    params: tuple = ()
    if action:
        sql += " WHERE action = %s"
        params = (action,)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql + " ORDER BY audit_id", params)
        return cur.fetchall()


def stage(
    conn: psycopg.Connection,
    n: int,
    *,
    first_id: int = 1,
    ingested_ago_s: float = 0.0,
    order_id: int | None = 1,
) -> None:
    """n pending staging rows (payments referencing order `order_id`)."""
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type, reference_data, batch_id, ingestion_timestamp)"
        " SELECT %s + i, 100 + i %% 5, now() - interval '1 minute', 10 + i, 'payment', %s::jsonb, 'b-test',"
        " now() - %s * interval '1 second' FROM generate_series(0, %s - 1) AS i",
        (first_id, json.dumps({"order_id": order_id} if order_id else {}), ingested_ago_s, n),
    )


def seed_orders(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name) VALUES (1, 'Ada', 'Lovelace')"
    )
    add_orders(
        conn,
        {"order_id": 1, "customer_id": 1, "order_number": "SO-1", "total_amount": 10}
        | {"currency_code": "EUR", "status": "completed"},
    )


async def confirm(app, pilot) -> None:
    """Press the confirmation's second button (Cancel has the focus)."""
    await wait_screen(app, "ConfirmScreen")
    await pilot.press("tab", "enter")


async def job_done(app, pilot, action_id: str, timeout: float = 20.0):
    def finished():
        jobs = [j for j in app.jobs.values() if j.spec.id == action_id]
        return jobs and not jobs[-1].running and jobs[-1]

    return await wait_for(pilot, finished, timeout=timeout, what=f"{action_id} to finish")


# -- Monitor -------------------------------------------------------------------------------------------


async def test_monitor_shows_the_monitor_view_and_the_backlog(make_app, conn):
    seed_orders(conn)
    stage(conn, 30)
    conn.execute("SELECT * FROM process_financial_batch(20, '1 minute')")
    stage(conn, 7, first_id=1000)
    worker = psycopg.connect(conn.info.dsn, application_name="opsconsole:worker-test")
    try:
        app = make_app(start_pane="monitor", listen=False)
        async with app.run_test(size=SIZE):
            await wait_loaded(app, "monitor")
            with conn.cursor(row_factory=dict_row) as cur:
                view = cur.execute(
                    "SELECT * FROM financial_processing_monitor ORDER BY minute_bucket DESC"
                ).fetchall()
            shown = table_rows(app, "#minutes")
            assert len(shown) == len(view) >= 1
            for row, minute in zip(shown, view, strict=True):
                assert row[0] == app.clock.time(minute["minute_bucket"], seconds=False)
                assert row[1:5] == [
                    f"{minute[c]:,}"
                    for c in ("total_transactions", "processed_count", "failed_count", "pending_count")
                ]
            kpi = str(app.screen.query_one("#kpi").render())
            pending = conn.execute(
                "SELECT count(*) AS n FROM financial_transactions_staging WHERE processing_status = 'pending'"
            ).fetchone()["n"]
            assert pending == 17
            assert f"backlog {pending}" in kpi and "(17 pending" in kpi
            assert "workers 1 (" in str(app.screen.query_one("#workers-label").render())
            assert sum(app.screen.query_one("#tp-spark").data) == sum(m["processed_count"] for m in view)
    finally:
        worker.close()


async def test_an_sla_breach_turns_the_border_red_and_raises_a_toast(make_app, conn):
    seed_orders(conn)
    stage(conn, 10, ingested_ago_s=5)  # processed 5 s after ingestion: every row misses the 1 s SLA
    conn.execute("SELECT * FROM process_financial_batch(100, '1 minute')")
    app = make_app(start_pane="monitor", listen=False)
    async with app.run_test(size=SIZE):
        await wait_loaded(app, "monitor")
        assert app.screen.query_one("#pane-frame").has_class("-breach")
        assert any(n.startswith("SLA breach: 100.0% of transactions took over 1000 ms") for n in app.notices)


# -- Backlog and retry ---------------------------------------------------------------------------------


async def test_backlog_lists_filters_drills_and_retries_the_selection(make_app, conn):
    now = dt.datetime.now(dt.UTC)
    sample.seed_staging(conn, now)
    with conn.cursor(row_factory=dict_row) as cur:
        expected = cur.execute(
            "SELECT staging_id, error_code FROM financial_transactions_staging"
            " WHERE processing_status IN ('failed', 'dead_letter')"
            " ORDER BY processing_status = 'dead_letter', next_attempt_at, staging_id"
        ).fetchall()
    app = make_app(start_pane="backlog", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        assert [r[1] for r in table_rows(app, "#rows")] == [str(r["staging_id"]) for r in expected]
        summary = str(app.screen.query_one("#backlog-summary").render())
        assert "pending              5" in summary and "failed               6" in summary
        assert "dead letter          5" in summary
        assert {r[0]: r[1:3] for r in table_rows(app, "#codes")} == {
            "order_not_found": ["6", "0"],
            "unknown_type": ["0", "3"],
            "missing_field": ["0", "2"],
        }

        # filter with /
        await type_in(pilot, "unknown")
        await wait_for(pilot, lambda: app.panes["backlog"].data.filter == "unknown", what="the filter")
        await wait_loaded(app, "backlog", lambda d: d.filter == "unknown")
        assert {r[3] for r in table_rows(app, "#rows")} == {"unknown_type"}
        await pilot.press("escape")
        await wait_loaded(app, "backlog", lambda d: d.filter is None)

        # the cursor kept its row (the first unknown_type one) when the filter went away; drill into it
        table = app.screen.query_one("#rows")
        unknown = [r["staging_id"] for r in expected if r["error_code"] == "unknown_type"]
        first_unknown = str(unknown[0])
        assert table.cursor_key == first_unknown
        await pilot.press("enter")
        detail_screen = await wait_screen(app, "DetailScreen")
        detail = statics_text(detail_screen) + str(detail_screen.title_text)
        assert f"Staging row {first_unknown}" in detail and '"transaction_type": "bogus"' in detail
        await pilot.press("escape")
        selected = unknown[:2]  # two dead letters, from the cursor down

        # cancelling the confirmation changes nothing
        before = conn.execute(
            "SELECT count(*) AS n FROM financial_transactions_staging WHERE processing_status = 'pending'"
        ).fetchone()["n"]
        await pilot.press("space", "space", "r")
        await wait_screen(app, "ChoiceScreen")
        await pilot.press("enter")  # the first option: the 2 selected rows
        confirm_screen = await wait_screen(app, "ConfirmScreen")
        assert "Retry [b]2[/] selected" in statics_text(confirm_screen)
        await pilot.press("enter")  # Cancel has the focus
        await pilot.pause(0.2)
        assert (
            conn.execute(
                "SELECT count(*) AS n FROM financial_transactions_staging WHERE processing_status = 'pending'"
            ).fetchone()["n"]
            == before
        )
        assert audit(conn, "retry_failed") == []

        # and now for real
        await pilot.press("r")
        await wait_screen(app, "ChoiceScreen")
        await pilot.press("enter")
        await confirm(app, pilot)
        job = await job_done(app, pilot, "retry_failed")
        assert job.status == "ok" and job.message == "re-queued 2 rows"
        with conn.cursor(row_factory=dict_row) as cur:
            statuses = cur.execute(
                "SELECT staging_id, processing_status FROM financial_transactions_staging"
                " WHERE staging_id = ANY(%s)",
                (selected,),
            ).fetchall()
        assert {r["processing_status"] for r in statuses} == {"pending"}
        [row] = audit(conn, "retry_failed")
        assert row["status"] == "ok" and row["result"] == {"requeued": 2}
        assert row["application_name"] == "opsconsole:action"
        assert sorted(row["arguments"]["staging_ids"]) == sorted(selected)
        assert row["arguments"]["include_dead_letter"] is True


async def test_retry_everything_needs_the_typed_word(make_app, conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    app = make_app(start_pane="backlog", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "backlog")
        await pilot.press("r")
        await wait_screen(app, "ChoiceScreen")
        await pilot.press("down", "down", "down", "enter")  # every failed and dead-lettered row (11)
        screen = await wait_screen(app, "ConfirmScreen")
        assert screen.query_one("#confirm").disabled
        await pilot.press("tab", "enter")  # the typed-word box has the next focus; Confirm stays disabled
        await pilot.pause(0.1)
        assert app.screen is screen
        screen.query_one("#word").focus()
        await pilot.press(*"retry")
        assert not screen.query_one("#confirm").disabled
        await pilot.press("enter", "enter")
        job = await job_done(app, pilot, "retry_failed")
        assert job.message == "re-queued 11 rows"
        assert (
            conn.execute(
                "SELECT count(*) AS n FROM financial_transactions_staging"
                " WHERE processing_status IN ('failed', 'dead_letter')"
            ).fetchone()["n"]
            == 0
        )


# -- Processing ----------------------------------------------------------------------------------------


async def test_process_one_batch(make_app, conn):
    seed_orders(conn)
    stage(conn, 12)
    app = make_app(start_pane="monitor", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await pilot.press("b")
        await wait_screen(app, "PromptScreen")
        await pilot.press("escape")  # cancelled at the prompt: nothing happens
        await pilot.pause(0.2)
        assert audit(conn) == []
        await pilot.press("b")
        prompt = await wait_screen(app, "PromptScreen")
        prompt.query_one("#answer").value = "5"
        await pilot.press("enter")
        confirm_screen = await wait_screen(app, "ConfirmScreen")
        assert "5 of the 12 rows due" in statics_text(confirm_screen)
        await confirm(app, pilot)
        job = await job_done(app, pilot, "process_batch")
        assert job.status == "ok" and job.message.startswith("5 processed, 0 failed")
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM financial_transactions_staging WHERE processing_status = 'processed'"
        ).fetchone()["n"]
        == 5
    )
    [row] = audit(conn, "process_financial_batch")
    assert row["status"] == "ok" and row["arguments"]["batch_size"] == 5
    assert row["result"]["processed_count"] == 5


async def test_continuous_processing_starts_counts_and_stops(make_app, conn):
    seed_orders(conn)
    stage(conn, 8)
    app = make_app(start_pane="monitor", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await pilot.press("c")
        await wait_screen(app, "PromptScreen")
        await pilot.press("enter")
        await confirm(app, pilot)
        job = await wait_for(
            pilot, lambda: next((j for j in app.jobs.values() if j.spec.id == "continuous"), None)
        )
        await wait_for(pilot, lambda: job.counters.get("processed", 0) == 8, what="the first rows")
        workers = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = 'opsconsole:worker-console'"
        ).fetchone()["n"]
        assert workers == 1
        stage(conn, 4, first_id=500)  # new rows arrive: the loop wakes on NOTIFY and takes them
        await wait_for(pilot, lambda: job.counters.get("processed", 0) == 12, what="the new rows")
        await pilot.pause(0.2)
        assert "continuous processing" in screen_text(app)
        await pilot.press("c")  # stops
        await job_done(app, pilot, "continuous")
        assert job.status == "ok"
    rows = [r for r in audit(conn) if r["action"].startswith("continuous_processing")]
    assert [(r["action"], r["status"]) for r in rows] == [
        ("continuous_processing.start", "ok"),
        ("continuous_processing", "ok"),
    ]
    assert rows[1]["result"]["processed"] == 12
    # and each batch that claimed rows was audited by the SQL function itself
    batches = audit(conn, "process_financial_batch")
    assert batches and sum(b["result"]["processed_count"] for b in batches) == 12


# -- Data quality --------------------------------------------------------------------------------------


async def test_quality_pane_and_running_checks(make_app, conn):
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, 'a@x'), (2, NULL), (3, NULL)")
    app = make_app(start_pane="quality", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "quality")
        rules = {r[1]: r for r in table_rows(app, "#rules")}
        assert rules["customer_email_not_null"][0] == "never run"
        await pilot.press("r")
        await confirm(app, pilot)
        job = await job_done(app, pilot, "run_dq")
        assert job.status == "ok"
        await wait_loaded(app, "quality", lambda d: any(r["status"] for r in d))
        shown = table_rows(app, "#rules")
        with conn.cursor(row_factory=dict_row) as cur:
            latest = {
                r["metric_name"]: r
                for r in cur.execute(
                    "SELECT DISTINCT ON (metric_name) metric_name, metric_value, status"
                    " FROM data_quality_metrics ORDER BY metric_name, check_timestamp DESC"
                ).fetchall()
            }
        keys = app.screen.query_one("#rules").keys()  # the rule names (the cells may be cut to fit)
        assert keys[0] == "customer_email_not_null" and shown[0][0] == "FAIL"  # failing first
        for key, row in zip(keys, shown, strict=True):
            value = latest[key]["metric_value"]
            assert row[3] == ("—" if value is None else f"{float(value) * 100:.1f}%")
        runs = len(audit(conn, "dq.run"))
        assert runs == 1  # the DQ run audits itself; the console adds no second row

        # one rule by key
        count = conn.execute("SELECT count(*) AS n FROM data_quality_metrics").fetchone()["n"]
        if app.op_allowed("run_dq_rule"):
            await pilot.press("o")
            await confirm(app, pilot)
            await job_done(app, pilot, "run_dq_rule")
            assert conn.execute("SELECT count(*) AS n FROM data_quality_metrics").fetchone()["n"] == count + 1
        # history on Enter
        await pilot.press("enter")
        history = await wait_screen(app, "DetailScreen")
        rule = (
            app.panes["quality"].query_one("#rules").cursor_key
        )  # the cursor kept its rule through re-sorts
        assert history.title_text == f"History of {rule}"
        assert "score" in statics_text(history)


async def test_cancelling_a_running_action_is_audited_and_rolls_back(make_app, conn):
    blocker = psycopg.connect(conn.info.dsn)
    try:
        blocker.execute("SELECT pg_advisory_lock(1128354899)")  # the catalog refresh's own lock: it waits
        app = make_app(start_pane="catalog", listen=False)
        async with app.run_test(size=SIZE) as pilot:
            await wait_loaded(app, "catalog")
            await pilot.press("r")
            await confirm(app, pilot)
            await wait_for(
                pilot, lambda: any(j.running and j.conn for j in app.jobs.values()), what="the job"
            )
            await pilot.pause(0.3)
            await pilot.press("x")
            job = await job_done(app, pilot, "refresh_catalog")
            assert job.status == "cancelled"
    finally:
        blocker.close()
    [row] = audit(conn, "refresh_data_catalog")
    assert row["status"] == "cancelled"


# -- Catalog -------------------------------------------------------------------------------------------


async def test_catalog_tree_lineage_and_refresh_showing_what_changed(make_app, conn):
    conn.execute("SELECT * FROM data_catalog_sync()")  # setup: the unaudited sync (the refresh audits)
    app = make_app(start_pane="catalog", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "catalog")
        tree = app.screen.query_one("#catalog-tree")
        with conn.cursor(row_factory=dict_row) as cur:
            tables = [
                r["table_name"]
                for r in cur.execute(
                    "SELECT DISTINCT table_name FROM data_catalog WHERE schema_name = 'public' ORDER BY 1"
                ).fetchall()
            ]
        public = tree.root.children[0]
        assert [n.data[2] for n in public.children] == tables
        await wait_for(
            pilot,
            lambda: (
                "lineage of" in str(app.screen.query_one("#lineage").render().__class__)
                or app.screen.query_one("#lineage").visual is not None
            ),
        )
        conn.execute("CREATE TABLE oc_new_table (a integer NOT NULL, b text)")
        await pilot.press("r")
        await confirm(app, pilot)
        job = await job_done(app, pilot, "refresh_catalog")
        assert job.status == "ok" and job.message.startswith("2 added, 0 removed")
        changes = await wait_screen(app, "DetailScreen")
        text = statics_text(changes)
        assert "public.oc_new_table.a" in text and "public.oc_new_table.b" in text
    row = audit(conn, "refresh_data_catalog")[-1]  # the setup's report audits too
    assert row["status"] == "ok" and row["result"]["added"] == 2


# -- Customers -----------------------------------------------------------------------------------------


async def test_customer_detail_360_history_time_travel_and_refresh(make_app, conn):
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email) VALUES"
        " (7, 'Grace', 'Hopper', 'grace@navy.mil')"
    )
    before = conn.execute("SELECT now() AS t").fetchone()["t"]
    conn.execute("UPDATE crm_customers SET email = 'grace@example.com' WHERE customer_id = 7")
    app = make_app(start_pane="customers", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "customers")
        await pilot.press("ctrl+r")
        await confirm(app, pilot)
        job = await job_done(app, pilot, "refresh_c360")
        assert job.status == "ok"
        await type_in(pilot, "Hopper")
        await wait_loaded(app, "customers", lambda d: d.q == "Hopper" and d.rows)
        await pilot.press("escape", "enter")
        screen = await wait_screen(app, "CustomerScreen")
        await wait_for(pilot, lambda: screen.data is not None, what="the customer")
        assert screen.data.c360 is not None and screen.data.c360["customer_id"] == 7
        assert [v["version_number"] for v in screen.data.versions] == [2, 1]
        text = statics_text(screen)
        assert "Grace Hopper" in text
        await pilot.press("t")
        prompt = await wait_screen(app, "PromptScreen")
        prompt.query_one("#answer").value = before.isoformat()
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: "grace@navy.mil" in str(screen.query_one("#c-travel").render()),
            what="the time-travel result",
        )
    [row] = audit(conn, "refresh_customer_360_incremental")
    assert row["status"] == "ok"

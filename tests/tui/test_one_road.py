"""One road per operator action: the console and the CLI run the same ops/ function, so the audit log
names each action the same whichever way it was started."""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner

from opsconsole.cli import main
from tests.tui.helpers import SIZE
from tests.tui.test_panes_and_actions import confirm, job_done, seed_orders, stage
from tools import sample
from tools.drive import wait_loaded, wait_screen


def actions_since(conn, audit_id: int) -> list[tuple[str, str]]:
    return [
        (r["action"], r["status"])
        for r in conn.execute(
            "SELECT action, status FROM ops_audit_log WHERE audit_id > %s ORDER BY audit_id", (audit_id,)
        ).fetchall()
    ]


def last_audit_id(conn) -> int:
    return conn.execute("SELECT coalesce(max(audit_id), 0) AS n FROM ops_audit_log").fetchone()["n"]


async def test_console_and_cli_audit_each_action_under_one_name(make_app, db_dsn, conn):
    seed_orders(conn)
    stage(conn, 5)
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))  # failed rows to retry
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (2, 'b@x')")

    app = make_app(start_pane="monitor", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "monitor")
        await pilot.press("b")
        await wait_screen(app, "PromptScreen")
        await pilot.press("enter")
        await confirm(app, pilot)
        assert (await job_done(app, pilot, "process_batch")).status == "ok"

        await pilot.press("2")
        await wait_loaded(app, "backlog", lambda d: d.rows)
        await pilot.press("r")
        await wait_screen(app, "ChoiceScreen")
        await pilot.press("enter")  # the error code of the row under the cursor
        await confirm(app, pilot)
        assert (await job_done(app, pilot, "retry_failed")).status == "ok"

        await pilot.press("3")
        await wait_loaded(app, "quality")
        await pilot.press("r")
        await confirm(app, pilot)
        assert (await job_done(app, pilot, "run_dq")).status == "ok"

        await pilot.press("4")
        await wait_loaded(app, "customers")
        await pilot.press("ctrl+r")
        await confirm(app, pilot)
        assert (await job_done(app, pilot, "refresh_c360")).status == "ok"

        await pilot.press("5")
        await wait_loaded(app, "catalog")
        await pilot.press("r")
        await confirm(app, pilot)
        assert (await job_done(app, pilot, "refresh_catalog")).status == "ok"
    console = actions_since(conn, 0)

    mark = last_audit_id(conn)
    runner = CliRunner()
    for args in (
        ("process", "--batch-size", "10"),
        ("retry", "--all"),
        ("dq", "run"),
        ("c360", "refresh"),
        ("catalog", "refresh"),
    ):
        result = runner.invoke(main, ["--dsn", db_dsn, *args])
        assert result.exit_code in (0, 1), result.output  # dq run exits 1 when a rule fails
    cli = actions_since(conn, mark)

    names = [
        "process_financial_batch",
        "retry_failed",
        "dq.run",
        "refresh_customer_360_incremental",
        "refresh_data_catalog",
    ]
    # one row per action, each under the same name from both roads
    assert console == [(name, "ok") for name in names]
    assert cli == console

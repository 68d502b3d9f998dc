"""The console itself against a Citus coordinator: every pane loads its data from the distributed
tables (no pane says "not available" or shows a fetch error), and the operator actions that write
distributed tables work from their keys: process a batch (ledger and processed rows on the shards),
run the DQ rules, search a customer and open the 360 view, refresh the catalog, park a dead letter.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from opsconsole.datagen import seed as seeding
from opsconsole.tui.screens import PANES
from tests.tui.helpers import RecordingApp, statics_text, type_in, wait_for
from tools import sample
from tools.drive import wait_loaded, wait_screen

SIZE = (200, 60)
PLAN = seeding.SeedPlan(customers=200, seed=5, as_of=dt.datetime(2026, 11, 30, tzinfo=dt.UTC))


def _audited(dsn: str, action: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM ops_audit_log WHERE action = %s", (action,)).fetchone()[0]


async def _run(app, pilot, keys: str, action: str, dsn: str, answer: str | None = None) -> None:
    """Press the action's key (answer its prompt), confirm, and wait for its audit row (written in SQL
    with the effect)."""
    before = _audited(dsn, action)
    await pilot.press(keys)
    if answer is not None:
        prompt = await wait_screen(app, "PromptScreen")
        prompt.query_one("#answer").value = answer
        await pilot.press("enter")
    await wait_screen(app, "ConfirmScreen")
    await pilot.press("tab", "enter")
    await wait_for(pilot, lambda: _audited(dsn, action) > before, timeout=60, what=f"the {action} audit row")


async def test_every_pane_and_the_main_actions_work_on_the_coordinator(citus_dsn):
    seeding.seed(citus_dsn, PLAN, jobs=1)
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        sample.seed_staging(conn, dt.datetime.now(dt.UTC))  # pending, failed and dead-lettered rows
        pending = conn.execute(
            "SELECT count(*) FROM financial_transactions_staging WHERE processing_status = 'pending'"
        ).fetchone()[0]
    assert pending > 0

    app = RecordingApp(citus_dsn, database_label="citus", start_pane="monitor", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        for cls in PANES:
            pane = cls.PANE_ID
            await pilot.press(cls.PANE_KEY)
            await wait_loaded(app, pane, timeout=60)
            screen = app.panes[pane]
            assert screen.unavailable is None, (pane, screen.unavailable)
            assert screen.fetch_error is None, (pane, screen.fetch_error)
            assert screen.data is not None, pane

        await pilot.press("1")
        await wait_loaded(app, "monitor")
        await _run(app, pilot, "b", "process_financial_batch", citus_dsn, answer="1000")
        with psycopg.connect(citus_dsn, autocommit=True) as conn:
            left = conn.execute(
                "SELECT count(*) FROM financial_transactions_staging WHERE processing_status = 'pending'"
            ).fetchone()[0]
            # the processed rows and the ledger live on the workers' shards, one ledger row each
            ledger = conn.execute("SELECT count(*) FROM financial_transaction_ledger").fetchone()[0]
            processed = conn.execute("SELECT count(*) FROM financial_transactions_processed").fetchone()[0]
        assert left < pending
        assert ledger == processed > 0

        await pilot.press("2")
        await type_in(pilot, "dead_letter")
        await pilot.press("enter")
        await wait_loaded(app, "backlog", check=lambda d: d.filter == "dead_letter" and bool(d.rows))
        await _run(app, pilot, "k", "park_dead_letters", citus_dsn)

        await pilot.press("3")
        await wait_loaded(app, "quality")
        await _run(app, pilot, "r", "dq.run", citus_dsn)

        await pilot.press("5")
        await wait_loaded(app, "catalog")
        await _run(app, pilot, "r", "refresh_data_catalog", citus_dsn)
        changes = await wait_screen(app, "DetailScreen", timeout=30)  # what the refresh changed
        assert "What the catalog refresh changed" in statics_text(changes)
        await pilot.press("escape")

        await pilot.press("4")
        await wait_loaded(app, "customers")
        await type_in(pilot, "1")
        await pilot.press("enter")
        await wait_loaded(app, "customers", check=lambda d: bool(d.rows) and d.q == "1")
        await pilot.press("escape", "enter")
        detail = await wait_screen(app, "CustomerScreen", timeout=30)
        await wait_for(pilot, lambda: detail.data is not None, timeout=30, what="the customer")
        # the 360 row (store, on the shards) and the orders and versions of the customer
        assert detail.data.c360 is not None and detail.data.c360["customer_id"] == 1
        assert detail.data.versions and detail.data.versions[0]["version_number"] >= 1
        assert detail.data.orders
    assert not [n for n in app.notices if "error" in n.lower() or "failed:" in n.lower()], app.notices

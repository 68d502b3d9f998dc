"""The one list behaviour every pane's lists share (widgets/data_list.py): `/` filters, `s`/`S` sort,
a header click sorts, the pane's title shows both, `e`/`E` export what is shown and `y` copies the
cursor row, each recorded as console.export by the database; columns fit the terminal's width."""

from __future__ import annotations

import csv
import json

import pytest
from psycopg.rows import dict_row

from opsconsole.pipeline.arrival import insert_counted
from tests.orders import add_orders
from tests.tui.helpers import SIZE, table_rows, type_in, wait_for
from tests.tui.test_console_basics import seed_audit
from tests.tui.test_console_roles import role_dsn  # noqa: F401 - a fixture
from tools.drive import wait_loaded


def exports(conn) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT actor, arguments, result, status FROM ops_audit_log WHERE action = 'console.export'"
            " ORDER BY audit_id"
        ).fetchall()


def title(app) -> str:
    return str(app.screen.query_one("#pane-frame").border_title)


async def test_activity_filters_sorts_by_key_and_header_click_and_titles_it(make_app, conn):
    seed_audit(conn)
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "activity")
        assert [r[3] for r in table_rows(app, "#audit")][:5] == [f"action_{i}" for i in (4, 3, 2, 1, 0)]

        # / filters as you type, on any value of the row
        await type_in(pilot, "op3")
        await wait_for(pilot, lambda: [r[2] for r in table_rows(app, "#audit")] == ["op3"], what="filter")
        assert "filter “op3”" in title(app)
        await pilot.press("enter")  # back to the rows, the filter stays
        assert app.focused is app.screen.query_one("#audit")
        await pilot.press("escape")  # clears it
        await wait_for(pilot, lambda: len(table_rows(app, "#audit")) == 5, what="all rows back")
        assert "filter" not in title(app)

        # s: sort by the first column, then the next; S reverses
        await pilot.press("s")
        assert "sort when ▲" in title(app)
        assert [r[3] for r in table_rows(app, "#audit")] == [f"action_{i}" for i in range(5)]
        await pilot.press("S")
        assert "sort when ▼" in title(app)
        assert [r[3] for r in table_rows(app, "#audit")] == [f"action_{i}" for i in (4, 3, 2, 1, 0)]
        await pilot.press("s")  # the next column with a value of its own: who ("ago" is "when")
        assert "sort who ▲" in title(app)

        # a click on a header sorts by it; a second click reverses
        table = app.screen.query_one("#audit")
        status_index = [c.key.value for c in table.ordered_columns].index("status")
        await pilot.click(
            "#audit",
            offset=(sum(c.get_render_width(table) for c in table.ordered_columns[:status_index]) + 2, 0),
        )
        assert "sort status ▲" in title(app)
        assert [r[5] for r in table_rows(app, "#audit")] == ["error", "error", "ok", "ok", "ok"]
        await pilot.click(
            "#audit",
            offset=(sum(c.get_render_width(table) for c in table.ordered_columns[:status_index]) + 2, 0),
        )
        assert "sort status ▼" in title(app)
        assert [r[5] for r in table_rows(app, "#audit")][0] == "ok"


async def test_export_writes_what_is_shown_and_the_database_records_it(make_app, conn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed_audit(conn)
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "activity")
        await type_in(pilot, "error")
        await wait_for(pilot, lambda: len(table_rows(app, "#audit")) == 2, what="filter")
        await pilot.press("enter", "s", "s")  # sorted by who, ascending
        await pilot.press("e")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.csv")), what="the CSV file")
        path = next(tmp_path.glob("*.csv"))
        with path.open() as fh:
            rows = list(csv.DictReader(fh))
        assert [r["who"] for r in rows] == ["op1", "op3"]
        assert [r["status"] for r in rows] == ["error", "error"]
        assert json.loads(rows[0]["scope"]) == {"batch_id": "b-1"}
        await wait_for(pilot, lambda: any(str(path) in n for n in app.notices), what="the notice")

        await pilot.press("E")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.json")), what="the JSON file")
        data = json.loads(next(tmp_path.glob("*.json")).read_text())
        assert [r["who"] for r in data] == ["op1", "op3"]

        # y copies the cursor row (OSC 52; the headless app keeps it in app.clipboard)
        app.screen.query_one("#audit").move_cursor(row=1)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.clipboard, what="the clipboard")
        assert json.loads(app.clipboard)["who"] == "op3"

    recorded = exports(conn)
    assert [r["arguments"]["format"] for r in recorded] == ["csv", "json", "clipboard"]
    assert [r["result"]["rows"] for r in recorded] == [2, 2, 1]
    assert recorded[0]["arguments"]["target"] == str(path)
    assert recorded[0]["arguments"]["list"] == "activity-actions"
    assert "ops_audit_log.actor" in recorded[0]["result"]["classifications"]["internal"]


async def test_an_export_the_database_does_not_record_writes_nothing(make_app, conn, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed_audit(conn)
    conn.execute("REVOKE EXECUTE ON FUNCTION console_export(text, text, integer, text[], text) FROM PUBLIC")
    conn.execute(
        "ALTER FUNCTION console_export(text, text, integer, text[], text) RENAME TO console_export_gone"
    )
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "activity")
        await pilot.press("e")
        await wait_for(pilot, lambda: any("not recorded" in n for n in app.notices), what="the refusal")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_activity_columns_fit_the_width(make_app, conn, size):
    seed_audit(conn)
    conn.execute(
        "UPDATE ops_audit_log SET action = 'a_very_long_action_name_that_needs_room_to_show'"
        " WHERE actor = 'op4'"
    )
    app = make_app(start_pane="activity", listen=False)
    async with app.run_test(size=size) as pilot:
        await wait_loaded(app, "activity")
        await pilot.pause(0.2)
        table = app.screen.query_one("#audit")
        keys = [c.key.value for c in table.ordered_columns]
        width = sum(c.get_render_width(table) for c in table.ordered_columns)
        assert width <= table.size.width
        assert {"when", "action", "status"} <= set(keys)
        if size[0] == 80:
            assert "ms" not in keys
        else:
            assert keys == ["when", "ago", "actor", "action", "scope", "status", "result", "ms"]
            assert "a_very_long_action_name_that_needs_room_to_show" in [
                r[3] for r in table_rows(app, "#audit")
            ]
            assert table.ordered_columns[3].width >= len("a_very_long_action_name_that_needs_room_to_show")


# -- Customers ------------------------------------------------------------------------------------------


def seed_customers_with_orders(conn) -> None:
    """Two customers with orders, their 360 rows, and customer 1's failed and dead-lettered payments."""
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone) VALUES"
        " (1, 'Ada', 'Lovelace', 'ada@example.com', '+441234'),"
        " (2, 'Grace', 'Hopper', 'grace@example.com', '+15551')"
    )
    add_orders(
        conn,
        *(
            {"order_id": oid, "customer_id": cid, "order_number": f"SO-{oid}", "total_amount": amount}
            | {"currency_code": "EUR", "status": "completed"}
            for oid, cid, amount in ((11, 1, 100), (12, 1, 250), (21, 2, 40))
        ),
    )
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount,"
        " transaction_type, reference_data, is_processed) VALUES"
        " (800, 1, now() - interval '1 day', 100, 'payment', '{\"order_id\": 11}', true)"
    )
    conn.execute("SELECT * FROM refresh_customer_360_full()")
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type, reference_data, batch_id, processing_status, error_code, error_message)"
        " VALUES (901, 1, now(), 12.5, 'payment', '{\"order_id\": 11}', 'b-1', 'failed', 'order_not_found',"
        " 'no such order'),"
        " (902, 1, now(), 7, 'payment', '{\"order_id\": 12}', 'b-1', 'dead_letter', 'unknown_type', 'bogus'),"
        " (903, 2, now(), 9, 'payment', '{\"order_id\": 21}', 'b-1', 'failed', 'order_not_found', 'x')",
    )


async def test_customers_list_shows_orders_value_and_segment_at_80_columns(make_app, conn):
    seed_customers_with_orders(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        expected = cur.execute(
            "SELECT customer_id, total_orders, total_lifetime_value, value_segment FROM customer_360_mv"
            " ORDER BY customer_id"
        ).fetchall()
    assert [r["total_orders"] for r in expected] == [2, 1]
    app = make_app(start_pane="customers", listen=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_loaded(app, "customers")
        await pilot.pause(0.2)
        table = app.screen.query_one("#results")
        keys = [c.key.value for c in table.ordered_columns]
        assert {"id", "name", "orders", "ltv", "segment"} <= set(keys)
        assert sum(c.get_render_width(table) for c in table.ordered_columns) <= table.size.width
        rows = {r[0]: dict(zip(keys, r, strict=True)) for r in table_rows(app, "#results")}
        for e in expected:
            row = rows[str(e["customer_id"])]
            assert row["orders"] == str(e["total_orders"])
            assert row["ltv"] == f"{e['total_lifetime_value']:,.2f}"
            assert row["segment"] == e["value_segment"] and e["value_segment"]


async def test_support_sees_failed_and_dead_lettered_transactions_beside_processed(make_app, conn, role_dsn):  # noqa: F811
    seed_customers_with_orders(conn)
    app = make_app(dsn=role_dsn("opsconsole_support"), start_pane="customers", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_loaded(app, "customers")
        await pilot.press("enter")  # customer 1 has the cursor
        screen = await wait_for(
            pilot, lambda: getattr(app.screen, "data", None) and app.screen, what="detail"
        )
        shown = [(t["transaction_id"], t["status"], t["error_code"]) for t in screen.data.transactions]
        assert shown[:2] == [
            (902, "dead_letter", "unknown_type"),
            (901, "failed", "order_not_found"),
        ] or shown[:2] == [(901, "failed", "order_not_found"), (902, "dead_letter", "unknown_type")]
        assert shown[2:] == [(800, "processed", None)]  # customer 2's 903 is not there
        assert not any(n.startswith("transactions") for n in screen.data.notes)


async def test_viewer_export_is_masked_and_audited_with_the_classifications(
    make_app,
    conn,
    role_dsn,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    monkeypatch.chdir(tmp_path)
    seed_customers_with_orders(conn)
    app = make_app(dsn=role_dsn("opsconsole_viewer"), start_pane="customers", listen=False)
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_loaded(app, "customers")
        await pilot.press("e")
        await wait_for(pilot, lambda: list(tmp_path.glob("*.csv")), what="the CSV file")
        with next(tmp_path.glob("*.csv")).open() as fh:
            rows = list(csv.DictReader(fh))
        assert [(r["id"], r["name"], r["email"], r["orders"]) for r in rows] == [
            ("1", "A. L.", "a***@example.com", "2"),
            ("2", "G. H.", "g***@example.com", "1"),
        ]
        await pilot.press("y")
        await wait_for(pilot, lambda: app.clipboard, what="the clipboard")
        assert json.loads(app.clipboard)["email"] == "a***@example.com"
    recorded = exports(conn)
    assert [r["arguments"]["format"] for r in recorded] == ["csv", "clipboard"]
    assert recorded[0]["actor"].startswith("oc_tui_")
    assert recorded[0]["result"]["rows"] == 2
    assert "crm_customers.email" in recorded[0]["result"]["classifications"]["confidential"]


async def test_every_pane_has_a_tab_at_80_columns(make_app):
    from opsconsole.tui.screens import PANES

    app = make_app(listen=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.engine.connected)
        tabs = app.screen.query_one("PaneTabs")
        text = str(tabs.render())
        assert len(text.rstrip()) <= 78
        for pane in PANES:
            assert f" {pane.PANE_KEY} " in text
        assert not app.screen.query_one("PaneFooter").show_command_palette


async def test_the_palette_item_shows_only_where_the_keys_leave_room(make_app):
    """The docked "^p palette" item garbled the last keys when they needed the whole width."""
    app = make_app(listen=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: app.engine.connected)
        await pilot.press("2")  # Backlog: the most keys
        await wait_for(pilot, lambda: getattr(app.screen, "PANE_ID", "") == "backlog")
        footer = app.screen.query_one("PaneFooter")
        await pilot.pause(0.2)
        assert footer._keys_width() + footer.PALETTE_ITEM > 120
        assert not footer.show_command_palette
        await pilot.press("5")  # Catalog: few keys
        await wait_for(pilot, lambda: getattr(app.screen, "PANE_ID", "") == "catalog")
        await pilot.pause(0.2)
        assert app.screen.query_one("PaneFooter").show_command_palette
        await pilot.resize_terminal(250, 40)
        await pilot.press("2")
        await wait_for(pilot, lambda: getattr(app.screen, "PANE_ID", "") == "backlog")
        await pilot.pause(0.3)
        assert app.screen.query_one("PaneFooter").show_command_palette

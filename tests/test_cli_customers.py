"""`opsconsole customer search|show` and `opsconsole c360 refresh|status` against the test database."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner

from opsconsole.cli import main
from tests.orders import add_orders


@pytest.fixture
def seeded(conn, db_dsn):
    today = conn.execute("SELECT customer_360_today() AS d").fetchone()["d"]
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone, source_system) VALUES"
        " (1, 'John', 'Smith', 'john@example.com', '555-0100', 'crm'),"
        " (2, 'Jane', 'Doe', 'jane@example.com', NULL, 'crm'),"
        " (3, 'Johnny', 'Smith', ' JOHN@example.com', NULL, 'webshop')"
    )
    for oid, day, amount in [(10, 3, 700), (11, 40, 500)]:
        d = today - dt.timedelta(days=day)
        add_orders(
            conn,
            {"order_id": oid, "customer_id": 1, "order_number": f"SO-{oid}", "order_date": d}
            | {"total_amount": amount, "currency_code": "USD", "status": "shipped"},
        )
    conn.execute(
        "INSERT INTO ecommerce_events (customer_id, event_timestamp, event_type, event_data)"
        " VALUES (1, now() - interval '2 days', 'page_view', '{\"category\": \"books\"}')"
    )
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount,"
        " transaction_type, reference_data, is_processed) VALUES"
        " (1, 41, now() - interval '1 day', 700, 'payment', '{\"order_id\": 10}', true),"
        " (2, 42, now() - interval '1 hour', 500, 'payment', '{\"order_id\": 11}', true)"
    )
    return db_dsn


def run(dsn, *args):
    return CliRunner().invoke(main, ["--dsn", dsn, *args], catch_exceptions=False)


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_refresh_then_search_and_show(seeded, conn):
    result = run(seeded, "c360", "refresh", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["rows_processed"], data["rows_upserted"], data["rows_deleted"], data["mode"]) == (
        3,
        3,
        0,
        "incremental",
    )
    assert data["refresh_duration"] > 0
    audit = conn.execute("SELECT action, arguments, status, result FROM ops_audit_log").fetchall()
    assert [(a["action"], a["arguments"], a["status"]) for a in audit] == [
        ("refresh_customer_360_incremental", {}, "ok")  # written by the SQL function itself
    ]
    assert audit[0]["result"]["rows_processed"] == 3

    result = run(seeded, "customer", "search", "smith", "--json")
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)
    assert [h["customer_id"] for h in hits] == [1, 3]
    assert hits[0]["total_orders"] == 2 and hits[0]["total_lifetime_value"] == 1200

    result = run(seeded, "--json", "customer", "search", "1")
    assert [(h["customer_id"], h["match_kind"]) for h in json.loads(result.output)] == [(1, "id")]

    result = run(seeded, "customer", "show", "1", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    c = shown["customer_360"]
    assert (c["customer_id"], c["total_orders"], c["orders_30d"], c["activity_segment"]) == (
        1,
        2,
        1,
        "Active",
    )
    assert c["transaction_count"] == 2 and c["financial_account_ids"] == [41, 42]
    assert shown["refresh_pending"] is False
    assert [o["order_id"] for o in shown["recent_orders"]] == [10, 11]
    assert [e["category"] for e in shown["recent_events"]] == ["books"]
    assert [(t["transaction_id"], t["order_id"]) for t in shown["recent_transactions"]] == [(2, 11), (1, 10)]
    assert [(r["customer_id"], r["source_system"]) for r in shown["linked_records"]] == [(3, "webshop")]

    uuid = conn.execute("SELECT customer_uuid FROM crm_customers WHERE customer_id = 3").fetchone()
    shown = json.loads(run(seeded, "customer", "show", str(uuid["customer_uuid"]), "--json").output)
    assert (shown["customer_id"], shown["customer_360"]["duplicate_of"]) == (3, 1)


def test_tables_for_people(seeded):
    assert run(seeded, "c360", "refresh", "--full").exit_code == 0
    result = run(seeded, "customer", "search", "john")
    assert result.exit_code == 0
    assert "customers matching 'john'" in result.output and "Smith" in result.output
    result = run(seeded, "customer", "show", "1")
    assert result.exit_code == 0
    for text in ("customer 1: 360", "recent orders", "recent events", "recent transactions", "SO-10"):
        assert text in flat(result.output)
    result = run(seeded, "c360", "refresh")
    assert "incremental refresh: 0 row(s) processed" in flat(result.output)


def test_show_before_the_first_refresh_and_status(seeded):
    shown = json.loads(run(seeded, "customer", "show", "2", "--json").output)
    assert shown["customer_360"] is None and shown["refresh_pending"] is True
    assert shown["profile"]["email"] == "jane@example.com"
    status = json.loads(run(seeded, "c360", "status", "--json").output)
    # 3 customers (one statement), 2 order statements, 1 event, 2 referenced orders.
    assert (status["queue_entries"], status["dirty_customers"], status["rows"], status["last_mode"]) == (
        8,
        3,
        0,
        None,
    )
    run(seeded, "c360", "refresh", "--full")
    status = json.loads(run(seeded, "c360", "status", "--json").output)
    assert (status["queue_entries"], status["rows"], status["last_mode"], status["last_rows_upserted"]) == (
        0,
        3,
        "full",
        3,
    )


def test_expected_failures_are_one_sentence(seeded):
    result = CliRunner().invoke(main, ["--dsn", seeded, "customer", "show", "999"])
    assert result.exit_code == 1
    assert "No customer has id 999" in flat(result.output)
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["--dsn", seeded, "customer", "show", "not-an-id"])
    assert result.exit_code == 1 and "neither a customer id nor a uuid" in flat(result.output)
    result = CliRunner().invoke(
        main, ["--dsn", seeded, "customer", "show", "00000000-0000-0000-0000-000000000009"]
    )
    assert result.exit_code == 1 and "No customer has uuid" in flat(result.output)
    result = CliRunner().invoke(main, ["--dsn", seeded, "customer", "search", "  "])
    assert result.exit_code == 1 and "search text is empty" in flat(result.output)


def test_not_installed_says_migrate(empty_db_dsn):
    result = CliRunner().invoke(main, ["--dsn", empty_db_dsn, "customer", "search", "x"])
    assert result.exit_code == 1
    assert "lacks customer 360" in flat(result.output)
    assert "run `opsconsole db migrate`" in flat(result.output)

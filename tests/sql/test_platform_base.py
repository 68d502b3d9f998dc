"""The base schema: partitions on a rolling horizon, order_id uniqueness, and house rules that every
migration must keep (timestamptz only, pinned search_path)."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from tests.orders import add_orders


def test_rows_of_any_date_insert_and_land_in_their_month(conn: psycopg.Connection) -> None:
    today = dt.date.today()
    rows = [(1, dt.date(1999, 12, 31)), (2, today), (3, today + dt.timedelta(days=4000))]
    add_orders(conn, *({"order_id": order_id, "customer_id": 1, "order_date": day} for order_id, day in rows))
    placed = {
        r["order_id"]: r["tableoid"]
        for r in conn.execute("SELECT order_id, tableoid::regclass::text AS tableoid FROM erp_orders")
    }
    assert placed[1] == "erp_orders_default"
    assert placed[2] == f"erp_orders_{today:%Y_%m}"
    assert placed[3] == "erp_orders_default"


def test_ensure_partitions_moves_default_rows_and_keeps_order_keys(conn: psycopg.Connection) -> None:
    add_orders(conn, {"order_id": 10, "customer_id": 1, "order_date": dt.date(2001, 3, 4)})
    created = conn.execute(
        "SELECT ensure_partitions('erp_orders', now() - timestamptz '2001-01-01', interval '0')"
    ).fetchone()["ensure_partitions"]
    assert created > 200
    row = conn.execute(
        "SELECT tableoid::regclass::text AS part FROM erp_orders WHERE order_id = 10"
    ).fetchone()
    assert row["part"] == "erp_orders_2001_03"
    assert conn.execute("SELECT partition_date FROM erp_order_keys WHERE order_id = 10").fetchone() == {
        "partition_date": dt.date(2001, 3, 4)
    }
    again = conn.execute("SELECT ensure_partitions('erp_orders')").fetchone()["ensure_partitions"]
    assert again == 0


def test_order_id_is_unique_across_partitions(conn: psycopg.Connection) -> None:
    """The writers claim each order id in erp_order_keys (erp_order_keys_add): an id taken in one
    partition is refused in another, for another customer, and in a repeated batch; a refused batch
    writes nothing; deleting an order and its key frees the id."""
    add_orders(conn, {"order_id": 7, "customer_id": 1, "order_date": dt.date(2024, 1, 5)})
    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate order_id 7"):
        add_orders(
            conn,
            {"order_id": 8, "customer_id": 2, "order_date": dt.date(2025, 6, 5)},
            {"order_id": 7, "customer_id": 2, "order_date": dt.date(2025, 6, 5)},
        )
    with pytest.raises(psycopg.errors.UniqueViolation, match="duplicate order_id 9"):
        conn.execute("SELECT erp_order_keys_add('{9,9}', '{2025-06-05,2025-06-06}')")
    assert conn.execute("SELECT count(*) AS n FROM erp_orders").fetchone()["n"] == 1
    assert conn.execute("SELECT count(*) AS n FROM erp_order_keys").fetchone()["n"] == 1
    conn.execute("DELETE FROM erp_orders WHERE order_id = 7")
    conn.execute("DELETE FROM erp_order_keys WHERE order_id = 7")
    add_orders(conn, {"order_id": 7, "customer_id": 2, "order_date": dt.date(2025, 6, 5)})
    assert conn.execute("SELECT order_id, partition_date FROM erp_order_keys").fetchall() == [
        {"order_id": 7, "partition_date": dt.date(2025, 6, 5)}
    ]
    # an order belongs to a customer
    with pytest.raises(psycopg.errors.NotNullViolation):
        conn.execute(
            "INSERT INTO erp_orders (order_id, order_date, partition_date) "
            "VALUES (11, '2025-06-05', '2025-06-05')"
        )


def test_ensure_partitions_refuses_a_plain_table(conn: psycopg.Connection) -> None:
    with pytest.raises(psycopg.errors.WrongObjectType):
        conn.execute("SELECT ensure_partitions('crm_customers')")


def test_no_timestamp_without_time_zone_anywhere(conn: psycopg.Connection) -> None:
    naive = conn.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'"""
    ).fetchall()
    assert naive == []


def test_every_platform_function_pins_search_path(conn: psycopg.Connection) -> None:
    unpinned = conn.execute(
        """SELECT p.oid::regprocedure::text AS fn
           FROM pg_proc p
           WHERE p.pronamespace = 'public'::regnamespace
             AND NOT EXISTS (SELECT 1 FROM pg_depend d
                             WHERE d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e')
             AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')"""
    ).fetchall()
    assert unpinned == []


def test_record_audit_writes_who_and_what(conn: psycopg.Connection) -> None:
    conn.execute("SET application_name = 'opsconsole:test'")
    audit_id = conn.execute(
        "SELECT record_audit('retry', '{\"batch\": \"b-1\"}', '{\"rows\": 3}', 'ok', 12.5, 'replay')"
    ).fetchone()["record_audit"]
    row = conn.execute("SELECT * FROM ops_audit_log WHERE audit_id = %s", (audit_id,)).fetchone()
    assert row["actor"] == conn.execute("SELECT session_user AS u").fetchone()["u"]
    assert (row["action"], row["arguments"], row["result"], row["status"]) == (
        "retry",
        {"batch": "b-1"},
        {"rows": 3},
        "ok",
    )
    assert row["application_name"] == "opsconsole:test" and row["reason"] == "replay"


@pytest.mark.parametrize(
    ("setting", "call"),
    [
        ("opsconsole.claim_span", "SELECT * FROM process_financial_batch(10)"),
        ("opsconsole.dq_timeout_ms", "SELECT * FROM dq_run()"),
    ],
)
def test_an_integer_setting_that_is_not_one_is_named_in_the_error(
    conn: psycopg.Connection, setting: str, call: str
) -> None:
    """setting_integer() is the one reading of opsconsole.* integers: unset or empty is the default,
    and a typo stops the caller with the setting's name, not a cast error or a silent default."""
    read = "SELECT setting_integer(%s, 42) AS v"
    assert conn.execute(read, (setting,)).fetchone()["v"] == 42
    conn.execute("SELECT set_config(%s, ' 7 ', false)", (setting,))
    assert conn.execute(read, (setting,)).fetchone()["v"] == 7
    conn.execute("SELECT set_config(%s, '', false)", (setting,))
    assert conn.execute(read, (setting,)).fetchone()["v"] == 42
    conn.execute("SELECT set_config(%s, '8 rows', false)", (setting,))
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=f'setting {setting} must be an integer.*"8 rows"'
    ):
        conn.execute(call)

"""Roles and privileges (baseline roles, 99_grants.sql): each group role logs in and does what it may,
and the database refuses the rest; PII is masked for viewers; support lookups and every action leave
complete audit rows; injection attempts through search text, retry filters and DQ rules do nothing harmful."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from opsconsole.pipeline.arrival import insert_counted

GROUPS = ("opsconsole_viewer", "opsconsole_support", "opsconsole_operator", "opsconsole_admin")
MONDAY_10 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)


def seed(conn: psycopg.Connection) -> None:
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email, phone, address) VALUES "
        "(1, 'Jane', 'Doe', 'jane.doe@example.com', '+44 20 7946 0958', "
        ' \'{"street": "1 High St", "city": "London", "postcode": "N1 9GU"}\'), '
        "(2, 'Bob', 'Smith', 'bob@example.org', '555-0199', NULL)"
    )
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, batch_id) "
        "VALUES (1, 1, %s, 10, 'payment', 'b1'), (2, 1, %s, 10, 'bogus', 'b1')",
        (MONDAY_10, MONDAY_10),
    )


def audit_rows(conn: psycopg.Connection, action: str) -> list[dict]:
    return conn.execute(
        "SELECT actor, action, arguments, result, status, duration_ms FROM ops_audit_log "
        "WHERE action = %s ORDER BY audit_id",
        (action,),
    ).fetchall()


def test_groups_exist_nologin_with_hierarchy(conn):
    rows = conn.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'opsconsole\\_%%' ORDER BY 1"
    ).fetchall()
    assert {r["rolname"]: r["rolcanlogin"] for r in rows} == {g: False for g in GROUPS}
    member = conn.execute(
        "SELECT pg_has_role('opsconsole_admin', 'opsconsole_viewer', 'MEMBER') AS a, "
        "pg_has_role('opsconsole_admin', 'opsconsole_support', 'MEMBER') AS b, "
        "pg_has_role('opsconsole_support', 'opsconsole_operator', 'MEMBER') AS c"
    ).fetchone()
    assert member == {"a": True, "b": False, "c": False}


def test_no_base_table_writable_by_viewer_support_operator(conn):
    bad = conn.execute(
        "SELECT g.role, c.relname, p.priv FROM pg_class c "
        "CROSS JOIN unnest(%s::text[]) g(role) "
        "CROSS JOIN unnest(ARRAY['INSERT','UPDATE','DELETE','TRUNCATE']) p(priv) "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r','p','v','m') "
        "AND has_table_privilege(g.role, c.oid, p.priv)",
        (["opsconsole_viewer", "opsconsole_support", "opsconsole_operator", "opsconsole_admin"],),
    ).fetchall()
    assert bad == []
    # every SECURITY DEFINER function pins its search_path and is not executable by PUBLIC
    loose = conn.execute(
        "SELECT p.oid::regprocedure::text AS fn FROM pg_proc p "
        "WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef AND ("
        " NOT coalesce(p.proconfig::text LIKE '%%search_path=pg_catalog, public, pg_temp\"%%', false)"
        " OR has_function_privilege('public', p.oid, 'EXECUTE'))"
    ).fetchall()
    assert loose == []


def test_viewer_reads_monitor_and_masked_customers_only(conn, login_as):
    seed(conn)
    conn.execute("SELECT refresh_data_catalog()")
    v = login_as("opsconsole_viewer")
    assert v.execute("SELECT count(*) AS n FROM financial_processing_monitor").fetchone()["n"] >= 0
    assert v.execute("SELECT count(*) AS n FROM financial_transactions_staging").fetchone()["n"] == 2
    assert v.execute("SELECT count(*) AS n FROM data_catalog").fetchone()["n"] > 0
    assert v.execute("SELECT count(*) AS n FROM ops_audit_log").fetchone()["n"] >= 1
    rows = v.execute(
        "SELECT customer_id, first_name, last_name, email, phone, address FROM customers_masked ORDER BY 1"
    ).fetchall()
    assert rows == [
        {
            "customer_id": 1,
            "first_name": "J.",
            "last_name": "D.",
            "email": "j***@example.com",
            "phone": "**********58",
            "address": {"city": "London"},
        },
        {
            "customer_id": 2,
            "first_name": "B.",
            "last_name": "S.",
            "email": "b***@example.org",
            "phone": "*****99",
            "address": None,
        },
    ]
    for sql in (
        "SELECT email FROM crm_customers",
        "SELECT * FROM lookup_customer(1)",
        "SELECT * FROM lakehouse_customers",
        "INSERT INTO crm_customers (customer_id) VALUES (9)",
        "UPDATE financial_transactions_staging SET processing_status = 'pending'",
        "DELETE FROM ops_audit_log",
        "SELECT retry_failed(p_all => true)",
        "SELECT * FROM process_financial_batch(10)",
        "SELECT refresh_data_catalog()",
        "SELECT * FROM execute_data_quality_checks()",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            v.execute(sql)


def test_masking_follows_the_catalog_classification(conn, login_as):
    seed(conn)
    conn.execute("SELECT refresh_data_catalog()")
    conn.execute(
        "UPDATE data_catalog SET data_classification = 'internal' "
        "WHERE table_name = 'crm_customers' AND column_name = 'last_name'"
    )
    conn.execute(
        "UPDATE data_catalog SET data_classification = 'restricted' "
        "WHERE table_name = 'crm_customers' AND column_name = 'email'"
    )
    v = login_as("opsconsole_viewer")
    row = v.execute(
        "SELECT last_name, email, first_name FROM customers_masked WHERE customer_id = 1"
    ).fetchone()
    assert row == {"last_name": "Doe", "email": None, "first_name": "J."}


def test_support_lookup_unmasked_and_audited(conn, login_as):
    seed(conn)
    s = login_as("opsconsole_support")
    who = s.execute("SELECT session_user AS u").fetchone()["u"]
    row = s.execute("SELECT email, phone FROM lookup_customer(1, 'ticket 42')").fetchone()
    assert row == {"email": "jane.doe@example.com", "phone": "+44 20 7946 0958"}
    found = s.execute("SELECT customer_id FROM lookup_customers('SMITH')").fetchall()
    assert found == [{"customer_id": 2}]
    # support still cannot read the table directly, nor act as an operator
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        s.execute("SELECT email FROM crm_customers")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        s.execute("SELECT retry_failed(p_all => true)")
    (one,) = audit_rows(conn, "lookup_customer")
    assert one["actor"] == who and one["arguments"] == {"customer_id": 1}
    assert one["result"] == {"found": 1} and one["status"] == "ok" and one["duration_ms"] is not None
    (many,) = audit_rows(conn, "lookup_customers")
    assert many["actor"] == who and many["arguments"] == {"search": "S*** (5)", "limit": 20}
    assert many["result"] == {"found": 1}


def test_operator_actions_work_and_are_audited(conn, login_as):
    seed(conn)
    o = login_as("opsconsole_operator")
    who = o.execute("SELECT session_user AS u").fetchone()["u"]
    r = o.execute("SELECT * FROM process_financial_batch(100)").fetchone()
    assert (r["processed_count"], r["failed_count"]) == (1, 1)
    (a,) = audit_rows(conn, "process_financial_batch")
    assert a["actor"] == who and a["arguments"]["batch_size"] == 100
    assert (a["result"]["processed_count"], a["result"]["failed_count"]) == (1, 1)
    assert a["duration_ms"] is not None
    code = conn.execute(
        "SELECT error_code FROM financial_transactions_staging WHERE transaction_id = 2"
    ).fetchone()
    requeued = o.execute(
        "SELECT retry_failed(p_error_code => %s, p_include_dead_letter => true) AS n", (code["error_code"],)
    ).fetchone()["n"]
    assert requeued == 1
    (rt,) = audit_rows(conn, "retry_failed")
    assert rt["actor"] == who
    assert rt["arguments"]["error_code"] == code["error_code"]
    assert rt["result"] == {"requeued": 1}
    n = o.execute("SELECT refresh_data_catalog() AS n").fetchone()["n"]
    assert n > 0
    (rc,) = audit_rows(conn, "refresh_data_catalog")
    assert rc["actor"] == who
    assert rc["result"]["added"] + rc["result"]["changed"] + rc["result"]["removed"] == n
    assert len(o.execute("SELECT * FROM execute_data_quality_checks()").fetchall()) >= 1
    # operator may not change rules, purge, read PII or write tables
    for sql in (
        "SELECT dq_add_rule('r1', 'crm_customers', 'completeness', p_column_name => 'email')",
        "SELECT * FROM purge_financial_staging()",
        "SELECT * FROM lookup_customer(1)",
        "UPDATE dq_rule_definitions SET is_active = false",
        "INSERT INTO ops_audit_log (action) VALUES ('forged')",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            o.execute(sql)


def test_admin_changes_rules(conn, login_as):
    adm = login_as("opsconsole_admin")
    adm.execute(
        "SELECT dq_add_rule('emails_present', 'crm_customers', 'completeness', p_column_name => 'email', "
        "p_threshold_value => 0.5)"
    )
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM dq_rule_definitions WHERE rule_name = 'emails_present'"
        ).fetchone()["n"]
        == 1
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        adm.execute("SELECT * FROM lookup_customer(1)")


INJECTION = "'; DROP TABLE crm_customers; --"


def test_injection_through_search_retry_filter_and_dq_rule(conn, login_as):
    seed(conn)
    s = login_as("opsconsole_support")
    assert s.execute("SELECT * FROM lookup_customers(%s)", (INJECTION,)).fetchall() == []
    assert s.execute("SELECT * FROM lookup_customers('%%')").fetchall() == []  # a wildcard is just text
    o = login_as("opsconsole_operator")
    assert o.execute("SELECT retry_failed(p_error_code => %s) AS n", (INJECTION,)).fetchone()["n"] == 0
    assert o.execute("SELECT retry_failed(p_batch_id => %s) AS n", (INJECTION,)).fetchone()["n"] == 0
    adm = login_as("opsconsole_admin")
    with pytest.raises(psycopg.Error):
        adm.execute(
            "SELECT dq_add_rule('evil', 'crm_customers', 'custom_sql', p_rule_expression => %s)",
            ("true); DROP TABLE crm_customers; --",),
        )
    with pytest.raises(psycopg.Error):
        adm.execute("SELECT dq_add_rule('evil2', %s, 'completeness', p_column_name => 'email')", (INJECTION,))
    assert conn.execute("SELECT count(*) AS n FROM crm_customers").fetchone()["n"] == 2
    assert conn.execute("SELECT to_regclass('crm_customers') IS NOT NULL AS ok").fetchone()["ok"]


def test_apply_grants_covers_objects_created_later(conn):
    conn.execute("CREATE TABLE later_table (id int, email text)")
    conn.execute("CREATE TABLE later_plain (id int)")
    conn.execute("SELECT opsconsole_apply_grants()")
    got = conn.execute(
        "SELECT has_table_privilege('opsconsole_viewer', 'later_table', 'SELECT') AS pii, "
        "has_table_privilege('opsconsole_viewer', 'later_plain', 'SELECT') AS plain, "
        "has_table_privilege('opsconsole_operator', 'later_plain', 'INSERT') AS ins"
    ).fetchone()
    assert got == {"pii": False, "plain": True, "ins": False}


def test_customer_360_masked_for_viewer_and_search_audited_for_support(conn, login_as):
    seed(conn)
    conn.execute("SELECT * FROM refresh_customer_360_full()")
    v = login_as("opsconsole_viewer")
    rows = v.execute(
        "SELECT customer_id, first_name, last_name, email, phone, total_orders "
        "FROM customer_360_masked ORDER BY 1"
    ).fetchall()
    assert rows == [
        {"customer_id": 1, "first_name": "J.", "last_name": "D.", "email": "j***@example.com",
         "phone": "**********58", "total_orders": 0},
        {"customer_id": 2, "first_name": "B.", "last_name": "S.", "email": "b***@example.org",
         "phone": "*****99", "total_orders": 0},
    ]  # fmt: skip
    for sql in (
        "SELECT * FROM customer_360_mv",
        "SELECT * FROM search_customers('jane')",
        "SELECT * FROM customer_search_rows('jane', 5)",
        "SELECT * FROM refresh_customer_360_incremental()",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            v.execute(sql)
    s = login_as("opsconsole_support")
    who = s.execute("SELECT session_user AS u").fetchone()["u"]
    got = s.execute("SELECT customer_id, email FROM search_customers('jane')").fetchall()
    assert got == [{"customer_id": 1, "email": "jane.doe@example.com"}]
    assert s.execute("SELECT * FROM search_customers(%s)", (INJECTION,)).fetchall() == []
    rows = audit_rows(conn, "search_customers")
    assert [(r["actor"], r["arguments"], r["result"], r["status"]) for r in rows] == [
        (who, {"query": "j*** (4)", "limit": 20}, {"found": 1}, "ok"),  # search text masked (PII)
        (who, {"query": f"{INJECTION[0]}*** ({len(INJECTION)})", "limit": 20}, {"found": 0}, "ok"),
    ]
    assert all(r["duration_ms"] is not None for r in rows)
    o = login_as("opsconsole_operator")
    assert o.execute("SELECT rows_processed FROM refresh_customer_360_incremental()").fetchone() is not None

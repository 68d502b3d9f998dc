"""Data quality: rule validation, the engine (execute_data_quality_checks / dq_run) and validate_data_quality.

Every test loads a small known dataset into a fresh database and asserts exact values.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

import psycopg
import pytest

from tests.orders import add_orders

INJECTION = "true; CREATE TABLE pwned AS SELECT current_user; SELECT 1"


def customers(conn, n: int, null_every: int | None = None) -> None:
    """n customers 1..n; every null_every-th has a NULL email."""
    conn.execute(
        """INSERT INTO crm_customers (customer_id, email)
           SELECT g, CASE WHEN %(k)s::int IS NOT NULL AND g %% %(k)s::int = 0 THEN NULL
                          ELSE 'c' || g || '@example.com' END
           FROM generate_series(1, %(n)s) g""",
        {"n": n, "k": null_every},
    )


def order(conn, order_id: int, customer_id: int, amount: str | None = "10", **extra) -> None:
    add_orders(
        conn,
        {
            "order_id": order_id,
            "customer_id": customer_id,
            "order_number": extra.get("order_number", f"SO-{order_id}"),
            "total_amount": amount,
            "status": extra.get("status", "open"),
            "created_at": extra.get("created_at"),
            "sales_rep_id": extra.get("sales_rep_id"),
        },
    )


def run(conn, table: str | None = None, rule: str | None = None, timeout_ms: int | None = None):
    rows = conn.execute("SELECT * FROM dq_run(%s, %s, %s)", (table, rule, timeout_ms)).fetchall()
    return {r["rule_name"]: r for r in rows}


def only_rules(conn, *names: str) -> None:
    """Deactivate every rule except the named ones, so a run checks just those."""
    conn.execute("UPDATE dq_rule_definitions SET is_active = rule_name = ANY(%s)", (list(names),))


def add_rule(conn, name: str, table: str, rule_type: str, expression: str | None = None, **kw):
    return conn.execute(
        """SELECT * FROM dq_add_rule(%(name)s, %(table)s, %(type)s, %(expr)s,
               p_threshold_value => %(threshold)s, p_severity => %(severity)s,
               p_column_name => %(column)s, p_operator => %(operator)s, p_value => %(value)s::jsonb,
               p_reference_table => %(ref_table)s, p_reference_column => %(ref_column)s,
               p_max_age => %(max_age)s::interval, p_timeout_ms => %(timeout_ms)s)""",
        {
            "name": name,
            "table": table,
            "type": rule_type,
            "expr": expression,
            "threshold": kw.get("threshold", Decimal("1.0")),
            "severity": kw.get("severity", "warning"),
            "column": kw.get("column"),
            "operator": kw.get("operator"),
            "value": kw.get("value"),
            "ref_table": kw.get("ref_table"),
            "ref_column": kw.get("ref_column"),
            "max_age": kw.get("max_age"),
            "timeout_ms": kw.get("timeout_ms"),
        },
    ).fetchone()


def no_pwned(conn) -> bool:
    return conn.execute("SELECT to_regclass('public.pwned') IS NULL AS gone").fetchone()["gone"]


# ----------------------------------------------------------------------------------------------------
# Definitions and the validator
# ----------------------------------------------------------------------------------------------------


def test_spec_sample_rules_are_installed_unchanged(conn):
    rows = conn.execute(
        "SELECT rule_name, table_name, rule_type, rule_expression, threshold_value, severity, is_active,"
        " normalized_definition FROM dq_rule_definitions ORDER BY rule_id"
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        (
            "customer_email_not_null",
            "crm_customers",
            "completeness",
            "email IS NOT NULL",
            Decimal("0.9500"),
            "error",
            True,
            "email IS NOT NULL",
        ),
        (
            "customer_id_unique",
            "crm_customers",
            "uniqueness",
            "customer_id",
            Decimal("1.0000"),
            "critical",
            True,
            "unique (customer_id)",
        ),
        (
            "order_amount_positive",
            "erp_orders",
            "validity",
            "total_amount > 0",
            Decimal("0.9900"),
            "warning",
            True,
            "total_amount > 0",
        ),
        (
            "transaction_timestamp_recent",
            "financial_transactions",
            "accuracy",
            "transaction_timestamp >= CURRENT_DATE - INTERVAL '7 days'",
            Decimal("0.8000"),
            "info",
            True,
            "transaction_timestamp >= CURRENT_DATE - INTERVAL '7 days'",
        ),
    ]


VALIDATOR_RE_EMITS_ALLOWED_EXPRESSIONS_CASES = [
    ("email IS NOT NULL", "email IS NOT NULL"),
    ("lower(email) LIKE '%@example.com'", "lower(email) LIKE '%@example.com'"),
    ("length(btrim(email)) BETWEEN 3 AND 255", "length(btrim(email)) BETWEEN 3 AND 255"),
    ("EMAIL ~ '^[a-z0-9]+@' or Email is null", "email ~ '^[a-z0-9]+@' OR email IS NULL"),
    ("created_at::date >= DATE '2020-01-01'", "created_at::date >= DATE '2020-01-01'"),
    ("created_at > now() - interval '1 day'", "created_at > now() - INTERVAL '1 day'"),
    ("address->>'city' IS NOT NULL", "address ->> 'city' IS NOT NULL"),
    ("email = 'it''s'", "email = 'it''s'"),
    ("\"email\" IN ('a', 'b')", "email IN ('a', 'b')"),
    (
        "coalesce(phone, '') <> '' AND customer_id > 1e3",
        "coalesce(phone, '') <> '' AND customer_id > 1e3",
    ),
    ("email = 'a\\'", "email = E'a\\\\'"),  # a backslash stays a plain character
]


def test_validator_re_emits_allowed_expressions(conn):
    for expression, canonical in VALIDATOR_RE_EMITS_ALLOWED_EXPRESSIONS_CASES:
        got = conn.execute(
            "SELECT dq_validated_predicate('crm_customers', %s) AS p", (expression,)
        ).fetchone()["p"]
        assert got == canonical, expression


VALIDATOR_REJECTS_CASES = [
    (INJECTION, '";" is not allowed'),
    ("email IS NOT NULL -- comment", "comments are not allowed"),
    ("email IS NOT NULL /* x */", "comments are not allowed"),
    ("email = (SELECT 'a')", "subqueries (SELECT) are not allowed"),
    ("email IN (WITH x AS (SELECT 1) SELECT * FROM x)", "subqueries (WITH) are not allowed"),
    ("pg_sleep(1) IS NULL", 'unknown name "pg_sleep"'),
    ('"pg_sleep"(1) IS NULL', 'column "pg_sleep" does not exist'),
    ("email(1) IS NULL", '"(" after email'),
    ("crm_customers.email IS NULL", 'unknown name "crm_customers"'),
    ("email IS NOT NULL)) FROM crm_customers, pg_authid WHERE ((true", "unbalanced parentheses"),
    ("(email IS NULL", "unbalanced parentheses"),
    ("email IS NULL, true", "a comma outside parentheses"),
    ("$$x$$ = email", '"$"'),
    ("email = $1", '"$"'),
    ("email::regclass IS NULL", 'cast to "regclass" is not allowed'),
    ("ctid IS NOT NULL", 'unknown name "ctid"'),
    ("email[1] = 'a'", 'character "[" at position 6'),
    ("email = 'unterminated", "unterminated string literal"),
    ("current_user = 'postgres'", 'unknown name "current_user"'),
    ("set_config('a.b', 'c', false) = 'c'", 'unknown name "set_config"'),
    ("email", "argument of FILTER must be type boolean"),
    ("customer_id + 1", "argument of FILTER must be type boolean"),
    ("email > 5", "operator does not exist"),
    ("", "the rule expression is empty"),
]


def test_validator_rejects(conn):
    for expression, reason in VALIDATOR_REJECTS_CASES:
        with pytest.raises(psycopg.Error) as exc:
            conn.execute("SELECT dq_validated_predicate('crm_customers', %s)", (expression,))
        assert reason in exc.value.diag.message_primary, expression
        assert no_pwned(conn)


def test_injection_rule_is_rejected_on_insert(conn):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        conn.execute(
            "INSERT INTO dq_rule_definitions (rule_name, table_name, rule_type, rule_expression,"
            " threshold_value, severity) VALUES ('evil', 'crm_customers', 'validity', %s, 1, 'critical')",
            (INJECTION,),
        )
    assert exc.value.diag.message_primary == (
        'DQ rule "evil" rejected: a rule is one boolean expression: ";" is not allowed (position 5)'
    )
    # An update cannot smuggle it in either.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute(
            "UPDATE dq_rule_definitions SET rule_expression = %s WHERE rule_name = 'order_amount_positive'",
            (INJECTION,),
        )
    assert conn.execute("SELECT count(*) AS n FROM dq_rule_definitions").fetchone()["n"] == 4
    assert no_pwned(conn)


def test_injection_forced_past_the_trigger_never_runs(conn):
    customers(conn, 4)
    conn.execute("ALTER TABLE dq_rule_definitions DISABLE TRIGGER dq_rule_definitions_validate")
    conn.execute(
        "INSERT INTO dq_rule_definitions (rule_name, table_name, rule_type, rule_expression, threshold_value,"
        " severity) VALUES ('evil', 'crm_customers', 'validity', %s, 1, 'critical')",
        (INJECTION,),
    )
    conn.execute("ALTER TABLE dq_rule_definitions ENABLE TRIGGER dq_rule_definitions_validate")

    results = {r["rule_name"]: r for r in conn.execute("SELECT * FROM execute_data_quality_checks()")}
    evil = results["evil"]
    assert (evil["passed"], evil["score"], evil["severity"]) == (False, None, "critical")
    assert evil["message"] == (
        "Error executing rule: rule rejected by the validator: "
        'a rule is one boolean expression: ";" is not allowed (position 5)'
    )
    # The other rules of the same table still ran.
    assert results["customer_email_not_null"]["score"] == Decimal("1.0000")
    assert results["customer_id_unique"]["score"] == Decimal("1.0000")
    assert no_pwned(conn)


def test_structured_rules_compile_to_quoted_sql(conn):
    rows = [
        add_rule(
            conn, "s_in", "erp_orders", "validity", column="status", operator="in", value='["open", "x\'y"]'
        ),
        add_rule(
            conn,
            "s_between",
            "erp_orders",
            "validity",
            column="total_amount",
            operator="between",
            value="[0, 1000]",
        ),
        add_rule(
            conn,
            "s_regex",
            "erp_orders",
            "validity",
            column="order_number",
            operator="regex",
            value='"^SO-[0-9]+$"',
        ),
        add_rule(conn, "s_nn", "erp_orders", "completeness", column="customer_id"),
        add_rule(
            conn, "s_cons", "erp_orders", "consistency", column="customer_id", ref_table="crm_customers"
        ),
        add_rule(conn, "s_fresh", "erp_orders", "freshness", column="created_at", max_age="2 hours"),
        add_rule(conn, "s_uniq", "erp_orders", "uniqueness", 'customer_id, "order_number"'),
    ]
    assert [r["normalized_definition"] for r in rows] == [
        "status IN ('open', 'x''y')",
        "total_amount BETWEEN '0' AND '1000'",
        "order_number ~ '^SO-[0-9]+$'",
        "customer_id IS NOT NULL",
        "customer_id -> crm_customers.customer_id",
        "max(created_at) newer than 02:00:00",
        "unique (customer_id, order_number)",
    ]


INVALID_RULES_ARE_REJECTED_WITH_A_REASON_CASES = [
    (
        {"table": "nosuch", "rule_type": "validity", "expression": "a > 1"},
        'table "nosuch" does not exist',
    ),
    (
        {"table": "pg_catalog.pg_authid", "rule_type": "completeness", "column": "rolname"},
        "data-quality rules cannot read system schemas",
    ),
    (
        {
            "table": "erp_orders",
            "rule_type": "validity",
            "column": "nosuch",
            "operator": ">",
            "value": "0",
        },
        'column "nosuch" does not exist in table erp_orders',
    ),
    (
        {
            "table": "erp_orders",
            "rule_type": "validity",
            "column": "total_amount",
            "operator": "between",
            "value": '[0, "abc"]',
        },
        'invalid input syntax for type numeric: "abc"',
    ),
    (
        {
            "table": "erp_orders",
            "rule_type": "validity",
            "column": "total_amount",
            "operator": "between",
            "value": "5",
        },
        "operator between needs a value [min, max]",
    ),
    (
        {
            "table": "erp_orders",
            "rule_type": "validity",
            "column": "status",
            "operator": "in",
            "value": '"a"',
        },
        "operator in needs a non-empty array of scalar values",
    ),
    (
        {"table": "erp_orders", "rule_type": "freshness", "column": "customer_id", "max_age": "1 day"},
        'freshness column "customer_id" is bigint, not a timestamp or date',
    ),
    (
        {"table": "erp_orders", "rule_type": "freshness", "column": "created_at"},
        "freshness rules need column_name (a timestamp or date column) and max_age",
    ),
    (
        {
            "table": "erp_orders",
            "rule_type": "consistency",
            "column": "customer_id",
            "ref_table": "nosuch",
        },
        'table "nosuch" does not exist',
    ),
    (
        {"table": "erp_orders", "rule_type": "uniqueness", "expression": "customer_id; DROP TABLE x"},
        "uniqueness rules need a comma-separated list of columns",
    ),
    (
        {
            "table": "erp_orders",
            "rule_type": "validity",
            "expression": "total_amount > 0",
            "column": "status",
        },
        "give either rule_expression or column_name/operator/value, not both",
    ),
    ({"table": "erp_orders", "rule_type": "sanity", "expression": "true"}, 'unknown rule type "sanity"'),
]


def test_invalid_rules_are_rejected_with_a_reason(conn):
    for case, message in INVALID_RULES_ARE_REJECTED_WITH_A_REASON_CASES:
        kwargs = dict(case)
        table = kwargs.pop("table")
        rule_type = kwargs.pop("rule_type")
        expression = kwargs.pop("expression", None)
        with pytest.raises(psycopg.Error) as exc:
            add_rule(conn, "bad_rule", table, rule_type, expression, **kwargs)
        assert message in exc.value.diag.message_primary, case
        assert conn.execute("SELECT count(*) AS n FROM dq_rule_definitions").fetchone()["n"] == 4


def test_views_are_trusted_only_when_owned_by_the_engine_owner(conn):
    conn.execute("CREATE VIEW own_view AS SELECT customer_id, email FROM crm_customers")
    assert add_rule(conn, "own_view_email", "own_view", "completeness", column="email")["rule_id"] > 0
    conn.execute("CREATE ROLE dq_someone NOLOGIN")
    try:
        conn.execute("CREATE VIEW their_view AS SELECT customer_id FROM crm_customers")
        conn.execute("ALTER VIEW their_view OWNER TO dq_someone")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is not owned by the owner of the DQ"):
            add_rule(conn, "their_view_id", "their_view", "completeness", column="customer_id")
    finally:
        conn.execute("DROP VIEW IF EXISTS their_view")
        conn.execute("DROP ROLE dq_someone")


def test_a_broken_rule_can_be_switched_off(conn):
    conn.execute("CREATE TABLE scratch (a int)")
    add_rule(conn, "scratch_a", "scratch", "completeness", column="a")
    conn.execute("DROP TABLE scratch")
    conn.execute("UPDATE dq_rule_definitions SET is_active = false WHERE rule_name = 'scratch_a'")
    assert "scratch_a" not in run(conn)
    with pytest.raises(psycopg.errors.UndefinedTable, match='rejected: table "scratch" does not exist'):
        conn.execute("UPDATE dq_rule_definitions SET is_active = true WHERE rule_name = 'scratch_a'")
    # Switching off does not let a new definition in unchecked.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute(
            "UPDATE dq_rule_definitions SET is_active = false, table_name = 'crm_customers',"
            " column_name = NULL, rule_expression = %s WHERE rule_name = 'scratch_a'",
            (INJECTION,),
        )


# ----------------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------------


def test_known_share_of_nulls_gives_the_right_score(conn):
    customers(conn, 20, null_every=4)  # 5 of 20 emails are NULL
    only_rules(conn, "customer_email_not_null")
    rows = conn.execute("SELECT * FROM execute_data_quality_checks()").fetchall()
    assert rows == [
        {
            "rule_name": "customer_email_not_null",
            "table_name": "crm_customers",
            "rule_type": "completeness",
            "passed": False,
            "score": Decimal("0.7500"),
            "threshold_value": Decimal("0.9500"),
            "severity": "error",
            "message": "Quality score: 75.00% (threshold: 95.00%); 5 of 20 rows fail",
        }
    ]
    metric = conn.execute(
        "SELECT source_table, metric_name, metric_value, threshold_value, status, total_rows, passed_rows,"
        " failed_rows, details->>'rule_type' AS rule_type FROM data_quality_metrics"
    ).fetchone()
    assert metric == {
        "source_table": "crm_customers",
        "metric_name": "customer_email_not_null",
        "metric_value": Decimal("0.75"),
        "threshold_value": Decimal("0.9500"),
        "status": "fail",
        "total_rows": 20,
        "passed_rows": 15,
        "failed_rows": 5,
        "rule_type": "completeness",
    }


def test_score_equal_to_threshold_passes(conn):
    customers(conn, 20, null_every=20)  # 1 of 20 NULL: exactly 95 %
    r = run(conn, rule="customer_email_not_null")["customer_email_not_null"]
    assert (r["passed"], r["score"], r["status"]) == (True, Decimal("0.9500"), "pass")
    assert r["message"] == "Quality score: 95.00% (threshold: 95.00%); 1 of 20 rows fail"


def test_empty_table_passes_with_warn_and_no_score(conn):
    r = run(conn, rule="customer_email_not_null")["customer_email_not_null"]
    assert (r["passed"], r["score"], r["status"], r["total_rows"]) == (True, None, "warn", 0)
    assert r["message"] == "No rows in crm_customers; nothing to check"


def test_uniqueness(conn):
    # (customer_id is NOT NULL: the sales rep is the nullable column here)
    for i, rep in enumerate([1, 1, 2, 3, None], start=1):
        order(conn, i, i, sales_rep_id=rep)
    add_rule(conn, "orders_customer_unique", "erp_orders", "uniqueness", "sales_rep_id")
    add_rule(conn, "orders_customer_number_unique", "erp_orders", "uniqueness", "sales_rep_id, order_number")
    res = run(conn, table="erp_orders")
    # 3 distinct non-NULL rep ids in 5 rows (the NULL counts against uniqueness, as in the spec).
    single = res["orders_customer_unique"]
    assert (single["score"], single["passed"], single["failed_rows"]) == (Decimal("0.6000"), False, 2)
    assert single["message"] == "Quality score: 60.00% (threshold: 100.00%); 3 distinct keys in 5 rows"
    # (sales_rep_id, order_number) pairs are distinct, but one has a NULL part: 4 of 5.
    assert res["orders_customer_number_unique"]["score"] == Decimal("0.8000")


def test_validity_spec_rule(conn):
    for i in range(1, 11):
        order(conn, i, i, amount="-5.00" if i == 3 else "10.00")
    r = run(conn, table="erp_orders")["order_amount_positive"]
    assert (r["passed"], r["score"], r["severity"]) == (False, Decimal("0.9000"), "warning")
    assert r["message"] == "Quality score: 90.00% (threshold: 99.00%); 1 of 10 rows fail"


def test_accuracy_spec_rule(conn):
    conn.execute(
        """INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount)
           SELECT g, 1, CASE WHEN g <= 8 THEN now() - interval '1 day' ELSE now() - interval '30 days' END, 1
           FROM generate_series(1, 10) g"""
    )
    r = run(conn, table="financial_transactions")["transaction_timestamp_recent"]
    assert (r["passed"], r["score"], r["status"]) == (True, Decimal("0.8000"), "pass")
    conn.execute(
        "UPDATE financial_transactions SET transaction_timestamp = now() - interval '30 days'"
        " WHERE transaction_id = 8"
    )
    r = run(conn, table="financial_transactions")["transaction_timestamp_recent"]
    assert (r["passed"], r["score"], r["status"]) == (False, Decimal("0.7000"), "fail")


def test_consistency_every_order_customer_exists(conn):
    customers(conn, 5)
    for i in range(1, 6):
        order(conn, i, i)
    order(conn, 6, 99)  # no such customer
    add_rule(
        conn,
        "orders_customer_exists",
        "erp_orders",
        "consistency",
        column="customer_id",
        ref_table="crm_customers",
        severity="error",
    )
    r = run(conn, rule="orders_customer_exists")["orders_customer_exists"]
    assert (r["passed"], r["score"], r["failed_rows"], r["total_rows"]) == (False, Decimal("0.8333"), 1, 6)
    assert r["message"] == (
        "Quality score: 83.33% (threshold: 100.00%); "
        "1 of 6 rows reference a missing crm_customers.customer_id"
    )


def test_freshness(conn):
    add_rule(conn, "orders_fresh_1h", "erp_orders", "freshness", column="created_at", max_age="1 hour")
    add_rule(conn, "orders_fresh_1d", "erp_orders", "freshness", column="created_at", max_age="1 day")
    empty = run(conn, table="erp_orders")
    assert (empty["orders_fresh_1d"]["passed"], empty["orders_fresh_1d"]["score"]) == (
        False,
        Decimal("0.0000"),
    )
    assert empty["orders_fresh_1d"]["message"] == (
        "No value in erp_orders.created_at: the table is empty or the column is all NULL"
    )
    order(conn, 1, 1, created_at="2000-01-01T00:00:00Z")
    order(conn, 2, 1)
    conn.execute("UPDATE erp_orders SET created_at = now() - interval '2 hours' WHERE order_id = 2")
    res = run(conn, table="erp_orders")
    assert (res["orders_fresh_1h"]["passed"], res["orders_fresh_1h"]["score"]) == (False, Decimal("0.0000"))
    assert res["orders_fresh_1h"]["message"].startswith("Newest created_at is 02:00:")
    assert res["orders_fresh_1h"]["message"].endswith(" old (max age 01:00:00)")
    assert (res["orders_fresh_1d"]["passed"], res["orders_fresh_1d"]["score"]) == (True, Decimal("1.0000"))


def test_predicate_rules_of_a_table_share_one_scan(conn):
    customers(conn, 10, null_every=5)
    add_rule(conn, "email_has_at", "crm_customers", "validity", "email LIKE '%@%'", threshold=Decimal("0.5"))
    add_rule(conn, "id_small", "crm_customers", "validity", "customer_id <= 3", threshold=Decimal("0.5"))
    res = run(conn, table="crm_customers")
    # One query for the three predicate rules: they share its duration; uniqueness ran on its own.
    durations = {res[n]["duration_ms"] for n in ("customer_email_not_null", "email_has_at", "id_small")}
    assert len(durations) == 1
    assert res["email_has_at"]["score"] == Decimal("0.8000")  # NULL emails do not satisfy LIKE
    assert res["id_small"]["score"] == Decimal("0.3000")
    assert res["customer_email_not_null"]["score"] == Decimal("0.8000")


def test_failing_rule_does_not_abort_the_run(conn):
    for i in range(1, 6):
        order(conn, i, i, amount=str(i))
    # Division by zero on the row with total_amount = 3, at run time only.
    add_rule(
        conn, "broken_division", "erp_orders", "validity", "100 / (total_amount - 3) > 0", severity="critical"
    )
    add_rule(conn, "amount_small", "erp_orders", "validity", "total_amount < 5", threshold=Decimal("0.5"))
    conn.execute("CREATE TABLE scratch (a int)")
    add_rule(conn, "scratch_a", "scratch", "completeness", column="a")
    conn.execute("DROP TABLE scratch")

    res = run(conn)
    assert res["broken_division"]["status"] == "error"
    assert res["broken_division"]["message"] == "Error executing rule: division by zero"
    assert (res["broken_division"]["passed"], res["broken_division"]["score"]) == (False, None)
    assert res["scratch_a"]["status"] == "error"
    assert res["scratch_a"]["message"] == (
        'Error executing rule: rule rejected by the validator: table "scratch" does not exist'
    )
    # The rules that share the broken rule's scan were retried alone and have their scores.
    assert res["amount_small"]["score"] == Decimal("0.8000")
    assert res["order_amount_positive"]["score"] == Decimal("1.0000")
    run_row = conn.execute("SELECT * FROM dq_runs ORDER BY run_id DESC LIMIT 1").fetchone()
    assert (
        run_row["status"],
        run_row["rules_total"],
        run_row["rules_errored"],
        run_row["severe_failures"],
    ) == (
        "error",
        7,
        2,
        1,
    )
    error_row = conn.execute(
        "SELECT status, metric_value, details->>'error' AS error, details->>'sqlstate' AS sqlstate"
        " FROM data_quality_metrics WHERE metric_name = 'broken_division'"
    ).fetchone()
    assert error_row == {
        "status": "error",
        "metric_value": None,
        "error": "division by zero",
        "sqlstate": "22012",
    }


def test_each_query_has_a_time_budget(conn):
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount)"
        " SELECT g, g, now(), 1 FROM generate_series(1, 200000) g"
    )
    add_rule(
        conn,
        "slow_rule",
        "financial_transactions",
        "validity",
        "amount::text ~ '^[0-9]+(\\.[0-9]+)?$'",
        timeout_ms=1,
        severity="error",
    )
    add_rule(conn, "amount_unique", "financial_transactions", "uniqueness", "transaction_id")
    res = run(conn, table="financial_transactions")
    # The shared scan (slow_rule + the spec's accuracy rule) gets the larger budget (30 s default) ...
    assert res["slow_rule"]["status"] == "pass"
    # ... a rule's own 1 ms budget applies when it runs alone, and a run-wide budget overrides all.
    alone = run(conn, rule="slow_rule")["slow_rule"]
    assert (alone["status"], alone["message"]) == (
        "error",
        "Error executing rule: time budget of 1 ms exceeded",
    )
    capped = run(conn, table="financial_transactions", timeout_ms=1)
    assert {r["status"] for r in capped.values()} == {"error"}
    assert capped["amount_unique"]["message"] == "Error executing rule: time budget of 1 ms exceeded"
    # Without a cap the same rules finish.
    assert run(conn, table="financial_transactions")["amount_unique"]["score"] == Decimal("1.0000")


def test_run_id_groups_results_and_runs_are_summarised(conn):
    customers(conn, 10, null_every=2)
    first = run(conn)
    conn.execute("UPDATE crm_customers SET email = 'x@example.com' WHERE email IS NULL")
    second = run(conn)
    run_ids = {r["run_id"] for r in first.values()} | {r["run_id"] for r in second.values()}
    assert len({r["run_id"] for r in first.values()}) == 1
    assert len(run_ids) == 2
    runs = conn.execute(
        "SELECT r.run_id, r.status, r.rules_total, r.rules_passed, r.rules_failed, r.severe_failures,"
        " (SELECT count(*) FROM data_quality_metrics m WHERE m.run_id = r.run_id) AS metrics"
        " FROM dq_runs r ORDER BY r.run_id"
    ).fetchall()
    first_id, second_id = sorted(run_ids)
    assert [tuple(r.values()) for r in runs] == [
        (first_id, "failed", 4, 3, 1, 1, 4),
        (second_id, "passed", 4, 4, 0, 0, 4),
    ]
    audit = conn.execute(
        "SELECT action, result->>'status' AS status FROM ops_audit_log"
        " WHERE action = 'dq.run' ORDER BY audit_id"
    ).fetchall()
    assert [(a["action"], a["status"]) for a in audit] == [("dq.run", "failed"), ("dq.run", "passed")]


def test_long_rule_names_do_not_overflow(conn):
    customers(conn, 3)
    long_fail = "rule_" + "x" * 95  # 100 characters, the column's limit
    long_err = "broken_" + "y" * 60
    add_rule(conn, long_fail, "crm_customers", "validity", "customer_id > 5", severity="info")
    add_rule(conn, long_err, "crm_customers", "validity", "1 / (customer_id - 2) > 0", severity="info")
    res = run(conn, table="crm_customers")
    assert res[long_fail]["status"] == "fail"
    assert res[long_err]["status"] == "error"
    names = {r["metric_name"] for r in conn.execute("SELECT metric_name FROM data_quality_metrics")}
    assert {long_fail, long_err} <= names


def test_zero_argument_call_and_filters(conn):
    customers(conn, 2)
    assert len(conn.execute("SELECT * FROM execute_data_quality_checks()").fetchall()) == 4
    filtered = conn.execute("SELECT rule_name FROM execute_data_quality_checks('crm_customers')").fetchall()
    assert [r["rule_name"] for r in filtered] == ["customer_email_not_null", "customer_id_unique"]
    one = conn.execute(
        "SELECT rule_name FROM execute_data_quality_checks('crm_customers', 'customer_id_unique')"
    ).fetchall()
    assert [r["rule_name"] for r in one] == ["customer_id_unique"]
    with pytest.raises(psycopg.errors.NoDataFound, match='no DQ rule is named "nosuch"'):
        run(conn, rule="nosuch")
    with pytest.raises(psycopg.errors.NoDataFound, match='no active DQ rule matches table "nosuch"'):
        run(conn, table="nosuch")
    # A named rule runs even when inactive; a plain run skips it.
    conn.execute("UPDATE dq_rule_definitions SET is_active = false WHERE rule_name = 'customer_id_unique'")
    assert list(run(conn, rule="customer_id_unique")) == ["customer_id_unique"]
    assert "customer_id_unique" not in run(conn)


def test_notify_on_run_and_on_severe_failures(conn, db_dsn):
    customers(conn, 10, null_every=2)  # customer_email_not_null (error) fails
    for i in range(1, 3):
        order(conn, i, i, amount="-1")  # order_amount_positive (warning) fails: no message for it
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("LISTEN opsconsole_dq")
        res = run(conn)
        import json

        events = [json.loads(n.payload) for n in listener.notifies(timeout=2, stop_after=2)]
    run_id = res["customer_email_not_null"]["run_id"]
    assert events == [
        {
            "event": "rule_failed",
            "run_id": run_id,
            "rule_name": "customer_email_not_null",
            "table_name": "crm_customers",
            "severity": "error",
            "status": "fail",
            "score": 0.5,
        },
        {
            "event": "run_completed",
            "run_id": run_id,
            "status": "failed",
            "rules": 4,
            "failed": 2,
            "errors": 0,
            "severe": 1,
        },
    ]


def test_latest_results_view_shows_trend(conn):
    customers(conn, 4)
    only_rules(conn, "customer_email_not_null")
    run(conn)  # 1.0
    conn.execute("UPDATE crm_customers SET email = NULL WHERE customer_id = 1")
    run(conn)  # 0.75
    conn.execute("UPDATE crm_customers SET email = NULL WHERE customer_id = 2")
    last = run(conn)["customer_email_not_null"]  # 0.5
    row = conn.execute(
        "SELECT last_run_id, last_status, last_passed, last_score, previous_score, score_change,"
        " recent_scores, recent_statuses, recent_pass_rate, definition FROM dq_latest_results"
        " WHERE rule_name = 'customer_email_not_null'"
    ).fetchone()
    assert row == {
        "last_run_id": last["run_id"],
        "last_status": "fail",
        "last_passed": False,
        "last_score": Decimal("0.5000"),
        "previous_score": Decimal("0.7500"),
        "score_change": Decimal("-0.2500"),
        "recent_scores": [Decimal("1.0000"), Decimal("0.7500"), Decimal("0.5000")],
        "recent_statuses": ["pass", "fail", "fail"],
        "recent_pass_rate": Decimal("0.3333"),
        "definition": "email IS NOT NULL",
    }
    never_run = conn.execute(
        "SELECT last_run_id, recent_scores FROM dq_latest_results WHERE rule_name = 'customer_id_unique'"
    ).fetchone()
    assert never_run == {"last_run_id": None, "recent_scores": None}


# ----------------------------------------------------------------------------------------------------
# validate_data_quality
# ----------------------------------------------------------------------------------------------------


def validate(conn, table: str, rules: str):
    return [
        tuple(r.values())
        for r in conn.execute("SELECT * FROM validate_data_quality(%s, %s::jsonb)", (table, rules)).fetchall()
    ]


def test_validate_not_null_and_unique(conn):
    customers(conn, 10, null_every=5)  # customers 5 and 10 have no email
    conn.execute("UPDATE crm_customers SET email = 'dup@example.com' WHERE customer_id IN (1, 2, 3)")
    conn.execute("UPDATE crm_customers SET phone = '555' WHERE customer_id IN (4, 6)")
    assert validate(conn, "crm_customers", '{"not_null_check": "email"}') == [
        ("not_null_check", "FAIL", "Found 2 null values in email", 2)
    ]
    assert validate(conn, "crm_customers", '{"not_null_check": ["customer_id", "email"]}') == [
        ("not_null_check", "PASS", "Found 0 null values in customer_id", 0),
        ("not_null_check", "FAIL", "Found 2 null values in email", 2),
    ]
    assert validate(conn, "crm_customers", '{"unique_check": "email"}') == [
        ("unique_check", "FAIL", "Found 1 duplicate values in (email), in 3 rows", 3)
    ]
    assert validate(conn, "crm_customers", '{"unique_check": ["email", "phone"]}') == [
        ("unique_check", "PASS", "Found 0 duplicate values in (email, phone), in 0 rows", 0)
    ]
    assert validate(conn, "crm_customers", '{"unique_check": "customer_id"}') == [
        ("unique_check", "PASS", "Found 0 duplicate values in (customer_id), in 0 rows", 0)
    ]


def test_validate_range_check_forms(conn):
    for i in range(1, 11):
        order(conn, i, i, amount=str(i * 10))  # 10 .. 100
    order(conn, 11, 11, amount=None)  # NULL is not out of range
    assert validate(
        conn, "erp_orders", '{"range_check": {"column": "total_amount", "min": 20, "max": 80}}'
    ) == [("range_check", "FAIL", "Found 3 values outside range (total_amount in [20, 80])", 3)]
    assert validate(conn, "erp_orders", '{"range_check": {"column": "total_amount", "min": "10.00"}}') == [
        ("range_check", "PASS", "Found 0 values outside range (total_amount in [10.00, +inf])", 0)
    ]
    assert validate(conn, "erp_orders", '{"range_check": "total_amount BETWEEN 0 AND 50"}') == [
        ("range_check", "FAIL", "Found 5 values outside range (total_amount BETWEEN 0 AND 50)", 5)
    ]
    assert validate(
        conn,
        "erp_orders",
        '{"range_check": [{"expression": "total_amount < 95"},'
        ' {"column": "order_date", "max": "2999-01-01"}]}',
    ) == [
        ("range_check", "FAIL", "Found 1 values outside range (total_amount < 95)", 1),
        ("range_check", "PASS", "Found 0 values outside range (order_date in [-inf, 2999-01-01])", 0),
    ]


def test_validate_unknown_rule_is_skipped_and_all_rules_run(conn):
    customers(conn, 3)
    assert validate(
        conn,
        "crm_customers",
        '{"not_null_check": "email", "regex_check": "x", "unique_check": "customer_id"}',
    ) == [
        ("regex_check", "SKIP", "Unknown rule type", 0),
        ("unique_check", "PASS", "Found 0 duplicate values in (customer_id), in 0 rows", 0),
        ("not_null_check", "PASS", "Found 0 null values in email", 0),
    ]


VALIDATE_UNKNOWN_TABLE_OR_COLUMN_IS_A_CLEAR_ERROR_CASES = [
    (
        "nosuch",
        '{"not_null_check": "email"}',
        psycopg.errors.UndefinedTable,
        'table "nosuch" does not exist',
    ),
    (
        "crm_customers; DROP TABLE crm_customers",
        '{"not_null_check": "email"}',
        psycopg.errors.UndefinedTable,
        "does not exist",
    ),
    (
        "crm_customers",
        '{"not_null_check": "nosuch"}',
        psycopg.errors.UndefinedColumn,
        'column "nosuch" does not exist in table crm_customers',
    ),
    (
        "crm_customers",
        '{"unique_check": "email) FROM x; --"}',
        psycopg.errors.UndefinedColumn,
        "does not exist in table crm_customers",
    ),
    (
        "crm_customers",
        '{"not_null_check": 5}',
        psycopg.errors.InvalidParameterValue,
        "not_null_check takes a column name or an array of column names",
    ),
    (
        "crm_customers",
        '{"unique_check": {"a": 1}}',
        psycopg.errors.InvalidParameterValue,
        "unique_check takes a column name or an array of column names",
    ),
    (
        "crm_customers",
        '["not_null_check"]',
        psycopg.errors.InvalidParameterValue,
        "validation rules must be a JSON object",
    ),
]


def test_validate_unknown_table_or_column_is_a_clear_error(conn):
    for table, rules, error, message in VALIDATE_UNKNOWN_TABLE_OR_COLUMN_IS_A_CLEAR_ERROR_CASES:
        with pytest.raises(error) as exc:
            validate(conn, table, rules)
        assert message in exc.value.diag.message_primary, (table, rules)
        assert conn.execute("SELECT to_regclass('crm_customers') IS NOT NULL AS ok").fetchone()["ok"]


VALIDATE_RANGE_CHECK_INJECTION_ATTEMPTS_CASES = [
    (f'"{INJECTION}"', '";" is not allowed'),
    ('"true) OR (SELECT pg_sleep(1)) IS NULL OR (true"', "unbalanced parentheses at position 5"),
    ('"total_amount > 0 OR (SELECT pg_sleep(1)) IS NULL"', "subqueries (SELECT) are not allowed"),
    ('{"expression": "1=1) ; CREATE TABLE pwned (a int); --"}', "unbalanced parentheses at position 4"),
    ('{"expression": "1=1 ; CREATE TABLE pwned (a int)"}', '";" is not allowed (position 5)'),
    (
        '{"column": "total_amount", "min": "0; CREATE TABLE pwned (a int)"}',
        'invalid input syntax for type numeric: "0; CREATE TABLE pwned (a int)"',
    ),
    (
        '{"column": "total_amount\\"; CREATE TABLE pwned (a int); --", "min": 0}',
        "does not exist in table",
    ),
    (
        '{"column": "total_amount", "min": 0, "sql": "CREATE TABLE pwned (a int)"}',
        "range_check accepts only the keys column, min, max and expression",
    ),
    ('{"column": "total_amount", "max": {"nested": 1}}', 'range_check needs "column" and a scalar'),
]


def test_validate_range_check_injection_attempts(conn):
    order(conn, 1, 1)
    for range_check, message in VALIDATE_RANGE_CHECK_INJECTION_ATTEMPTS_CASES:
        with pytest.raises(psycopg.Error) as exc:
            validate(conn, "erp_orders", f'{{"range_check": {range_check}}}')
        assert message in exc.value.diag.message_primary, range_check
        assert no_pwned(conn)


# ----------------------------------------------------------------------------------------------------
# Property: the validator either rejects with a validation error, or returns a canonical form that it
# maps to itself and that runs inside the real check query. Expressions come from a small grammar of
# allowed constructs, with hostile tokens spliced in at random places.
# ----------------------------------------------------------------------------------------------------

HOSTILE = [
    ";",
    "--",
    "/*",
    "SELECT",
    "pg_sleep(1)",
    '"pg_sleep"(1)',
    "$1",
    "$$",
    "current_user",
    ".",
    "[",
    "'",
    '"',
]


def expressions():
    from hypothesis import strategies as st

    ws = st.sampled_from(["", " ", "  ", "\n"])
    column = st.sampled_from(
        ["email", "EMAIL", '"email"', "customer_id", "phone", "created_at", "first_name"]
    )
    literal = st.sampled_from(
        ["'a'", "'it''s'", "'x\\'", "E'y\\\\'", "1", "2.5", ".5", "1e3", "NULL", "TRUE"]
    )
    operand = st.deferred(
        lambda: (
            column
            | literal
            | st.builds(
                lambda f, o: f"{f}({o})", st.sampled_from(["lower", "upper", "length", "btrim"]), operand
            )
            | st.builds(lambda o, t: f"{o}::{t}", column, st.sampled_from(["text", "date", "numeric"]))
            | st.builds(lambda a, b: f"coalesce({a}, {b})", operand, operand)
        )
    )
    comparison = (
        st.builds(
            lambda a, op, b, w: f"{a}{w}{op}{w}{b}",
            operand,
            st.sampled_from(["=", "<>", "<", ">=", "~", "LIKE"]),
            operand,
            ws,
        )  # fmt: skip
        | st.builds(lambda a, n: f"{a} IS {n}NULL", operand, st.sampled_from(["", "NOT "]))
        | st.builds(
            lambda a, xs: f"{a} IN ({', '.join(xs)})", operand, st.lists(literal, min_size=1, max_size=3)
        )
        | st.builds(lambda a, lo, hi: f"{a} BETWEEN {lo} AND {hi}", operand, literal, literal)
        | st.just("created_at > now() - INTERVAL '1 day'")
    )
    expr = st.recursive(
        comparison,
        lambda inner: (
            st.builds(lambda a, op, b: f"{a} {op} {b}", inner, st.sampled_from(["AND", "or"]), inner)
            | st.builds(lambda a: f"NOT ({a})", inner)
            | st.builds(lambda a: f"({a})", inner)
        ),
        max_leaves=5,
    )

    def splice(text_and_choice):
        text, (where, token) = text_and_choice
        if token is None:
            return text
        at = int(where * len(text))
        return text[:at] + token + text[at:]

    hostile = st.one_of(st.just((0.0, None)), st.tuples(st.floats(0, 1), st.sampled_from(HOSTILE)))
    return st.tuples(expr, hostile).map(splice)


def check_expression(conn, expression):
    """The property, for one expression; returns whether it was accepted."""
    try:
        canonical = conn.execute(
            "SELECT dq_validated_predicate('crm_customers', %s) AS p", (expression,)
        ).fetchone()["p"]
    except psycopg.Error as exc:
        assert exc.sqlstate in ("22023", "42703"), (expression, exc.sqlstate, str(exc))
        return False
    again = conn.execute("SELECT dq_validated_predicate('crm_customers', %s) AS p", (canonical,)).fetchone()[
        "p"
    ]
    assert again == canonical, expression
    pass_sql = conn.execute(
        "SELECT dq_predicate_pass_sql('crm_customers', ARRAY[%s]) AS q", (canonical,)
    ).fetchone()["q"]
    # Run it for real ($1 is the deadline). A data error (e.g. email::date meeting a real email) is fine;
    # a structural one is not.
    conn.execute(f"PREPARE t_probe(timestamptz) AS {pass_sql}")
    try:
        with contextlib.suppress(psycopg.DataError):
            conn.execute("EXECUTE t_probe('infinity')")
    finally:
        conn.execute("DEALLOCATE t_probe")
    return True


def test_validator_is_idempotent_or_rejects(conn):
    from hypothesis import HealthCheck, given, settings

    customers(conn, 3, null_every=2)
    accepted = []

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(expressions())
    def check(expression):
        accepted.append(check_expression(conn, expression))

    check()
    assert any(accepted) and not all(accepted)
    assert no_pwned(conn)

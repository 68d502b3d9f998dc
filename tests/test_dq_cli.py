"""`opsconsole dq ...` through click's CliRunner against a real migrated database."""

from __future__ import annotations

import json

import psycopg
import pytest
from click.testing import CliRunner

from opsconsole import output
from opsconsole.cli import main
from tests.orders import add_orders

INJECTION = "true; CREATE TABLE pwned AS SELECT current_user; SELECT 1"


@pytest.fixture
def cli(db_dsn, monkeypatch):
    # Wide consoles, so that table cells and error sentences are not wrapped.
    monkeypatch.setattr(output.console, "width", 250)
    monkeypatch.setattr(output.err_console, "width", 250)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, ["--dsn", db_dsn, *args], catch_exceptions=False)

    return invoke


def seed(conn, null_emails: int) -> None:
    """10 customers, null_emails of them without an email; 4 orders, one with a missing customer."""
    conn.execute(
        "INSERT INTO crm_customers (customer_id, email)"
        " SELECT g, CASE WHEN g <= %s THEN NULL ELSE 'c' || g || '@example.com' END"
        " FROM generate_series(1, 10) g",
        (null_emails,),
    )
    add_orders(
        conn, *({"order_id": g, "customer_id": 99 if g == 4 else g, "total_amount": 10} for g in range(1, 5))
    )


def test_run_json_passes_with_exit_code_zero(cli, conn):
    seed(conn, null_emails=0)
    result = cli("dq", "run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["status"], report["rules_total"], report["rules_passed"], report["severe_failures"]) == (
        "passed",
        4,
        4,
        0,
    )
    scores = {r["rule_name"]: (r["status"], r["score"]) for r in report["results"]}
    assert scores == {
        "customer_email_not_null": ("pass", 1),
        "customer_id_unique": ("pass", 1),
        "order_amount_positive": ("pass", 1),
        "transaction_timestamp_recent": ("warn", None),
    }


def test_run_exits_1_when_an_error_or_critical_rule_fails(cli, conn):
    seed(conn, null_emails=3)  # customer_email_not_null (severity error): 70 % < 95 %
    result = cli("dq", "run", "--table", "crm_customers")
    assert result.exit_code == 1
    assert "customer_email_not_null" in result.stdout
    assert "70.00%" in result.stdout
    assert "2 rule(s): 1 passed, 1 failed, 0 could not run." in result.stdout
    assert "1 rule(s) of severity error or critical failed or could not run." in result.stderr
    # The same data but only a warning-level failure: exit 0.
    conn.execute("UPDATE erp_orders SET total_amount = -1 WHERE order_id = 1")
    warn_only = cli("--json", "dq", "run", "--rule", "order_amount_positive")
    assert warn_only.exit_code == 0
    assert json.loads(warn_only.stdout)["results"][0]["status"] == "fail"


def test_run_unknown_table_is_one_sentence(cli, conn):
    result = cli("dq", "run", "--table", "nosuch")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        'error: Cannot run the DQ checks: no active DQ rule matches table "nosuch".'
    )
    assert "Traceback" not in result.output
    audit = conn.execute("SELECT action, status, arguments, reason FROM ops_audit_log").fetchall()
    assert audit == [
        {
            "action": "dq.run",
            "status": "error",
            "arguments": {"table": "nosuch", "rule": None, "timeout_ms": None},
            "reason": 'Cannot run the DQ checks: no active DQ rule matches table "nosuch".',
        }
    ]


def test_add_structured_and_expression_rules_then_run(cli, conn):
    seed(conn, null_emails=0)
    added = cli(
        "dq", "add", "orders_customer_exists", "--table", "erp_orders", "--type", "consistency",
        "--column", "customer_id", "--references", "crm_customers.customer_id", "--severity", "critical",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith('Added DQ rule "orders_customer_exists" (id ')
    assert added.stdout.rstrip().endswith("customer_id -> crm_customers.customer_id")

    expr = cli(
        "--json", "dq", "add", "email_domain", "--table", "crm_customers", "--type", "validity",
        "--expression", "lower(email) LIKE '%@example.com'", "--threshold", "0.9",
    )  # fmt: skip
    assert expr.exit_code == 0, expr.output
    row = json.loads(expr.stdout)
    assert (row["normalized_definition"], row["threshold_value"]) == (
        "lower(email) LIKE '%@example.com'",
        0.9,
    )

    valued = cli(
        "dq", "add", "order_status_known", "--table", "erp_orders", "--type", "validity",
        "--column", "status", "--operator", "in", "--value", '["open", "closed"]',
    )  # fmt: skip
    assert valued.exit_code == 0, valued.output

    result = cli("--json", "dq", "run", "--table", "erp_orders")
    assert result.exit_code == 1  # the critical consistency rule fails: order 4 has no customer
    by_name = {r["rule_name"]: r for r in json.loads(result.stdout)["results"]}
    assert (by_name["orders_customer_exists"]["score"], by_name["orders_customer_exists"]["failed_rows"]) == (
        0.75,
        1,
    )
    assert by_name["order_status_known"]["score"] == 0  # status is NULL everywhere


def test_add_rejects_injection_with_a_clear_message(cli, conn):
    result = cli(
        "dq", "add", "evil", "--table", "crm_customers", "--type", "validity", "--expression", INJECTION
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        'error: DQ rule "evil" rejected: a rule is one boolean expression: ";" is not allowed (position 5).'
    )
    assert "Traceback" not in result.output
    assert conn.execute("SELECT to_regclass('public.pwned') AS t").fetchone()["t"] is None
    assert (
        conn.execute("SELECT count(*) AS n FROM dq_rule_definitions WHERE rule_name = 'evil'").fetchone()["n"]
        == 0
    )
    audit = conn.execute(
        "SELECT status, reason, arguments->>'rule_expression' AS expr FROM ops_audit_log"
        " WHERE action = 'dq.add_rule'"
    ).fetchall()
    assert audit == [
        {
            "status": "error",
            "reason": 'DQ rule "evil" rejected: a rule is one boolean expression: '
            '";" is not allowed (position 5)',
            "expr": INJECTION,
        }
    ]


ADD_ERRORS_CASES = [
    (
        ["dup", "--table", "crm_customers", "--type", "validity", "--expression", "email IS NULL"],
        None,
    ),
    (
        [
            "customer_email_not_null",
            "--table",
            "crm_customers",
            "--type",
            "completeness",
            "--column",
            "email",
        ],
        'DQ rule "customer_email_not_null" rejected: '
        'a DQ rule named "customer_email_not_null" already exists.',
    ),
    (
        ["r1", "--table", "nosuch", "--type", "completeness", "--column", "email"],
        'DQ rule "r1" rejected: table "nosuch" does not exist.',
    ),
    (
        [
            "r2",
            "--table",
            "crm_customers",
            "--type",
            "freshness",
            "--column",
            "created_at",
            "--max-age",
            "soon",
        ],
        'DQ rule "r2" rejected: invalid input syntax for type interval: "soon".',
    ),
]


def test_add_errors(cli):
    for args, message in ADD_ERRORS_CASES:
        result = cli("dq", "add", *args)
        if message is None:
            assert result.exit_code == 0, result.output
            continue
        assert result.exit_code == 1, args
        assert result.stderr.strip() == f"error: {message}"


def test_add_bad_option_is_a_usage_error(cli):
    result = cli("dq", "add", "x", "--table", "crm_customers", "--type", "sanity")
    assert result.exit_code == 2
    assert "Invalid value for '--type'" in result.stderr


def test_rules_and_history(cli, conn):
    seed(conn, null_emails=0)
    assert cli("dq", "run").exit_code == 0
    conn.execute("UPDATE crm_customers SET email = NULL WHERE customer_id <= 5")
    assert cli("dq", "run").exit_code == 1

    rules = json.loads(cli("--json", "dq", "rules", "--table", "crm_customers").stdout)
    email = next(r for r in rules if r["rule_name"] == "customer_email_not_null")
    assert (email["last_status"], email["last_score"], email["recent_scores"], email["score_change"]) == (
        "fail",
        0.5,
        [1, 0.5],
        -0.5,
    )
    assert [r["rule_name"] for r in rules] == ["customer_email_not_null", "customer_id_unique"]

    table = cli("dq", "rules")
    assert table.exit_code == 0
    assert "email IS NOT NULL" in table.stdout
    assert "█▅" in table.stdout  # trend: 100 %, then 50 %

    hist = json.loads(cli("--json", "dq", "history", "customer_email_not_null").stdout)
    assert [(h["status"], h["score"], h["failed_rows"]) for h in hist] == [("fail", 0.5, 5), ("pass", 1, 0)]
    assert hist[0]["run_id"] > hist[1]["run_id"]
    limited = json.loads(cli("--json", "dq", "history", "customer_email_not_null", "--limit", "1").stdout)
    assert len(limited) == 1

    missing = cli("dq", "history", "nosuch")
    assert missing.exit_code == 1
    assert 'No DQ rule is named "nosuch"' in missing.stderr


def test_run_as_a_role_without_privileges_fails_cleanly(cli, conn, db_dsn):
    conn.execute("DROP ROLE IF EXISTS dq_nobody")
    conn.execute("CREATE ROLE dq_nobody LOGIN")
    try:
        dsn = psycopg.conninfo.make_conninfo(db_dsn, user="dq_nobody")
        try:
            psycopg.connect(dsn).close()
        except psycopg.OperationalError:
            pytest.skip("the test server does not let a new role log in without a password")
        result = CliRunner().invoke(main, ["--dsn", dsn, "dq", "run"], catch_exceptions=False)
        assert result.exit_code == 3
        assert "permission denied for function dq_run" in result.stderr
        assert "Traceback" not in result.output
    finally:
        conn.execute("DROP ROLE dq_nobody")

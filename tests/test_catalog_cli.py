"""`opsconsole catalog|lineage|lake` against a real database (CliRunner, --dsn)."""

from __future__ import annotations

import json

import psycopg
from click.testing import CliRunner

from opsconsole.cli import main


def run(dsn: str, *args: str):
    return CliRunner().invoke(main, ["--dsn", dsn, *args], catch_exceptions=False)


def as_json(result) -> object:
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_catalog_refresh_reports_counts_and_leaves_an_audit_row(db_dsn, conn):
    as_json(run(db_dsn, "catalog", "refresh", "--json"))  # re-label the cloned database's rows
    conn.execute("CREATE TABLE cli_t (id int, email text)")
    out = as_json(run(db_dsn, "catalog", "refresh", "--json"))
    assert (out["added"], out["changed"], out["removed"]) == (2, 0, 0)
    assert out["total"] == conn.execute("SELECT count(*) AS n FROM data_catalog").fetchone()["n"]
    conn.execute("ALTER TABLE cli_t DROP COLUMN email")
    out = as_json(run(db_dsn, "--json", "catalog", "refresh"))  # global --json works too
    assert (out["added"], out["changed"], out["removed"]) == (0, 0, 1)
    audit = conn.execute(
        "SELECT action, status, result FROM ops_audit_log "
        "WHERE action = 'refresh_data_catalog' ORDER BY audit_id"
    ).fetchall()
    assert len(audit) == 3
    assert audit[-1]["status"] == "ok" and audit[-1]["result"]["removed"] == 1
    table = run(db_dsn, "catalog", "refresh")
    assert table.exit_code == 0 and "added" in table.output


def test_catalog_show_lists_tables_and_columns(db_dsn, conn):
    conn.execute("CREATE TABLE cli_t (id int NOT NULL, email text, ssn text)")
    conn.execute("COMMENT ON COLUMN cli_t.email IS 'where we write'")
    run(db_dsn, "catalog", "refresh")
    tables = as_json(run(db_dsn, "catalog", "show", "--json"))
    mine = next(t for t in tables if t["table_name"] == "cli_t")
    assert (mine["object_type"], mine["columns"], mine["classification"]) == ("table", 3, "restricted")
    assert {t["table_name"] for t in tables} >= {"crm_customers", "erp_orders", "lakehouse_customers_current"}
    cols = as_json(run(db_dsn, "catalog", "show", "public.cli_t", "--json"))
    assert [(c["column_name"], c["is_nullable"], c["data_classification"]) for c in cols] == [
        ("id", False, "internal"),
        ("email", True, "confidential"),
        ("ssn", True, "restricted"),
    ]
    assert cols[1]["column_description"] == "where we write"
    text = run(db_dsn, "catalog", "show", "cli_t")
    assert text.exit_code == 0 and "where we write" in text.output and "public.cli_t" in text.output


def test_catalog_show_unknown_table_is_one_sentence(db_dsn):
    result = CliRunner().invoke(main, ["--dsn", db_dsn, "catalog", "show", "nope"])
    assert result.exit_code == 1
    assert "no table named nope" in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_lineage_up_down_and_both(db_dsn):
    down = as_json(run(db_dsn, "lineage", "crm_customers", "--down", "--json"))
    assert [(r["direction"], r["depth"], r["source_table"], r["target_table"]) for r in down] == [
        ("down", 1, "crm_customers", "customer_360_mv"),
        ("down", 1, "crm_customers", "data_quality_metrics"),
        ("down", 1, "crm_customers", "lakehouse_customers"),
        ("down", 2, "lakehouse_customers", "lakehouse_customers_current"),
    ]
    up = as_json(run(db_dsn, "lineage", "lakehouse_customers", "--up", "--json"))
    assert [(r["direction"], r["depth"], r["source_table"]) for r in up] == [("up", 1, "crm_customers")]
    both = as_json(run(db_dsn, "lineage", "lakehouse_customers", "--json"))
    assert [(r["direction"], r["target_table"]) for r in both] == [
        ("up", "lakehouse_customers"),
        ("down", "lakehouse_customers_current"),
    ]
    assert run(db_dsn, "lineage", "unknown_table").output.strip().endswith("no rows.")


def test_lake_history_shows_versions(db_dsn, conn):
    conn.execute("INSERT INTO crm_customers (customer_id, first_name, email) VALUES (42, 'Ada', 'a@x')")
    conn.execute("UPDATE crm_customers SET email = 'ada@x' WHERE customer_id = 42")
    conn.execute("DELETE FROM crm_customers WHERE customer_id = 42")
    rows = as_json(run(db_dsn, "lake", "history", "42", "--json"))
    assert [(r["version_number"], r["operation_type"], r["changed_fields"]) for r in rows] == [
        (1, "INSERT", None),
        (2, "UPDATE", ["email", "updated_at"]),
        (3, "DELETE", None),
    ]
    assert rows[1]["customer_data"]["email"] == "ada@x"
    text = run(db_dsn, "lake", "history", "42")
    assert text.exit_code == 0 and "UPDATE" in text.output and "DELETE" in text.output
    missing = CliRunner().invoke(main, ["--dsn", db_dsn, "lake", "history", "999"])
    assert missing.exit_code == 1 and "Customer 999 has no versions" in " ".join(missing.output.split())


def test_unmigrated_database_gets_a_sentence_not_a_traceback(empty_db_dsn):
    with psycopg.connect(empty_db_dsn, autocommit=True):
        pass
    result = CliRunner().invoke(main, ["--dsn", empty_db_dsn, "catalog", "refresh"])
    assert result.exit_code == 1
    assert "opsconsole db migrate" in " ".join(result.output.split()) and "Traceback" not in result.output

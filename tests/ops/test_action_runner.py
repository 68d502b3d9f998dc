"""The action runner: every outcome (ok, error, cancelled, connection lost) leaves one audit row."""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg.rows import dict_row

from opsconsole.db.connect import connect
from opsconsole.ops.actions import run_audited


def audit_rows(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT action, arguments, result, status, duration_ms, reason, application_name"
            " FROM ops_audit_log ORDER BY audit_id"
        )
        return cur.fetchall()


def test_success_is_audited_with_arguments_result_and_duration(db_dsn, conn):
    with connect(db_dsn, "action") as action_conn:
        outcome = run_audited(
            action_conn,
            "demo.ok",
            {"n": 3},
            lambda c: {"sum": c.execute("SELECT 1 + 2").fetchone()[0]},
            reason="test",
        )
    assert outcome.status == "ok" and outcome.result == {"sum": 3} and outcome.audit_id is not None
    [row] = audit_rows(conn)
    assert row["action"] == "demo.ok" and row["status"] == "ok" and row["reason"] == "test"
    assert row["arguments"] == {"n": 3} and row["result"] == {"sum": 3}
    assert row["application_name"] == "opsconsole:action"
    assert row["duration_ms"] >= 0


def test_an_error_is_audited_with_its_message(db_dsn, conn):
    with connect(db_dsn, "action") as action_conn:
        outcome = run_audited(action_conn, "demo.err", {}, lambda c: c.execute("SELECT 1/0").fetchone())
    assert outcome.status == "error" and outcome.message == "division by zero"
    [row] = audit_rows(conn)
    assert (row["action"], row["status"], row["result"]) == (
        "demo.err",
        "error",
        {"error": "division by zero"},
    )


def test_a_cancelled_statement_is_audited_as_cancelled(db_dsn, conn):
    with connect(db_dsn, "action") as action_conn:
        timer = threading.Timer(0.3, lambda: action_conn.cancel_safe())
        timer.start()
        started = time.monotonic()
        outcome = run_audited(
            action_conn, "demo.sleep", {}, lambda c: c.execute("SELECT pg_sleep(30)").fetchone()
        )
        timer.join()
    assert outcome.status == "cancelled"
    assert time.monotonic() - started < 10
    [row] = audit_rows(conn)
    assert (row["action"], row["status"]) == ("demo.sleep", "cancelled")


def test_when_the_connection_dies_the_audit_row_goes_through_a_fresh_one(db_dsn, conn):
    action_conn = connect(db_dsn, "action")
    pid = action_conn.info.backend_pid
    killer = threading.Timer(0.3, lambda: conn.execute("SELECT pg_terminate_backend(%s)", (pid,)))
    killer.start()
    outcome = run_audited(
        action_conn,
        "demo.killed",
        {},
        lambda c: c.execute("SELECT pg_sleep(30)").fetchone(),
        audit_conn=lambda: connect(db_dsn, "action"),
    )
    killer.join()
    action_conn.close()
    assert outcome.status == "error" and outcome.audit_id is not None
    [row] = audit_rows(conn)
    assert (row["action"], row["status"]) == ("demo.killed", "error")


def test_a_callee_that_audits_itself_gets_no_second_row_but_its_failures_do(db_dsn, conn):
    with connect(db_dsn, "action") as action_conn:
        ok = run_audited(
            action_conn,
            "demo.self",
            {},
            lambda c: {"id": c.execute("SELECT record_audit('demo.self')").fetchone()[0]},
            audited_by_callee=True,
        )
        bad = run_audited(
            action_conn, "demo.self", {}, lambda c: c.execute("SELECT 1/0").fetchone(), audited_by_callee=True
        )
    assert ok.status == "ok" and bad.status == "error"
    assert [(r["action"], r["status"]) for r in audit_rows(conn)] == [
        ("demo.self", "ok"),
        ("demo.self", "error"),
    ]

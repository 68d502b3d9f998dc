"""The worker daemon and the pipeline commands, against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psycopg
import pytest
from click.testing import CliRunner

from opsconsole.cli import main
from opsconsole.ops import pipeline as ops
from opsconsole.pipeline import arrival
from opsconsole.pipeline.arrival import insert_counted
from opsconsole.pipeline.worker import Worker
from tests.orders import add_orders

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)
SRC = Path(__file__).resolve().parents[1] / "src"


def stage_good(conn, first: int, n: int, accounts: int = 50) -> None:
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, batch_id) "
        "SELECT g, g %% %s::int, %s::timestamptz + g * interval '1 second', g %% 500 + 1, 'payment', "
        "'b-' || (g / 1000) "
        "FROM generate_series(%s::bigint, %s::bigint) g",
        (accounts, T0, first, first + n - 1),
    )


def state_counts(conn) -> dict[str, int]:
    return {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT processing_status, count(*) FROM financial_transactions_staging GROUP BY 1"
        ).fetchall()
    }


@pytest.fixture
def plain(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as c:
        yield c


def test_two_workers_over_the_same_staging_never_double_process(db_dsn, plain):
    stage_good(plain, 1, 3000)
    stage_good(plain, 1, 500)  # replays of the first 500: each must end 'duplicate', never processed twice
    a = Worker(db_dsn, concurrency=1, batch_size=100, poll_s=0.2, name="wa")
    b = Worker(db_dsn, concurrency=1, batch_size=100, poll_s=0.2, name="wb")
    a.start()
    b.start()
    try:
        assert ops.wait_until_idle(plain, timeout_s=60)
    finally:
        a.stop()
        b.stop()
        assert a.join(10) and b.join(10)
    assert state_counts(plain) == {"processed": 3000, "duplicate": 500}
    row = plain.execute(
        "SELECT (SELECT count(*) FROM financial_transactions_processed), "
        "(SELECT count(DISTINCT transaction_id) FROM financial_transactions_processed), "
        "(SELECT count(*) FROM financial_transaction_ledger), "
        "(SELECT count(DISTINCT claimed_by) FROM financial_transactions_staging)"
    ).fetchone()
    assert row == (3000, 3000, 3000, 2)  # both workers took chunks; no id twice
    assert a.stats.rows + b.stats.rows == 3500
    assert a.stats.processed + b.stats.processed == 3000
    assert not [r for r in ops.reconcile(plain) if r["mismatch_count"]]


def test_bad_rows_do_not_stop_a_worker_and_notify_wakes_it(db_dsn, plain):
    plain.execute(
        """
        CREATE FUNCTION test_explode() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.amount = 13.13 THEN RAISE EXCEPTION 'poison row %', NEW.transaction_id; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_explode BEFORE INSERT ON financial_transactions_processed
            FOR EACH ROW EXECUTE FUNCTION test_explode();
        """
    )
    insert_counted(
        plain,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, reference_data) VALUES "
        "(1, 1, %(t)s, NULL, 'payment', NULL), (2, 1, %(t)s, 10, 'nonsense', NULL), "
        "(3, 1, %(t)s, 1e9, 'payment', NULL), (4, 1, now() + interval '1 day', 10, 'payment', NULL), "
        "(5, 1, %(t)s, 10, 'payment', '{\"order_id\": 404}'), "
        "(6, 1, %(t)s, 10, 'payment', '{\"order_id\": []}'), "
        "(7, 1, %(t)s, 13.13, 'payment', NULL), (8, 1, %(t)s, 10, 'payment', NULL)",
        {"t": T0},
    )
    # poll_s is long: only a NOTIFY can wake the worker quickly
    w = Worker(db_dsn, concurrency=1, batch_size=3, poll_s=30)
    w.start()
    try:
        assert ops.wait_until_idle(plain, timeout_s=20)
        fates = plain.execute(
            "SELECT transaction_id, processing_status, error_code FROM financial_transactions_staging "
            "ORDER BY transaction_id"
        ).fetchall()
        assert fates == [
            (1, "dead_letter", "missing_field"),
            (2, "dead_letter", "unknown_type"),
            (3, "dead_letter", "amount_out_of_bounds"),
            (4, "failed", "future_timestamp"),
            (5, "failed", "order_not_found"),
            (6, "dead_letter", "bad_order_reference"),
            (7, "failed", "internal_error"),
            (8, "processed", None),
        ]
        time.sleep(0.5)  # the worker is now waiting on LISTEN
        started = time.monotonic()
        stage_good(plain, 100, 5)
        assert ops.wait_until_idle(plain, timeout_s=10)
        assert time.monotonic() - started < 5  # woken by the NOTIFY, not the 30 s poll
        assert state_counts(plain)["processed"] == 6
    finally:
        w.stop()
        assert w.join(5)


def test_worker_reconnects_after_its_connection_is_killed(db_dsn, plain, caplog):
    caplog.set_level(logging.INFO, logger="opsconsole.worker")
    w = Worker(db_dsn, concurrency=1, batch_size=50, poll_s=0.2)
    w.start()
    try:
        stage_good(plain, 1, 100)
        assert ops.wait_until_idle(plain, timeout_s=20)
        killed = plain.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name LIKE 'opsconsole:worker-%%' AND datname = current_database()"
        ).fetchone()[0]
        assert killed == 1
        stage_good(plain, 1000, 100)
        assert ops.wait_until_idle(plain, timeout_s=30)
    finally:
        w.stop()
        assert w.join(5)
    assert state_counts(plain) == {"processed": 200}
    assert w.stats.reconnects >= 1
    messages = [r.getMessage() for r in caplog.records]
    assert any("lost the database" in m for m in messages)
    assert any("reconnected" in m for m in messages)


def test_sigterm_finishes_and_stops_cleanly(db_dsn, plain):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "opsconsole.cli",
            "--dsn",
            db_dsn,
            "worker",
            "--batch-size",
            "200",
            "--poll-seconds",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "worker started" in first, first
        stage_good(plain, 1, 1000)
        assert ops.wait_until_idle(plain, timeout_s=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "received SIGTERM" in rest
    assert "worker stopped: 5 chunk(s), 1000 row(s): processed 1000" in rest
    assert rest.count(": chunk 200 rows in") == 5  # one line per chunk
    assert "Traceback" not in rest
    assert state_counts(plain) == {"processed": 1000}


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def run_cli(db_dsn, *args):
    return CliRunner().invoke(main, ["--dsn", db_dsn, *args], catch_exceptions=False)


def test_process_retry_reconcile_backlog_commands(db_dsn, plain):
    stage_good(plain, 1, 10)
    insert_counted(
        plain,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, reference_data, batch_id) VALUES "
        "(100, 1, %(t)s, 10, 'payment', '{\"order_id\": 9}', 'late'), "
        "(101, 1, %(t)s, 10, 'payment', '{\"order_id\": 9}', 'late'), (102, 1, %(t)s, 10, 'wire', NULL, 'x')",
        {"t": T0},
    )
    r = run_cli(db_dsn, "process", "--batch-size", "100", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert (out["processed"], out["failed"], out["dead_letter"], out["claimed"]) == (10, 2, 1, 13)

    r = run_cli(db_dsn, "backlog", "--json")
    assert [(b["processing_status"], b["error_code"], b["row_count"]) for b in json.loads(r.output)] == [
        ("dead_letter", "unknown_type", 1),
        ("failed", "order_not_found", 2),
    ]
    r = run_cli(db_dsn, "backlog")
    assert "pipeline backlog" in r.output and "rejected before staging" not in r.output
    # a transaction without an account is rejected by its loader, not staged: the backlog says so
    with plain.cursor() as cur:
        staged = arrival.load(
            cur,
            pl.DataFrame(
                {"transaction_id": [200, 201], "account_id": [None, 1], "amount": [5.0, 6.0]},
                schema_overrides={"account_id": pl.Int64},
            ).with_columns(
                transaction_timestamp=pl.lit(T0),
                transaction_type=pl.lit("payment"),
                reference_data=pl.lit(None, pl.String),
                batch_id=pl.lit("aside"),
            ),
            "test",
        )
    assert staged == (1, 1)
    r = run_cli(db_dsn, "backlog")
    assert "1 transaction(s) without an account were rejected before staging in the last 24 h" in r.output

    r = run_cli(db_dsn, "retry")
    assert r.exit_code == 1
    assert "Say which rows to retry" in r.output
    r = run_cli(db_dsn, "retry", "--error-code", "no_such_code")
    assert r.exit_code == 1 and "Unknown error code 'no_such_code'" in r.output

    add_orders(plain, {"order_id": 9, "customer_id": 1, "order_date": T0, "partition_date": T0})
    r = run_cli(
        db_dsn,
        "retry",
        "--batch",
        "late",
        "--error-code",
        "order_not_found",
        "--reason",
        "order 9 in",
        "--json",
    )
    assert json.loads(r.output) == {"requeued": 2}
    r = run_cli(db_dsn, "--json", "retry", "--ids", "1,2,3", "--all", "--dead-letter")
    assert json.loads(r.output) == {"requeued": 0}  # ids 1-3 are staging ids of processed rows
    audit = plain.execute("SELECT reason, result FROM ops_audit_log WHERE action = 'retry_failed'").fetchall()
    assert audit == [("order 9 in", {"requeued": 2}), (None, {"requeued": 0})]

    r = run_cli(db_dsn, "process")
    assert r.exit_code == 0 and "batch processed" in r.output
    r = run_cli(db_dsn, "process")
    assert "Nothing was due" in r.output
    # one row per call that claimed rows (written by the SQL function); "Nothing was due" changed nothing
    assert plain.execute(
        "SELECT count(*) FROM ops_audit_log WHERE action = 'process_financial_batch'"
    ).fetchone() == (2,)

    r = run_cli(db_dsn, "reconcile", "--json")
    assert r.exit_code == 0
    assert all(c["mismatch_count"] == 0 for c in json.loads(r.output))
    plain.execute(
        "UPDATE financial_transactions_processed SET amount = amount + 1 WHERE transaction_id = 100"
    )
    r = run_cli(db_dsn, "reconcile")
    assert r.exit_code == 1 and "2 check(s) found mismatches" in r.output
    assert "fraud_minutes_differ: `opsconsole reconcile --rebuild-minutes` rebuilds the minutes" in r.output
    r = run_cli(db_dsn, "reconcile", "--json")
    assert r.exit_code == 1
    account = plain.execute(
        "SELECT account_id FROM financial_transactions_processed WHERE transaction_id = 100"
    ).fetchone()[0]
    # the amount changed outside the chunk: the fraud window's minute no longer sums it
    assert [(c["check_name"], c["sample_ids"]) for c in json.loads(r.output) if c["mismatch_count"]] == [
        ("processed_differs_from_staging", [100]),
        ("fraud_minutes_differ", [account]),
    ]
    # --rebuild-minutes rebuilds them first and says how many it wrote; it is audited
    r = run_cli(db_dsn, "reconcile", "--rebuild-minutes")
    assert r.exit_code == 1 and "Fraud window minutes rebuilt from the processed rows: " in r.output
    r = run_cli(db_dsn, "reconcile", "--rebuild-minutes", "--json")
    got = json.loads(r.output)
    assert (
        got["rebuilt_minutes"] == plain.execute("SELECT count(*) FROM financial_fraud_minutes").fetchone()[0]
    )
    assert [c["check_name"] for c in got["checks"] if c["mismatch_count"]] == [
        "processed_differs_from_staging"
    ]
    assert plain.execute(
        "SELECT count(*) FROM ops_audit_log WHERE action = 'financial_fraud_minutes_rebuild' "
        "AND status = 'ok'"
    ).fetchone() == (2,)
    # a row staged without the loaders' arrival call: reconcile finds the counts short, --recount
    # corrects them first and says by how much
    plain.execute(
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type) VALUES (103, 1, now(), 10, 'payment')"
    )
    r = run_cli(db_dsn, "reconcile", "--json")
    assert {c["check_name"] for c in json.loads(r.output) if c["mismatch_count"]} == {
        "processed_differs_from_staging",
        "staging_counts_drift",
    }
    r = run_cli(db_dsn, "reconcile", "--recount")
    assert r.exit_code == 1 and "Staging counts corrected: pending +1." in r.output
    r = run_cli(db_dsn, "reconcile", "--recount", "--json")
    got = json.loads(r.output)
    assert got["recount"] == {"pending_delta": 0, "failed_delta": 0, "dead_letter_delta": 0}
    assert [c["check_name"] for c in got["checks"] if c["mismatch_count"]] == [
        "processed_differs_from_staging"
    ]


def test_purge_command_drops_old_days_and_refuses_bad_input(db_dsn, plain):
    plain.execute("SELECT ensure_staging_partitions(p_back => interval '10 days')")
    old = plain.execute("SELECT now() - interval '9 days'").fetchone()[0]
    insert_counted(
        plain,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type, ingestion_timestamp) VALUES"
        " (1, 1, now() - interval '9 days', 10, 'payment', %(old)s),"
        " (2, 1, now() - interval '9 days', 10, 'bogus', %(old)s)",
        {"old": old},
    )
    plain.execute("SELECT * FROM process_financial_batch_detail(100)")
    old_day = "financial_transactions_staging_" + old.astimezone(dt.UTC).strftime("%Y_%m_%d")

    r = run_cli(db_dsn, "purge", "--older-than", "2 days", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert old_day in out["partitions_dropped"]
    assert out["staging_rows_deleted"] == 1  # the processed row; the dead letter is kept
    kept = plain.execute(
        "SELECT transaction_id, processing_status, tableoid::regclass::text"
        " FROM financial_transactions_staging"
    ).fetchall()
    assert kept == [(2, "dead_letter", "financial_transactions_staging_default")]

    r = run_cli(db_dsn, "purge", "--older-than", "a fortnight")
    assert r.exit_code == 1
    assert "Cannot purge staging: invalid input syntax for type interval" in r.output
    assert "Traceback" not in r.output

"""The financial pipeline (30_pipeline.sql): validation, fraud score, exactly-once, retries, rollups, monitor.

Every test loads a small known dataset into a fresh database and asserts exact values.
"""

from __future__ import annotations

import datetime as dt
import select
from decimal import Decimal

import psycopg
import pytest
from psycopg.rows import dict_row

from opsconsole.pipeline.arrival import insert_counted
from opsconsole.pipeline.copyio import STAGING_COLUMNS
from tests.orders import add_orders

UTC = dt.UTC
MONDAY_10 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=UTC)  # a Monday, inside business hours in UTC

STAGING_COLS = STAGING_COLUMNS


def stage(conn, rows: list[tuple]) -> list[int]:
    """Insert staging rows (tuples in STAGING_COLS order, missing trailing values = NULL)."""
    ids = []
    for row in rows:
        row = tuple(row) + (None,) * (len(STAGING_COLS) - len(row))
        ref = row[5]
        values = list(row)
        values[5] = psycopg.types.json.Jsonb(ref) if ref is not None else None
        ids += insert_counted(
            conn,
            f"INSERT INTO financial_transactions_staging ({', '.join(STAGING_COLS)}) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            values,
        )
    return ids


def process(conn, batch: int = 10000, budget: str = "5 minutes") -> dict:
    return conn.execute(
        "SELECT * FROM process_financial_batch_detail(%s, %s::interval)", (batch, budget)
    ).fetchone()


def statuses(conn) -> dict[int, tuple]:
    rows = conn.execute(
        "SELECT staging_id, processing_status, error_code, retry_count "
        "FROM financial_transactions_staging ORDER BY staging_id"
    ).fetchall()
    return {r["staging_id"]: (r["processing_status"], r["error_code"], r["retry_count"]) for r in rows}


def settings(conn, **kv) -> None:
    for key, value in kv.items():
        conn.execute(
            psycopg.sql.SQL("UPDATE financial_pipeline_settings SET {} = %s").format(
                psycopg.sql.Identifier(key)
            ),
            (value,),
        )


def score(conn, account: int, amount, ts: dt.datetime) -> Decimal:
    return conn.execute(
        "SELECT detect_fraud_indicators(%s, %s, %s, 'payment') AS s", (account, amount, ts)
    ).fetchone()["s"]


# --------------------------------------------------------------------------------------------------
# Fraud score
# --------------------------------------------------------------------------------------------------


def test_first_transaction_with_no_history_does_not_score_100(conn):
    assert score(conn, 1, 100, MONDAY_10) == Decimal("0.00")
    stage(conn, [(1, 1, MONDAY_10, 100, "payment")])
    process(conn)
    row = conn.execute(
        "SELECT risk_score, validation_status FROM financial_transactions_processed"
    ).fetchone()
    assert row == {"risk_score": Decimal("0.00"), "validation_status": "valid"}


def test_velocity_counts_event_time_window_only(conn):
    t = MONDAY_10
    stage(
        conn,
        [
            (1, 7, t - dt.timedelta(minutes=61), 100, "payment"),  # before the window
            (2, 7, t - dt.timedelta(minutes=60), 100, "payment"),  # window start, inclusive
            (3, 7, t - dt.timedelta(minutes=30), 100, "payment"),
            (4, 7, t, 100, "payment"),  # same instant: not "earlier"
            (5, 7, t + dt.timedelta(minutes=1), 100, "payment"),  # later
            (6, 8, t - dt.timedelta(minutes=10), 100, "payment"),  # other account
        ],
    )
    assert process(conn)["processed_count"] == 6
    # 2 earlier transactions in [t-1h, t): velocity 20; avg 100 = amount: deviation 0
    assert score(conn, 7, 100, t) == Decimal("20.00")
    # amount 150 vs avg 100: deviation 10
    assert score(conn, 7, 150, t) == Decimal("30.00")
    # deviation capped at 30, velocity capped at 50
    for i in range(10):
        stage(conn, [(100 + i, 9, t - dt.timedelta(minutes=50 - i), 10, "payment")])
    process(conn)
    assert score(conn, 9, 10_000, t) == Decimal("80.00")
    # large amount (+20) with no history: 20, not 100
    assert score(conn, 99, 60_000, t) == Decimal("20.00")
    # the scores stored by the set-based path count earlier rows of the same chunk
    stored = {
        r["transaction_id"]: r["risk_score"]
        for r in conn.execute(
            "SELECT transaction_id, risk_score FROM financial_transactions_processed WHERE account_id = 7"
        ).fetchall()
    }
    assert stored == {
        1: Decimal("0.00"),
        2: Decimal("10.00"),  # tx1 is 1 min before: in its window
        3: Decimal("20.00"),  # tx1, tx2
        4: Decimal("20.00"),  # tx2, tx3 (tx1 is 61 min earlier)
        5: Decimal("20.00"),  # tx3, tx4 (tx2 is 61 min earlier)
    }


def test_business_hours_and_weekends_use_the_configured_time_zone(conn):
    early_monday = dt.datetime(2025, 1, 6, 7, 30, tzinfo=UTC)  # 08:30 in Paris
    late_sunday = dt.datetime(2025, 1, 5, 23, 30, tzinfo=UTC)  # Monday 08:30 in Tokyo
    assert score(conn, 1, 100, early_monday) == Decimal("10.00")  # off hours in UTC
    assert score(conn, 1, 100, late_sunday) == Decimal("15.00")  # off hours + Sunday in UTC
    settings(conn, business_time_zone="Europe/Paris")
    assert score(conn, 1, 100, early_monday) == Decimal("0.00")
    settings(conn, business_time_zone="Asia/Tokyo")
    assert score(conn, 1, 100, late_sunday) == Decimal("0.00")
    # the session's TimeZone plays no part
    conn.execute("SET TimeZone = 'America/Los_Angeles'")
    assert score(conn, 1, 100, late_sunday) == Decimal("0.00")
    settings(conn, business_time_zone="UTC")
    assert score(conn, 1, 100, late_sunday) == Decimal("15.00")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        settings(conn, business_time_zone="Mars/Olympus")


def test_set_based_path_scores_in_configured_zone(conn):
    settings(conn, business_time_zone="Asia/Tokyo")
    stage(conn, [(1, 1, dt.datetime(2025, 1, 5, 23, 30, tzinfo=UTC), 100, "payment")])
    stage(conn, [(2, 2, dt.datetime(2025, 1, 6, 12, 0, tzinfo=UTC), 100, "payment")])  # 21:00 Tokyo
    process(conn)
    rows = conn.execute(
        "SELECT transaction_id, risk_score FROM financial_transactions_processed ORDER BY 1"
    ).fetchall()
    assert [r["risk_score"] for r in rows] == [Decimal("0.00"), Decimal("10.00")]


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def test_each_validation_rule_has_its_code_and_fate(conn):
    add_orders(
        conn, {"order_id": 500, "customer_id": 1, "order_number": "SO-9", "order_date": dt.date(2025, 1, 6)}
    )
    future = dt.datetime.now(UTC) + dt.timedelta(days=1)
    ids = stage(
        conn,
        [
            (1, 1, MONDAY_10, 10, "payment", {"order_id": 500}),  # ok: order exists (by order_id)
            (2, 1, MONDAY_10, 10, "payment", {"order_id": "500"}),  # ok: numeric string
            (None, 1, MONDAY_10, None, "payment"),
            (4, 1, MONDAY_10, 10, "bogus"),
            (5, 1, MONDAY_10, Decimal("100000000.0001"), "payment"),
            (6, 1, future, 10, "payment"),
            (7, 1, MONDAY_10, 10, "payment", {"order_id": 12.5}),
            (8, 1, MONDAY_10, 10, "payment", {"order_id": 999}),
            (9, 1, MONDAY_10, 10, "payment", {"order_id": "SO-9"}),  # an order_number is not an order_id
            (10, 1, MONDAY_10, 10, "payment", {"note": "no order"}),
        ],
    )
    result = process(conn)
    assert (result["processed_count"], result["failed_count"], result["dead_letter_count"]) == (3, 2, 5)
    got = conn.execute(
        "SELECT staging_id, processing_status, error_code, error_message "
        "FROM financial_transactions_staging ORDER BY staging_id"
    ).fetchall()
    assert [(r["processing_status"], r["error_code"]) for r in got] == [
        ("processed", None),
        ("processed", None),
        ("dead_letter", "missing_field"),
        ("dead_letter", "unknown_type"),
        ("dead_letter", "amount_out_of_bounds"),
        ("failed", "future_timestamp"),
        ("dead_letter", "bad_order_reference"),
        ("failed", "order_not_found"),
        ("dead_letter", "bad_order_reference"),
        ("processed", None),
    ]
    messages = {r["staging_id"]: r["error_message"] for r in got}
    assert messages[ids[2]] == "required field(s) missing: transaction_id, amount"
    assert messages[ids[3]] == "transaction_type 'bogus' is not a known type"
    assert messages[ids[4]] == "amount 100000000.0001 is outside [-100000000.0000, 100000000.0000]"
    assert messages[ids[5]] == "transaction_timestamp is more than 00:05:00 ahead of the server clock"
    assert messages[ids[7]] == "order_id 999 is not in erp_orders"
    # every code used is one of the stable codes
    codes = {r["error_code"] for r in conn.execute("SELECT error_code FROM financial_error_codes").fetchall()}
    assert {r["error_code"] for r in got if r["error_code"]} <= codes


def test_conflict_and_duplicate(conn):
    stage(conn, [(1, 1, MONDAY_10, 10, "payment", {"a": 1}, "b1")])
    process(conn)
    ids = stage(
        conn,
        [
            (1, 1, MONDAY_10, Decimal("10.0000"), "payment", {"a": 1}, "b2"),  # same payload, other batch
            (1, 1, MONDAY_10, 11, "payment", {"a": 1}, "b2"),  # same id, different amount
            (2, 5, MONDAY_10, 20, "refund", None, "b2"),  # in-chunk: first wins
            (2, 5, MONDAY_10, 20, "refund", None, "b2"),  # in-chunk replay
            (2, 5, MONDAY_10, 21, "refund", None, "b2"),  # in-chunk conflict
        ],
    )
    r = process(conn)
    assert (r["processed_count"], r["duplicate_count"], r["dead_letter_count"]) == (1, 2, 2)
    st = statuses(conn)
    assert [st[i][:2] for i in ids] == [
        ("duplicate", "duplicate"),
        ("dead_letter", "payload_conflict"),
        ("processed", None),
        ("duplicate", "duplicate"),
        ("dead_letter", "payload_conflict"),
    ]
    amounts = conn.execute(
        "SELECT transaction_id, amount FROM financial_transactions_processed ORDER BY 1"
    ).fetchall()
    assert [(a["transaction_id"], a["amount"]) for a in amounts] == [
        (1, Decimal("10.0000")),
        (2, Decimal("20.0000")),
    ]
    # the payload hash ignores the session TimeZone
    conn.execute("SET TimeZone = 'Pacific/Chatham'")
    stage(conn, [(1, 1, MONDAY_10, 10, "payment", {"a": 1}, "b3")])
    process(conn)
    assert conn.execute(
        "SELECT processing_status FROM financial_transactions_staging WHERE batch_id = 'b3'"
    ).fetchone() == {"processing_status": "duplicate"}


def test_replaying_staging_rows_changes_nothing_in_processed(conn):
    rows = [(i, i % 3, MONDAY_10 + dt.timedelta(minutes=i), 10 * i, "payment") for i in range(1, 21)]
    stage(conn, rows)
    process(conn)
    snapshot = "SELECT * FROM financial_transactions_processed ORDER BY transaction_id"
    before = conn.execute(snapshot).fetchall()
    ledger_before = conn.execute("SELECT * FROM financial_transaction_ledger ORDER BY 1").fetchall()
    stage(conn, rows)
    r = process(conn)
    assert (r["processed_count"], r["duplicate_count"], r["failed_count"]) == (0, 20, 0)
    assert conn.execute(snapshot).fetchall() == before
    assert conn.execute("SELECT * FROM financial_transaction_ledger ORDER BY 1").fetchall() == ledger_before


# --------------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------------


def _make_due(conn, staging_id: int) -> None:
    conn.execute(
        "UPDATE financial_transactions_staging SET next_attempt_at = now() - interval '1 second' "
        "WHERE staging_id = %s",
        (staging_id,),
    )


def test_backoff_then_dead_letter_then_operator_retry(conn):
    settings(conn, max_attempts=3, backoff_base=dt.timedelta(seconds=10))
    # the settings' schedule, not order_not_found's own hours-long one (tests/test_late_data.py)
    conn.execute(
        "UPDATE financial_error_codes SET max_attempts = NULL, backoff_base = NULL, backoff_max = NULL"
    )
    (sid,) = stage(conn, [(1, 1, MONDAY_10, 10, "payment", {"order_id": 77}, "b1")])
    delays = []
    for _ in range(3):
        process(conn)
        row = conn.execute(
            "SELECT processing_status, retry_count, "
            "extract(epoch FROM next_attempt_at - processed_at) AS delay "
            "FROM financial_transactions_staging WHERE staging_id = %s",
            (sid,),
        ).fetchone()
        delays.append((row["processing_status"], row["retry_count"], round(float(row["delay"]))))
        # not due yet: another pass claims nothing
        if row["processing_status"] == "failed":
            assert process(conn)["claimed_count"] == 0
            _make_due(conn, sid)
    assert [d[:2] for d in delays] == [("failed", 1), ("failed", 2), ("dead_letter", 3)]
    assert [d[2] for d in delays[:2]] == [10, 20]  # exponential: 10 s, then 20 s
    assert process(conn)["claimed_count"] == 0  # dead letters are never claimed
    # the order arrives; an operator re-queues the dead letter and it goes through
    add_orders(conn, {"order_id": 77, "customer_id": 1, "order_date": dt.date(2025, 1, 6)})
    assert conn.execute("SELECT retry_failed(p_error_code => 'order_not_found') AS n").fetchone()["n"] == 0
    n = conn.execute(
        "SELECT retry_failed(p_error_code => 'order_not_found', p_include_dead_letter => true, "
        "p_reason => 'order 77 loaded') AS n"
    ).fetchone()["n"]
    assert n == 1
    assert statuses(conn)[sid] == ("pending", "order_not_found", 0)
    assert process(conn)["processed_count"] == 1
    assert statuses(conn)[sid] == ("processed", None, 0)


def test_retry_failed_selectors_and_audit(conn):
    ids = stage(
        conn,
        [
            (1, 1, MONDAY_10, 10, "payment", {"order_id": 1}, "b1"),  # failed order_not_found
            (2, 1, MONDAY_10, 10, "payment", {"order_id": 2}, "b2"),  # failed order_not_found
            (3, 1, MONDAY_10, 10, "bogus", None, "b1"),  # dead_letter unknown_type
            (4, 1, MONDAY_10, 10, "payment", {"order_id": 3}, "b3"),  # failed order_not_found
            (5, 1, MONDAY_10, 10, "payment", None, "b1"),  # processed
        ],
    )
    process(conn)

    def retry(**kw) -> int:
        args = ", ".join(f"{k} => %({k})s" for k in kw)
        return conn.execute(f"SELECT retry_failed({args}) AS n", kw).fetchone()["n"]

    with pytest.raises(psycopg.errors.InvalidParameterValue):
        retry()
    # after each re-queue, a pass puts the rows back where they were (they still fail)
    assert retry(p_staging_ids=[ids[0], ids[2], ids[4]]) == 1  # only the failed one
    process(conn)
    assert retry(p_staging_ids=[ids[2]], p_include_dead_letter=True) == 1
    process(conn)
    assert retry(p_batch_id="b1") == 1  # ids[0]; the dead letter in b1 needs p_include_dead_letter
    process(conn)
    assert retry(p_batch_id="b1", p_error_code="unknown_type", p_include_dead_letter=True) == 1
    process(conn)
    assert retry(p_error_code="order_not_found") == 3
    process(conn)
    assert retry(p_all=True, p_reason="all of it") == 3
    process(conn)
    assert retry(p_all=True, p_include_dead_letter=True) == 4
    assert statuses(conn)[ids[2]] == ("pending", "unknown_type", 0)
    audit = conn.execute(
        "SELECT action, arguments, result, status, reason, actor FROM ops_audit_log "
        "WHERE action = 'retry_failed' ORDER BY audit_id"  # (the batches audit themselves too)
    ).fetchall()
    assert len(audit) == 7
    assert all(a["action"] == "retry_failed" and a["status"] == "ok" for a in audit)
    assert audit[0]["arguments"] == {
        "staging_ids": ids[0:5:2],
        "batch_id": None,
        "error_code": None,
        "all": False,
        "include_dead_letter": False,
    }
    assert [a["result"]["requeued"] for a in audit] == [1, 1, 1, 1, 3, 3, 4]
    assert audit[5]["reason"] == "all of it"
    assert audit[5]["actor"] == conn.execute("SELECT session_user AS u").fetchone()["u"]
    # the rollups followed every move: 4 pending, nothing failed or dead
    r = conn.execute(
        "SELECT sum(pending_count) p, sum(failed_count) f, sum(dead_letter_count) d, sum(processed_count) ok "
        "FROM financial_processing_rollup"
    ).fetchone()
    assert (r["p"], r["f"], r["d"], r["ok"]) == (4, 0, 0, 1)


# --------------------------------------------------------------------------------------------------
# Exactly one state, budget, isolation, notifications
# --------------------------------------------------------------------------------------------------


def test_time_budget_and_chunking(conn):
    settings(conn, chunk_size=2)
    stage(conn, [(i, 1, MONDAY_10 + dt.timedelta(minutes=i), 10, "payment") for i in range(1, 6)])
    r = process(conn, 100, "0 seconds")  # budget spent after the first chunk
    assert (r["claimed_count"], r["chunk_count"], r["processed_count"]) == (2, 1, 2)
    r = process(conn, 100)
    assert (r["claimed_count"], r["chunk_count"], r["processed_count"]) == (3, 2, 3)
    r = process(conn, 100)
    assert (r["claimed_count"], r["chunk_count"]) == (0, 0)
    spec = conn.execute("SELECT * FROM process_financial_batch()").fetchone()
    assert list(spec) == ["processed_count", "failed_count", "avg_processing_ms", "batch_duration"]


def test_a_row_that_raises_is_isolated_and_the_rest_go_through(conn):
    conn.execute(
        """
        CREATE FUNCTION test_explode() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.amount = 13.13 THEN RAISE EXCEPTION 'boom on %', NEW.transaction_id; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_explode BEFORE INSERT ON financial_transactions_processed
            FOR EACH ROW EXECUTE FUNCTION test_explode();
        """
    )
    ids = stage(conn, [(i, i, MONDAY_10, Decimal("13.13") if i == 4 else 10, "payment") for i in range(1, 8)])
    r = process(conn)
    assert (r["processed_count"], r["failed_count"]) == (6, 1)
    st = statuses(conn)
    assert st[ids[3]] == ("failed", "internal_error", 1)
    assert (
        conn.execute(
            "SELECT error_message FROM financial_transactions_staging WHERE staging_id = %s", (ids[3],)
        ).fetchone()["error_message"]
        == "boom on 4"
    )
    assert sum(1 for v in st.values() if v[0] == "processed") == 6
    roll = conn.execute(
        "SELECT processed_count, failed_count, pending_count FROM financial_processing_rollup"
    ).fetchone()
    assert roll == {"processed_count": 6, "failed_count": 1, "pending_count": 0}


def test_notifications(conn, db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as listener:
        listener.execute("LISTEN opsconsole_staging")
        listener.execute("LISTEN opsconsole_pipeline")
        stage(conn, [(1, 1, MONDAY_10, 10, "payment"), (2, 1, MONDAY_10, 10, "payment")])
        insert_counted(
            conn,
            "INSERT INTO financial_transactions_staging (transaction_id, account_id) "
            "SELECT g, 1 FROM generate_series(3, 5) g",
        )
        process(conn)
        got = []
        for _ in range(20):
            select.select([listener.fileno()], [], [], 0.2)
            got.extend((n.channel, n.payload) for n in listener.notifies(timeout=0.1, stop_after=10))
            if len(got) >= 4:
                break
    import json

    assert [c for c, _ in got] == ["opsconsole_staging"] * 3 + ["opsconsole_pipeline"]
    assert [json.loads(p)["rows"] for _, p in got[:3]] == [1, 1, 3]
    last = json.loads(got[3][1])
    assert (last["rows"], last["processed"], last["dead_letter"]) == (5, 2, 3)


# --------------------------------------------------------------------------------------------------
# is_processed, reconciliation, monitor, backlog, retention
# --------------------------------------------------------------------------------------------------


def test_is_processed_follows_the_ledger_and_reconcile(conn):
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount, "
        "transaction_type) VALUES (1, 1, %s, 10, 'payment'), (3, 1, %s, 30, 'payment')",
        (MONDAY_10, MONDAY_10),
    )
    stage(conn, [(1, 1, MONDAY_10, 10, "payment"), (2, 1, MONDAY_10, 20, "payment")])
    process(conn)
    # a source row that arrives after its processing is flagged on insert
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount, "
        "transaction_type) VALUES (2, 1, %s, 25, 'payment')",
        (MONDAY_10,),
    )
    flags = conn.execute(
        "SELECT transaction_id, is_processed FROM financial_transactions ORDER BY 1"
    ).fetchall()
    assert [(f["transaction_id"], f["is_processed"]) for f in flags] == [(1, True), (2, True), (3, False)]

    def mismatches():
        return {
            r["check_name"]: (r["mismatch_count"], r["sample_ids"])
            for r in conn.execute("SELECT * FROM reconcile_financial_pipeline()").fetchall()
            if r["mismatch_count"]
        }

    assert mismatches() == {"source_payload_differs": (1, [2])}  # amount 25 at the source, 20 processed
    conn.execute("UPDATE financial_transactions SET is_processed = NOT is_processed")
    conn.execute("DELETE FROM financial_transactions_processed WHERE transaction_id = 1")
    assert mismatches() == {
        "ledger_without_processed": (1, [1]),
        "source_flag_missing": (2, [1, 2]),
        "source_flag_without_ledger": (1, [3]),
        "source_payload_differs": (1, [2]),
        "fraud_minutes_differ": (1, [1]),  # account 1's minute still counts the deleted row
    }
    assert conn.execute("SELECT sync_financial_processed_flags() AS n").fetchone()["n"] == 3
    conn.execute("SELECT financial_fraud_minutes_rebuild(ARRAY[1]::bigint[])")
    assert set(mismatches()) == {"ledger_without_processed", "source_payload_differs"}
    assert len(conn.execute("SELECT * FROM reconcile_financial_pipeline()").fetchall()) == 13


def test_monitor_is_independent_of_session_time_zone(conn):
    conn.execute("SET TimeZone = 'UTC'")
    base = dt.datetime.now(UTC).replace(second=0, microsecond=0) - dt.timedelta(minutes=20)
    # three ingestion minutes, known latencies: set ingestion_timestamp explicitly
    for minute, n in ((0, 3), (1, 2), (5, 4)):
        for i in range(n):
            insert_counted(
                conn,
                "INSERT INTO financial_transactions_staging (transaction_id, account_id, "
                "transaction_timestamp, amount, transaction_type, ingestion_timestamp) "
                "VALUES (%s, 1, %s, 10, %s, %s)",
                (
                    minute * 100 + i,
                    MONDAY_10,
                    "bogus" if i == 0 and minute == 5 else "payment",
                    base + dt.timedelta(minutes=minute, seconds=10 * i),
                ),
            )
    process(conn)
    query = (
        "SELECT extract(epoch FROM minute_bucket) AS epoch, total_transactions, processed_count, "
        "failed_count, "
        "pending_count, dead_letter_count, max_processing_ms > 1000 AS slow, sla_breach_rate "
        "FROM financial_processing_monitor"
    )
    full = "SELECT * FROM financial_processing_monitor"
    utc_rows, utc_full = conn.execute(query).fetchall(), conn.execute(full).fetchall()
    conn.execute("SET TimeZone = 'Asia/Kathmandu'")
    assert conn.execute(query).fetchall() == utc_rows
    assert conn.execute(full).fetchall() == utc_full
    conn.execute("SET TimeZone = 'America/St_Johns'")
    assert conn.execute(full).fetchall() == utc_full
    assert [
        (
            r["epoch"] - Decimal(int(base.timestamp())),
            r["total_transactions"],
            r["processed_count"],
            r["dead_letter_count"],
            r["slow"],
            r["sla_breach_rate"],
        )
        for r in utc_rows
    ] == [(300, 4, 3, 1, True, 75.0), (60, 2, 2, 0, True, 100.0), (0, 3, 3, 0, True, 100.0)]


def test_monitor_latency_stats_from_the_histogram(conn):
    now = conn.execute("SELECT date_trunc('minute', now(), 'UTC') AS m").fetchone()["m"]
    minute = now - dt.timedelta(minutes=2)
    conn.execute(
        "INSERT INTO financial_processing_rollup (minute_bucket, total_transactions, processed_count, "
        "latency_count, latency_sum_ms, latency_max_ms, sla_breaches) "
        "VALUES (%s, 100, 100, 100, 30000, 1150, 5)",
        (minute,),
    )
    # 90 rows in [100,150), 10 rows in [1000,1200): p95 = 1000 + 200 * (95 - 90) / 10 = 1100
    conn.execute(
        "INSERT INTO financial_latency_rollup VALUES (%s, 100, 150, 90), (%s, 1000, 1200, 10)",
        (minute, minute),
    )
    row = conn.execute("SELECT * FROM financial_processing_monitor").fetchone()
    assert row["avg_processing_ms"] == Decimal("300.000")
    assert row["max_processing_ms"] == 1150
    assert row["p95_processing_ms"] == 1100.0
    assert row["sla_breach_rate"] == 5.0


def test_backlog_view(conn):
    stage(
        conn,
        [
            (1, 1, MONDAY_10, 10, "payment", {"order_id": 5}),
            (2, 1, MONDAY_10, 10, "payment", {"order_id": 6}),
            (3, 1, MONDAY_10, 10, "bogus"),
            (4, 1, MONDAY_10, 10, "payment"),
        ],
    )
    process(conn)
    stage(conn, [(5, 1, MONDAY_10, 10, "payment")])
    rows = conn.execute(
        "SELECT processing_status, error_code, row_count, due_now "
        "FROM financial_pipeline_backlog ORDER BY 1, 2"
    ).fetchall()
    assert [tuple(r.values()) for r in rows] == [
        ("dead_letter", "unknown_type", 1, 0),
        ("failed", "order_not_found", 2, 0),
        ("pending", None, 1, 1),
    ]


def test_retention_keeps_failed_rows_and_rollups(conn):
    stage(
        conn,
        [(1, 1, MONDAY_10, 10, "payment"), (2, 1, MONDAY_10, 10, "bogus"), (3, 1, MONDAY_10, 10, "payment")],
    )
    process(conn)
    stage(conn, [(3, 1, MONDAY_10, 10, "payment")])  # a duplicate
    process(conn)
    monitor = conn.execute("SELECT * FROM financial_processing_monitor").fetchall()
    conn.execute("UPDATE financial_transactions_staging SET ingestion_timestamp = now() - interval '8 days'")
    r = conn.execute("SELECT * FROM purge_financial_staging()").fetchone()
    assert r["staging_rows_deleted"] == 3
    left = conn.execute(
        "SELECT transaction_id, processing_status FROM financial_transactions_staging"
    ).fetchall()
    assert [tuple(x.values()) for x in left] == [(2, "dead_letter")]
    assert conn.execute("SELECT * FROM financial_processing_monitor").fetchall() == monitor
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions_processed").fetchone()["n"] == 2
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM ops_audit_log WHERE action = 'purge_financial_staging'"
        ).fetchone()["n"]
        == 1
    )
    # a purged replay is still a duplicate: the ledger remembers
    stage(conn, [(1, 1, MONDAY_10, 10, "payment")])
    assert process(conn)["duplicate_count"] == 1


def test_a_retry_waits_for_the_chunk_in_flight_and_the_counts_hold(db_dsn):
    """The claim takes no row locks: retry_failed holds every claim bucket instead, so it neither
    changes a row a running chunk has read nor lets a chunk read a row it is changing."""
    import threading

    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute("UPDATE financial_error_codes SET backoff_base = NULL, backoff_max = NULL")
        settings(c, backoff_base=dt.timedelta(0))
        # two failures (order_not_found, retried at once) and one row that goes through
        stage(
            c,
            [
                (1, 1, MONDAY_10, 10, "payment", {"order_id": 901}),
                (2, 2, MONDAY_10, 10, "payment", {"order_id": 902}),
            ],
        )
        assert process(c)["failed_count"] == 2
        stage(c, [(3, 3, MONDAY_10, 10, "payment")])
    done = {}
    with psycopg.connect(db_dsn, row_factory=dict_row) as a:
        # a chunk that claimed the failed rows again (due at once) and has not committed
        assert process(a)["claimed_count"] == 3

        def retry():
            with psycopg.connect(db_dsn, row_factory=dict_row, autocommit=True) as b:
                done["n"] = b.execute("SELECT retry_failed(p_all => true) AS n").fetchone()["n"]

        t = threading.Thread(target=retry)
        t.start()
        t.join(1.0)
        assert t.is_alive(), "the retry changed rows while a chunk that read them was in flight"
        a.commit()
        t.join(10)
    assert not t.is_alive()
    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        # it re-queued what the committed chunk left failed
        assert done["n"] == 2
        assert statuses(c)[3][0] == "processed"
        assert {r[0] for r in statuses(c).values()} == {"pending", "processed"}
        # the other order: a retry in flight, and a chunk claims nothing until it commits (and does
        # not wait for it either: the buckets are only tried)
        add_orders(c, {"order_id": 901, "customer_id": 1, "order_date": dt.date(2025, 1, 6)})
        assert process(c)["processed_count"] == 1
        assert process(c)["failed_count"] == 1
        with psycopg.connect(db_dsn, row_factory=dict_row) as b:
            assert b.execute("SELECT retry_failed(p_all => true) AS n").fetchone()["n"] == 1
            c.execute("SET statement_timeout = '5s'")  # a chunk that waited for b would wait forever
            assert process(c)["claimed_count"] == 0
            c.execute("RESET statement_timeout")
            b.commit()
        assert process(c)["claimed_count"] == 1
        drift = c.execute("SELECT * FROM financial_staging_counts_drift()").fetchone()
        assert drift == {"pending_delta": 0, "failed_delta": 0, "dead_letter_delta": 0}


def test_processed_is_partitioned_by_event_time(conn):
    old = dt.datetime(2001, 2, 3, 4, 5, tzinfo=UTC)
    stage(conn, [(1, 1, old, 10, "payment"), (2, 1, MONDAY_10, 20_000, "payment")])
    process(conn)
    rows = conn.execute(
        "SELECT transaction_id, tableoid::regclass::text AS part, date_partition, amount_abs, "
        "is_large_amount "
        "FROM financial_transactions_processed ORDER BY 1"
    ).fetchall()
    assert rows[0]["part"] == "financial_transactions_processed_default"
    assert rows[0]["date_partition"] == dt.date(2001, 2, 3)
    assert (rows[1]["amount_abs"], rows[1]["is_large_amount"]) == (Decimal("20000.0000"), True)
    # the same id at another instant cannot slip into another partition
    stage(conn, [(1, 1, MONDAY_10, 10, "payment")])
    assert process(conn)["dead_letter_count"] == 1
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions_processed").fetchone()["n"] == 2


def test_two_sessions_never_claim_the_same_rows(db_dsn):
    import threading

    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        stage(c, [(i, i % 4, MONDAY_10, 10, "payment") for i in range(1, 11)])
    results = {}
    with psycopg.connect(db_dsn, row_factory=dict_row) as a:
        results["a"] = a.execute("SELECT * FROM process_financial_batch_detail(6)").fetchone()  # open tx

        def other():
            with psycopg.connect(db_dsn, row_factory=dict_row, autocommit=True) as b:
                results["b"] = b.execute("SELECT * FROM process_financial_batch_detail(100)").fetchone()

        t = threading.Thread(target=other)
        t.start()
        t.join(1.0)  # b skips a's rows and a's account buckets, then waits for a's rollup row lock
        a.commit()
        t.join(10)
    # b takes only rows of accounts a does not hold (the claim is by account bucket); what it left
    # (rows of a's buckets that a's chunk had no room for) is claimed once a has committed
    assert results["a"]["claimed_count"] == 6 and results["b"]["claimed_count"] <= 4
    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        rest = c.execute("SELECT * FROM process_financial_batch_detail(100)").fetchone()["claimed_count"]
        assert results["b"]["claimed_count"] + rest == 4
        n = c.execute(
            "SELECT count(*) AS n, count(DISTINCT chunk_id) AS chunks, "
            "(SELECT count(*) FROM financial_transactions_processed) AS p "
            "FROM financial_transactions_staging "
            "WHERE processing_status = 'processed'"
        ).fetchone()
    assert (n["n"], n["p"]) == (10, 10) and n["chunks"] >= 1 + (rest > 0)

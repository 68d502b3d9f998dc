"""Staging partitioned by ingestion day (30_pipeline.sql): routing, retention by dropping days.

The conversion of a populated unpartitioned staging table was the released migration 0011; the
upgrade from that release is covered by tests/test_schema_upgrade.py.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from opsconsole.pipeline.arrival import insert_counted

UTC = dt.UTC
MONDAY_10 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
COLS = "transaction_id, account_id, transaction_timestamp, amount, transaction_type, reference_data"


def stage_at(conn, ingested: str, rows: list[tuple], due: str = "now()") -> list[int]:
    """Insert rows (transaction_id, account_id, ts, amount, type[, reference_data]) in ONE statement,
    with ingestion_timestamp and next_attempt_at given as SQL expressions."""
    values = []
    params: list = []
    for row in rows:
        row = tuple(row) + (None,) * (6 - len(row))
        values.append(f"(%s, %s, %s, %s, %s, %s, {ingested}, {due})")
        params.extend(list(row[:5]) + [Jsonb(row[5]) if row[5] is not None else None])
    return insert_counted(
        conn,
        f"INSERT INTO financial_transactions_staging ({COLS}, ingestion_timestamp, next_attempt_at) "
        f"VALUES {', '.join(values)}",
        params,
    )


def process(conn, batch: int = 10000) -> dict:
    return conn.execute("SELECT * FROM process_financial_batch_detail(%s)", (batch,)).fetchone()


def partition_of(conn, staging_id: int) -> str:
    return conn.execute(
        "SELECT tableoid::regclass::text AS p FROM financial_transactions_staging WHERE staging_id = %s",
        (staging_id,),
    ).fetchone()["p"]


def utc_day(conn, expr: str) -> str:
    return conn.execute(f"SELECT to_char(({expr}) AT TIME ZONE 'UTC', 'YYYY_MM_DD') AS d").fetchone()["d"]


def rollups(conn) -> tuple[list, list]:
    p = conn.execute(
        "SELECT minute_bucket, total_transactions, pending_count, processed_count, failed_count, "
        "dead_letter_count, duplicate_count, latency_count, latency_sum_ms, latency_max_ms, sla_breaches "
        "FROM financial_processing_rollup ORDER BY 1"
    ).fetchall()
    h = conn.execute("SELECT * FROM financial_latency_rollup ORDER BY 1, 2").fetchall()
    return p, h


def test_rows_route_to_their_utc_day_and_default_catches_the_rest(conn):
    assert (
        conn.execute(
            "SELECT relkind FROM pg_class WHERE oid = 'financial_transactions_staging'::regclass"
        ).fetchone()["relkind"]
        == "p"
    )
    [today] = stage_at(conn, "now()", [(1, 1, MONDAY_10, 10, "payment")])
    [ahead] = stage_at(conn, "now() + interval '6 days'", [(2, 1, MONDAY_10, 10, "payment")])
    [old] = stage_at(conn, "now() - interval '40 days'", [(3, 1, MONDAY_10, 10, "payment")])
    [far] = stage_at(conn, "now() + interval '30 days'", [(4, 1, MONDAY_10, 10, "payment")])
    assert partition_of(conn, today) == "financial_transactions_staging_" + utc_day(conn, "now()")
    assert partition_of(conn, ahead) == "financial_transactions_staging_" + utc_day(
        conn, "now() + interval '6 days'"
    )
    assert partition_of(conn, old) == "financial_transactions_staging_default"
    assert partition_of(conn, far) == "financial_transactions_staging_default"
    # creating the day that a DEFAULT row belongs to moves it there, with its generated columns intact
    before = conn.execute(
        "SELECT staging_id, ingestion_timestamp, ingestion_minute "
        "FROM financial_transactions_staging WHERE staging_id = %s",
        (far,),
    ).fetchone()
    assert (
        conn.execute("SELECT ensure_staging_partitions(p_ahead => interval '31 days') AS n").fetchone()["n"]
        == 24
    )  # days 8..31 ahead
    assert (
        conn.execute("SELECT ensure_staging_partitions(p_ahead => interval '31 days') AS n").fetchone()["n"]
        == 0
    )
    assert partition_of(conn, far) == "financial_transactions_staging_" + utc_day(
        conn, "now() + interval '30 days'"
    )
    after = conn.execute(
        "SELECT staging_id, ingestion_timestamp, ingestion_minute "
        "FROM financial_transactions_staging WHERE staging_id = %s",
        (far,),
    ).fetchone()
    assert after == before
    # rows ingested ahead of the server clock are processed too (latency 0, not a failed batch)
    done = process(conn)
    assert (done["processed_count"], done["claimed_count"]) == (4, 4)


def test_arrival_counts_rows_routed_to_every_partition(conn):
    conn.execute("LISTEN opsconsole_staging")
    insert_counted(
        conn,
        f"INSERT INTO financial_transactions_staging ({COLS}, ingestion_timestamp) "
        "SELECT g, 1, %s, 10, 'payment', NULL, "
        "date_trunc('minute', now()) - (g %% 3) * interval '3 days' FROM generate_series(1, 9) g",
        (MONDAY_10,),
    )
    got = conn.execute(
        "SELECT total_transactions, pending_count FROM financial_processing_rollup r "
        "JOIN generate_series(0, 2) k "
        "ON r.minute_bucket = date_trunc('minute', now()) - k * interval '3 days' "
        "ORDER BY k"
    ).fetchall()
    assert [(r["total_transactions"], r["pending_count"]) for r in got] == [(3, 3)] * 3
    parts = conn.execute(
        "SELECT count(DISTINCT tableoid) AS n FROM financial_transactions_staging"
    ).fetchone()["n"]
    assert parts == 3
    notes = list(conn.notifies(timeout=1, stop_after=1))
    assert [json.loads(n.payload) for n in notes] == [{"rows": 9}]


def test_purge_drops_old_days_keeps_owed_rows_and_the_monitor(conn):
    conn.execute("SELECT ensure_staging_partitions(p_back => interval '10 days')")
    # one fixed instant, so that every row below shares one ingestion minute (and rollup row)
    at = conn.execute("SELECT date_trunc('minute', now()) - interval '9 days' AS t").fetchone()["t"]
    ingested = f"'{at.isoformat()}'::timestamptz"
    old_day = "financial_transactions_staging_" + utc_day(conn, ingested)
    ids = stage_at(
        conn,
        ingested,
        [
            (1, 1, MONDAY_10, 10, "payment"),  # processed
            (2, 1, MONDAY_10, 20, "payment"),  # processed
            (3, 1, MONDAY_10, 10, "bogus"),  # dead_letter (unknown_type)
            (4, 1, MONDAY_10, 10, "payment", {"order_id": 99}),  # failed (order_not_found), due later
        ],
    )
    process(conn)
    [dup] = stage_at(conn, ingested, [(1, 1, MONDAY_10, 10, "payment")])  # a replay: duplicate
    [waiting] = stage_at(conn, ingested, [(5, 2, MONDAY_10, 10, "payment")], due="now() + interval '1 hour'")
    assert process(conn)["duplicate_count"] == 1
    # today's rows: the monitor's last hour
    today = stage_at(conn, "now()", [(6, 3, MONDAY_10, 10, "payment"), (7, 3, MONDAY_10, 10, "nope")])
    process(conn)
    assert {partition_of(conn, i) for i in ids + [dup, waiting]} == {old_day}

    keep_cols = (
        "staging_id, transaction_id, ingestion_timestamp, ingestion_minute, processing_status, "
        "error_code, error_message, retry_count, next_attempt_at, processed_at, chunk_id"
    )
    survivors_before = conn.execute(
        f"SELECT {keep_cols} FROM financial_transactions_staging "
        "WHERE processing_status IN ('pending', 'failed', 'dead_letter') ORDER BY staging_id"
    ).fetchall()
    assert [(r["transaction_id"], r["processing_status"]) for r in survivors_before] == [
        (3, "dead_letter"),
        (4, "failed"),
        (5, "pending"),
        (7, "dead_letter"),
    ]
    monitor = conn.execute("SELECT * FROM financial_processing_monitor").fetchall()
    assert monitor and monitor[0]["total_transactions"] == 2
    roll = rollups(conn)
    backlog = conn.execute("SELECT * FROM financial_pipeline_backlog ORDER BY 1, 2").fetchall()

    r = conn.execute("SELECT * FROM purge_financial_staging()").fetchone()
    assert (r["staging_rows_deleted"], r["rollup_rows_deleted"]) == (3, 0)  # ids 1, 2 and the duplicate

    assert conn.execute("SELECT to_regclass(%s) AS r", (old_day,)).fetchone()["r"] is None
    survivors_after = conn.execute(
        f"SELECT {keep_cols} FROM financial_transactions_staging "
        "WHERE processing_status IN ('pending', 'failed', 'dead_letter') ORDER BY staging_id"
    ).fetchall()
    assert survivors_after == survivors_before
    assert {partition_of(conn, i) for i in (ids[2], ids[3], waiting)} == {
        "financial_transactions_staging_default"
    }
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions_staging").fetchone()["n"] == 5
    # the monitor, its rollups and the backlog pane are untouched; nothing the ledger knows is lost
    assert conn.execute("SELECT * FROM financial_processing_monitor").fetchall() == monitor
    assert rollups(conn) == roll
    assert conn.execute("SELECT * FROM financial_pipeline_backlog ORDER BY 1, 2").fetchall() == backlog
    assert conn.execute("SELECT count(*) AS n FROM financial_transactions_processed").fetchone()["n"] == 3
    audit = conn.execute(
        "SELECT result FROM ops_audit_log WHERE action = 'purge_financial_staging'"
    ).fetchone()["result"]
    assert old_day in audit["partitions_dropped"] and audit["rows_kept_in_default"] == 3
    assert [
        c["check_name"]
        for c in conn.execute("SELECT * FROM reconcile_financial_pipeline()")
        if c["mismatch_count"]
    ] == []

    # the survivors still work: a moved dead letter is re-queued by id and processed, its rollup
    # minute is the one it arrived in; a purged replay is still a duplicate (the ledger remembers)
    conn.execute("INSERT INTO financial_transaction_types VALUES ('bogus', 'now known')")
    assert (
        conn.execute(
            "SELECT retry_failed(ARRAY[%s]::bigint[], p_include_dead_letter => true) AS n", (ids[2],)
        ).fetchone()["n"]
        == 1
    )
    stage_at(conn, "now()", [(1, 1, MONDAY_10, 10, "payment")])
    done = process(conn)
    assert (done["processed_count"], done["duplicate_count"]) == (1, 1)
    minute = conn.execute(
        "SELECT processed_count, dead_letter_count FROM financial_processing_rollup "
        "WHERE minute_bucket = "
        "(SELECT ingestion_minute FROM financial_transactions_staging WHERE staging_id = %s)",
        (ids[2],),
    ).fetchone()
    assert (minute["processed_count"], minute["dead_letter_count"]) == (3, 0)
    # purging again: the re-processed survivor is done and old, so DEFAULT's DELETE takes it; today stays
    r = conn.execute("SELECT * FROM purge_financial_staging()").fetchone()
    assert r["staging_rows_deleted"] == 1
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM financial_transactions_staging WHERE staging_id = %s", (ids[2],)
        ).fetchone()["n"]
        == 0
    )
    assert {partition_of(conn, i) for i in today} == {
        "financial_transactions_staging_" + utc_day(conn, "now()")
    }


def test_purge_keeps_the_rejected_rows_as_long_as_staging_rows(conn):
    # transactions without an account are rejected before staging (0031); the purge keeps them for the
    # staging retention, like the rows it keeps, and says how many it deleted in its audit row
    conn.execute(
        "INSERT INTO financial_staging_rejects (transaction_id, amount, source, reason, rejected_at)"
        " VALUES (1, 10, 'test', 'no account', now() - interval '9 days'),"
        " (2, 10, 'test', 'no account', now() - interval '1 day')"
    )
    conn.execute("SELECT * FROM purge_financial_staging('7 days')")
    left = conn.execute("SELECT transaction_id FROM financial_staging_rejects ORDER BY 1").fetchall()
    assert [r["transaction_id"] for r in left] == [2]
    audit = conn.execute(
        "SELECT result FROM ops_audit_log WHERE action = 'purge_financial_staging' ORDER BY audit_id DESC"
    ).fetchone()
    assert audit["result"]["rejects_deleted"] == 1


def test_purge_deletes_done_rows_of_default_in_bounded_steps(conn):
    stage_at(conn, "now() - interval '40 days'", [(i, 1, MONDAY_10, 10, "payment") for i in range(1, 6)])
    stage_at(conn, "now() - interval '40 days'", [(9, 1, MONDAY_10, 10, "bogus")])
    process(conn)
    assert (
        conn.execute("SELECT staging_rows_deleted FROM purge_financial_staging(p_limit => 3)").fetchone()[
            "staging_rows_deleted"
        ]
        == 3
    )
    assert (
        conn.execute("SELECT staging_rows_deleted FROM purge_financial_staging(p_limit => 3)").fetchone()[
            "staging_rows_deleted"
        ]
        == 2
    )
    left = conn.execute(
        "SELECT transaction_id, processing_status FROM financial_transactions_staging"
    ).fetchall()
    assert [tuple(x.values()) for x in left] == [(9, "dead_letter")]


def test_two_workers_claim_disjoint_rows_across_partitions(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        stage_at(c, "now() - interval '40 days'", [(i, i, MONDAY_10, 10, "payment") for i in range(1, 5)])
        stage_at(c, "now() - interval '1 day'", [(i, i, MONDAY_10, 10, "payment") for i in range(5, 9)])
        stage_at(c, "now()", [(i, i, MONDAY_10, 10, "payment") for i in range(9, 13)])
    results = {}
    with psycopg.connect(db_dsn, row_factory=dict_row) as a:
        results["a"] = a.execute("SELECT * FROM process_financial_batch_detail(6)").fetchone()  # open tx

        def other():
            with psycopg.connect(db_dsn, row_factory=dict_row, autocommit=True) as b:
                results["b"] = b.execute("SELECT * FROM process_financial_batch_detail(100)").fetchone()

        t = threading.Thread(target=other)
        t.start()
        t.join(1.0)
        a.commit()
        t.join(10)
    # b takes rows only of account buckets a does not hold; the rest is claimed after a commits
    assert results["a"]["claimed_count"] == 6 and results["b"]["claimed_count"] <= 6
    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        rest = c.execute("SELECT * FROM process_financial_batch_detail(100)").fetchone()["claimed_count"]
        assert results["b"]["claimed_count"] + rest == 6
        got = c.execute(
            "SELECT chunk_id, array_agg(transaction_id ORDER BY transaction_id) AS ids "
            "FROM financial_transactions_staging GROUP BY chunk_id ORDER BY chunk_id"
        ).fetchall()
        # the chunks are disjoint, span the three partitions, and together hold every row once
        assert sorted(i for r in got for i in r["ids"]) == list(range(1, 13))
        assert None not in [r["chunk_id"] for r in got]
        assert c.execute("SELECT count(*) AS n FROM financial_transaction_ledger").fetchone()["n"] == 12


def test_purge_waits_for_a_running_chunk_and_loses_nothing(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        c.execute("SELECT ensure_staging_partitions(p_back => interval '10 days')")
        stage_at(c, "now() - interval '9 days'", [(i, i, MONDAY_10, 10, "payment") for i in range(1, 5)])
    result = {}
    with psycopg.connect(db_dsn, row_factory=dict_row) as a:
        assert a.execute("SELECT * FROM process_financial_batch_detail(2)").fetchone()["claimed_count"] == 2

        def purge():
            with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as b:
                result["r"] = b.execute("SELECT * FROM purge_financial_staging()").fetchone()

        t = threading.Thread(target=purge)
        t.start()
        t.join(1.0)
        assert t.is_alive()  # the drop waits for the chunk in flight, which commits whole
        a.commit()
        t.join(10)
    assert result["r"]["staging_rows_deleted"] == 2
    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        left = c.execute(
            "SELECT transaction_id, processing_status, tableoid::regclass::text AS p "
            "FROM financial_transactions_staging ORDER BY 1"
        ).fetchall()
        # the two rows the chunk did not claim (which two depends on the claim's random first bucket)
        done = {
            r["transaction_id"] for r in c.execute("SELECT transaction_id FROM financial_transaction_ledger")
        }
        assert len(done) == 2
        assert [tuple(r.values()) for r in left] == [
            (i, "pending", "financial_transactions_staging_default") for i in sorted({1, 2, 3, 4} - done)
        ]
        assert process(c)["processed_count"] == 2
        assert c.execute("SELECT count(*) AS n FROM financial_transaction_ledger").fetchone()["n"] == 4

"""A small deterministic dataset for the console's snapshot tests and `make screenshots`.

Everything is placed relative to one anchor instant (the FrozenClock's "now"), so relative times
("1m 30s", "in 45s", "5m ago") come out the same on every run. Parts whose tables are not installed
are skipped, so the seed works at any migration level.

The anchor is the start of a minute (`minute_anchor()`): the database's own clock (now(), which the
Monitor's minutes and drain estimate read) then stays in the anchor's minute while a picture is taken,
and rollup minutes map onto the same shown minutes on every run.

Only for scratch databases: with `fixed_monitor` it writes an hour of smooth, fixed rollup minutes
before the anchor's (real processing latencies differ from run to run), and with `fixed_catalog` it
replaces the catalogue's rows by a small fixed set (the real catalogue changes with every migration).
The schema changes and catalogue entries the migrations recorded are dated relative to the anchor too.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time

import psycopg
from psycopg.rows import tuple_row

from opsconsole.pipeline import arrival

FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Ken",
    "Dennis",
    "Margaret",
    "Linus",
    "Frances",
    "John",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Thompson",
    "Ritchie",
    "Hamilton",
    "Torvalds",
    "Allen",
    "Backus",
]


def scalar(conn: psycopg.Connection, sql: str, params: tuple = ()) -> object:
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
    return row[0] if row else None


def has(conn: psycopg.Connection, name: str) -> bool:
    return bool(scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (name,)))


def has_function(conn: psycopg.Connection, name: str) -> bool:
    return bool(scalar(conn, "SELECT EXISTS (SELECT 1 FROM pg_proc WHERE proname = %s)", (name,)))


def minute_anchor(margin_s: int = 30) -> dt.datetime:
    """The start of the current minute, once at least `margin_s` seconds of it are left (waiting for
    the next minute otherwise), so a picture taken from it finishes inside the anchor's minute."""
    now = dt.datetime.now(dt.UTC)
    if now.second >= 60 - margin_s:
        time.sleep(60 - now.second - now.microsecond / 1e6 + 0.05)
        now = dt.datetime.now(dt.UTC)
    return now.replace(second=0, microsecond=0)


def seed(
    conn: psycopg.Connection, anchor: dt.datetime, *, fixed_monitor: bool = True, fixed_catalog: bool = True
) -> None:
    """Load the sample (autocommit connection, empty migrated database)."""
    seed_sources(conn, anchor)
    if has(conn, "financial_transactions_staging"):
        seed_staging(conn, anchor)
    if fixed_monitor:
        fix_monitor(conn, anchor)
    if has(conn, "dq_rule_definitions") and has_function(conn, "execute_data_quality_checks"):
        seed_quality(conn, anchor)
    if has_function(conn, "refresh_customer_360_incremental"):
        conn.execute("SELECT * FROM refresh_customer_360_incremental()")
    if has(conn, "data_catalog"):
        seed_catalog(conn, fixed_catalog, anchor)
    conn.execute("DELETE FROM ops_audit_log")  # the seeding's own audit rows: the sample's log is curated
    seed_audit(conn, anchor)


def seed_sources(conn: psycopg.Connection, anchor: dt.datetime) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO crm_customers (customer_id, customer_uuid, first_name, last_name, email, phone,"
            " created_at, updated_at) VALUES (%s, %s::uuid, %s, %s, %s, %s, %s, %s)",
            [
                (
                    i + 1,
                    f"00000000-0000-4000-8000-{i + 1:012d}",
                    FIRST[i],
                    LAST[i],
                    f"{FIRST[i].lower()}.{LAST[i].lower()}@example.com" if i != 7 else None,
                    f"+1 555 01{i:02d}",
                    anchor - dt.timedelta(days=400 - 10 * i),
                    anchor - dt.timedelta(days=3 + i),
                )
                for i in range(len(FIRST))
            ],
        )
        orders = []
        for n in range(1, 37):
            day = (anchor - dt.timedelta(days=4 * n)).date()
            orders.append(
                (n, 1 + n % 12, f"SO-{1000 + n}", day, 25 * (n % 9 + 1) + 0.5, "EUR", "completed", day)
            )
        cur.executemany(
            "INSERT INTO erp_orders (order_id, customer_id, order_number, order_date, total_amount,"
            " currency_code, status, partition_date) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            orders,
        )
        # a writer of orders claims their ids itself (no trigger does: docs/scaling.md)
        cur.execute(
            "SELECT erp_order_keys_add(%s::bigint[], %s::date[])",
            ([o[0] for o in orders], [o[-1] for o in orders]),
        )
        kinds = ["page_view", "product_view", "add_to_cart", "purchase"]
        cur.executemany(
            "INSERT INTO ecommerce_events (customer_id, session_id, event_timestamp, event_type, event_data,"
            " page_url, processed_at) VALUES (%s, %s::uuid, %s, %s, %s::jsonb, %s, %s)",
            [
                (
                    1 + n % 12,
                    f"00000000-0000-4000-9000-{n // 4:012d}",
                    anchor - dt.timedelta(hours=3 * n),
                    kinds[n % 4],
                    json.dumps({"category": ["books", "games", "music"][n % 3]}),
                    f"/products/{n}",
                    anchor - dt.timedelta(hours=3 * n) + dt.timedelta(seconds=2),
                )
                for n in range(1, 61)
            ],
        )
        cur.executemany(
            "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount,"
            " transaction_type, reference_data, batch_id) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)",
            [
                (
                    90_000 + n,
                    500 + n % 12,
                    anchor - dt.timedelta(days=4 * n, hours=1),
                    25 * (n % 9 + 1) + 0.5,
                    "payment",
                    json.dumps({"order_id": n}),
                    "hist-1",
                )
                for n in range(1, 37)
            ],
        )


def seed_staging(conn: psycopg.Connection, anchor: dt.datetime) -> None:
    """Open work only: pending rows, failed rows waiting for their retry, dead letters."""
    rows = []
    for i in range(5):
        rows.append(
            (
                10_001 + i,
                700 + i,
                anchor - dt.timedelta(seconds=95),
                12.5 + i,
                "payment",
                json.dumps({"order_id": 1 + i}),
                "b-0317",
                anchor - dt.timedelta(seconds=90 - i),
                "pending",
                None,
                None,
                0,
                anchor - dt.timedelta(seconds=90 - i),
            )
        )
    for i in range(6):
        rows.append(
            (
                10_101 + i,
                710 + i,
                anchor - dt.timedelta(minutes=12),
                40 + i,
                "payment",
                json.dumps({"order_id": 9_000 + i}),
                "b-0316" if i < 4 else "b-0315",
                anchor - dt.timedelta(minutes=11),
                "failed",
                "order_not_found",
                f"order_id {9_000 + i} is not in erp_orders",
                2 + i % 2,
                anchor + dt.timedelta(seconds=45 + 30 * i),
            )
        )
    for i in range(3):
        rows.append(
            (
                10_201 + i,
                720 + i,
                anchor - dt.timedelta(minutes=30),
                9.99,
                "bogus",
                "{}",
                "b-0314",
                anchor - dt.timedelta(minutes=29),
                "dead_letter",
                "unknown_type",
                "transaction_type 'bogus' is not a known type",
                1,
                anchor - dt.timedelta(minutes=29),
            )
        )
    for i in range(2):
        rows.append(
            (
                10_301 + i,
                730 + i,
                anchor - dt.timedelta(minutes=40),
                None,
                "refund",
                "{}",
                "b-0313",
                anchor - dt.timedelta(minutes=39),
                "dead_letter",
                "missing_field",
                "required field(s) missing: amount",
                1,
                anchor - dt.timedelta(minutes=39),
            )
        )
    # one INSERT of all the rows, counted by their own minutes and states (opsconsole.pipeline.arrival)
    values = ", ".join(["(%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    arrival.insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type, reference_data, batch_id, ingestion_timestamp, processing_status,"
        f" error_code, error_message, retry_count, next_attempt_at) VALUES {values}",
        [v for row in rows for v in row],
        source="sample",
    )


def fix_monitor(conn: psycopg.Connection, anchor: dt.datetime) -> None:
    """Fifty-eight minutes of smooth, fixed figures ending two minutes before the anchor's minute,
    written through the rollups' own writer for history without staging rows
    (financial_rollup_minutes_apply). The previous minute keeps only the sample's own rows: the drain
    estimate reads it against a span that grows with the wall clock's seconds."""
    minute = anchor.replace(second=0, microsecond=0)
    rollups, latency = [], []
    for k in range(2, 60):
        bucket = (minute - dt.timedelta(minutes=k)).isoformat()
        processed = 900 + round(300 * math.sin(k / 6.0))
        slow = round(processed * (0.02 + 0.015 * math.cos(k / 5.0)))  # 200-400 ms
        rows = [(50, 100, processed // 2), (100, 150, processed - processed // 2 - slow), (200, 300, slow)]
        rollups.append(
            {
                "minute_bucket": bucket,
                "total_delta": processed + (3 if k % 7 == 3 else 0) + (1 if k % 11 == 5 else 0),
                "processed_delta": processed,
                "failed_delta": 3 if k % 7 == 3 else 0,
                "dead_letter_delta": 1 if k % 11 == 5 else 0,
                "latency_count": processed,
                "latency_sum_ms": sum(n * (lo + hi) // 2 for lo, hi, n in rows),
                "latency_max_ms": 290,
                "sla_breaches": 0,
            }
        )
        latency += [
            {"minute_bucket": bucket, "bucket_lower_ms": lo, "bucket_upper_ms": hi, "row_count": n}
            for lo, hi, n in rows
        ]
    conn.execute("SELECT financial_rollup_minutes_apply(%s::jsonb)", (json.dumps(rollups),))
    conn.execute("SELECT financial_latency_apply(%s::jsonb)", (json.dumps(latency),))


def seed_quality(conn: psycopg.Connection, anchor: dt.datetime) -> None:
    """Two runs of the sample rules; between them two customers lose their email, so the completeness
    rule's trend dips. The runs are then dated 20 and 5 minutes before the anchor."""
    conn.execute("SELECT count(*) FROM execute_data_quality_checks()")
    first = scalar(conn, "SELECT max(check_timestamp) FROM data_quality_metrics")
    conn.execute("UPDATE crm_customers SET email = NULL WHERE customer_id IN (3, 5)")
    conn.execute("SELECT count(*) FROM execute_data_quality_checks()")
    conn.execute(
        "UPDATE data_quality_metrics SET check_timestamp = CASE WHEN check_timestamp <= %s"
        " THEN %s::timestamptz ELSE %s::timestamptz END",
        (first, anchor - dt.timedelta(minutes=20), anchor - dt.timedelta(minutes=5)),
    )


def seed_catalog(conn: psycopg.Connection, fixed: bool, anchor: dt.datetime) -> None:
    if has_function(conn, "refresh_data_catalog"):
        conn.execute("SELECT refresh_data_catalog()")
    if fixed:
        conn.execute(
            "DELETE FROM data_catalog WHERE table_name NOT IN"
            " ('crm_customers', 'erp_orders', 'financial_transactions_staging', 'ops_audit_log')"
        )
    conn.execute(
        "UPDATE data_catalog SET first_seen_at = %s, last_updated = %s",
        (anchor - dt.timedelta(hours=2), anchor - dt.timedelta(minutes=2)),
    )
    # what the migrations recorded, at fixed times before the anchor, in the order it happened
    conn.execute(
        "UPDATE schema_evolution_log SET applied_at = %s + evolution_id * interval '1 second'",
        (anchor - dt.timedelta(hours=1),),
    )
    if has_function(conn, "record_lineage"):
        for source, target, pipeline in (
            ("ext:transaction_files", "financial_transactions_staging", "ingest"),
            ("financial_transactions_staging", "financial_transactions_processed", "process_financial_batch"),
            ("crm_customers", "customer_360_store", "customer_360"),
            ("erp_orders", "customer_360_store", "customer_360"),
        ):
            conn.execute("SELECT record_lineage(%s, %s, %s)", (source, target, pipeline))


def seed_audit(conn: psycopg.Connection, anchor: dt.datetime) -> None:
    rows = [
        (
            25,
            "alice",
            "opsconsole:cli",
            "process_financial_batch",
            {"batch_size": 5000},
            {"processed_count": 4981, "failed_count": 19},
            "ok",
            842.0,
            None,
        ),
        (
            19,
            "bob",
            "opsconsole:action",
            "retry_failed",
            {"error_code": "order_not_found"},
            {"requeued": 37},
            "ok",
            21.5,
            "console: retry code",
        ),
        (
            12,
            "alice",
            "opsconsole:action",
            "dq.run",
            {"rule": None},
            {"rules": 4, "failed": 1},
            "ok",
            63.2,
            None,
        ),
        (
            7,
            "carol",
            "opsconsole:action",
            "refresh_data_catalog",
            {},
            {"added": 3, "removed": 0, "changed": 1},
            "ok",
            118.4,
            "console",
        ),
        (
            4,
            "bob",
            "opsconsole:action",
            "process_financial_batch",
            {"batch_size": 20000},
            {"error": "canceling statement due to user request"},
            "cancelled",
            2210.0,
            "console",
        ),
        (
            2,
            "carol",
            "opsconsole:action",
            "refresh_customer_360_incremental",
            {},
            {"error": "permission denied for table customer_360_store"},
            "error",
            3.1,
            "console",
        ),
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO ops_audit_log (occurred_at, actor, application_name, action, arguments, result,"
            " status, duration_ms, reason) VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)",
            [
                (
                    anchor - dt.timedelta(minutes=m),
                    who,
                    app,
                    action,
                    json.dumps(args),
                    json.dumps(res),
                    st,
                    ms_,
                    reason,
                )
                for m, who, app, action, args, res, st, ms_, reason in rows
            ],
        )

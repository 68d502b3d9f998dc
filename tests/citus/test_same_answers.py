"""The spec's objects give the same answers on a Citus coordinator as on one server.

The same deterministic seed (customers, orders, events, transactions run through the pipeline,
lakehouse versions) goes into a plain PostgreSQL database and into the coordinator; the same
processing follows on both (customer 360 full refresh, every DQ rule, catalog refresh). Then the
monitor's totals, the processed rows, search results, DQ results, lineage, the catalog, the customer
360 rows, lake history and time travel are compared. On Citus customer 360 incremental equals full.
Columns that hold the wall-clock time of the run (processed_at, last_updated, ...) are left out.
"""

from __future__ import annotations

import datetime as dt
import json

import psycopg
from click.testing import CliRunner
from psycopg.types.json import Jsonb

from opsconsole.cli import main
from opsconsole.datagen import seed as seeding
from tests.orders import add_orders

AS_OF = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
PLAN = seeding.SeedPlan(customers=400, seed=11, as_of=AS_OF)

# name -> query; each returns rows in a fixed order
SNAPSHOTS = {
    "monitor totals": """
        SELECT sum(total_transactions), sum(pending_count), sum(processed_count), sum(failed_count),
               sum(dead_letter_count), sum(duplicate_count), sum(latency_count)
        FROM financial_processing_rollup""",
    "processed": """
        SELECT md5(string_agg(format('%s|%s|%s|%s|%s', transaction_id, account_id, amount, risk_score,
                                     validation_status), ',' ORDER BY transaction_id)), count(*)
        FROM financial_transactions_processed""",
    "ledger": """
        SELECT md5(string_agg(format('%s|%s|%s', transaction_id, account_id, payload_hash), ','
                              ORDER BY transaction_id)), count(*)
        FROM financial_transaction_ledger""",
    "is_processed": "SELECT is_processed, count(*) FROM financial_transactions GROUP BY 1 ORDER BY 1",
    "customer 360": """
        SELECT md5(string_agg(format('%s|%s|%s|%s|%s|%s|%s|%s|%s', customer_id, golden_customer_id,
                                     total_orders, total_lifetime_value, total_events, transaction_count,
                                     total_transaction_amount, value_segment, engagement_segment), ','
                              ORDER BY customer_id)), count(*)
        FROM customer_360_store""",
    "events": """
        SELECT 'customer' AS kind, event_type, count(*), count(DISTINCT session_id), max(event_id)
        FROM ecommerce_events GROUP BY event_type
        UNION ALL
        SELECT 'anonymous', event_type, count(*), count(DISTINCT session_id), max(event_id)
        FROM ecommerce_anonymous_events GROUP BY event_type
        ORDER BY 1, 2""",
    "dq results": """
        SELECT rule_name, last_status, last_passed,
               CASE WHEN rule_type <> 'freshness' THEN last_score END  -- freshness moves with the clock
        FROM dq_latest_results ORDER BY rule_name""",
    "lineage": """
        SELECT source_table, source_column, target_table, target_column, transformation_logic, pipeline_name
        FROM data_lineage ORDER BY 1, 2, 3, 4""",
    "catalog": """
        SELECT table_name, column_name, data_type, data_classification FROM data_catalog
        ORDER BY 1, 2""",
    "lakehouse versions": """
        SELECT md5(string_agg(format('%s|%s|%s|%s|%s', customer_id, version_number, operation_type,
                                     effective_from, customer_data), ','
                              ORDER BY customer_id, version_number)), count(*)
        FROM lakehouse_customers""",
    "time travel": """
        SELECT md5(string_agg(format('%s|%s|%s', customer_id, version_number, customer_data), ','
                              ORDER BY customer_id)), count(*)
        FROM time_travel_customers('2026-06-01 00:00+00')""",
}
SEARCHES = ["smith", "anna", "555", "12"]
# A query held by more rows than the search reads (tier 2 stops after search_scan_cap rows, in no
# order, on purpose) answers with the best of the rows it read: which rows those are depends on the
# scan order, on one server as on Citus (where the shards answer in any order). Compared: how many
# rows and how each matched.
BROAD_SEARCHES = ["@example"]


def _cli(dsn: str, *args: str):
    out = CliRunner().invoke(main, ["--dsn", dsn, "--json", *args])
    assert out.exit_code in (0, 1), (args, out.output)  # dq run exits 1 when a rule fails
    return json.loads(out.output)


def _prepare(dsn: str) -> dict:
    seeding.seed(dsn, PLAN, jobs=1)
    _cli(dsn, "c360", "refresh", "--full")
    _cli(dsn, "dq", "run")
    _cli(dsn, "catalog", "refresh")
    answers = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, query in SNAPSHOTS.items():
            answers[name] = conn.execute(query).fetchall()
    for text in SEARCHES:
        answers[f"search {text}"] = [
            (r["customer_id"], r["match_kind"], r["score"]) for r in _cli(dsn, "customer", "search", text)
        ]
    for table in ("financial_transactions_processed", "customer_360_store"):
        answers[f"lineage {table}"] = _cli(dsn, "lineage", table)
    for customer in (1, 17, 123):
        answers[f"lake history {customer}"] = [
            {k: v for k, v in row.items() if k not in ("created_at", "transaction_id")}
            for row in _cli(dsn, "lake", "history", str(customer))
        ]
    for text in BROAD_SEARCHES:
        answers[f"search {text}"] = sorted(
            (r["match_kind"], text in (r["email"] or "").lower())
            for r in _cli(dsn, "customer", "search", text)
        )
    answers["reconcile"] = [(r["check_name"], r["mismatch_count"]) for r in _cli(dsn, "reconcile")]
    return answers


def test_same_answers_as_one_server(citus_dsn, db_dsn):
    one_server = _prepare(db_dsn)
    on_citus = _prepare(citus_dsn)
    assert one_server["processed"][0][1] > 0 and one_server["lakehouse versions"][0][1] > 0
    differ = [name for name in one_server if one_server[name] != on_citus[name]]
    assert differ == [], {name: (one_server[name], on_citus[name]) for name in differ}


def test_customer_360_incremental_equals_full_on_citus(citus_dsn):
    seeding.seed(citus_dsn, seeding.SeedPlan(customers=200, seed=5, as_of=AS_OF), jobs=1)
    query = SNAPSHOTS["customer 360"]
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        _cli(citus_dsn, "c360", "refresh", "--full")
        # changes in every source: a profile, an order, events, a processed transaction's order link
        conn.execute("UPDATE crm_customers SET email = 'moved@example.com' WHERE customer_id IN (3, 4)")
        add_orders(
            conn,
            {"order_id": 900001, "customer_id": 5, "order_date": dt.date(2026, 11, 20), "total_amount": 99.50}
            | {"currency_code": "EUR", "status": "delivered"},
        )
        conn.execute(
            "INSERT INTO ecommerce_events (customer_id, event_timestamp, event_type, event_data) "
            "SELECT 6, '2026-11-21 10:00+00', 'page_view', '{}' FROM generate_series(1, 3)"
        )
        conn.execute("DELETE FROM crm_customers WHERE customer_id = 7")
        # financial transactions (distributed by account_id): a processed one re-pointed to another
        # order, and one deleted and loaded again unprocessed, which the ledger's shard flags again
        # (shard-local follow-up); the shard triggers queue the orders on their own shards
        moved, again = conn.execute(
            "SELECT account_id, transaction_id FROM financial_transactions"
            " WHERE is_processed AND reference_data ? 'order_id' ORDER BY transaction_id LIMIT 2"
        ).fetchall()
        (target,) = conn.execute("SELECT max(order_id) FROM erp_orders").fetchone()
        conn.execute(
            "UPDATE financial_transactions SET reference_data = jsonb_build_object('order_id', %s::bigint)"
            " WHERE account_id = %s AND transaction_id = %s",
            (target, *moved),
        )
        row = conn.execute(
            "DELETE FROM financial_transactions WHERE account_id = %s AND transaction_id = %s"
            " RETURNING transaction_id, account_id, transaction_timestamp, amount, transaction_type,"
            " reference_data, batch_id",
            again,
        ).fetchone()
        conn.execute(
            "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount,"
            " transaction_type, reference_data, batch_id) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (*row[:5], Jsonb(row[5]), row[6]),
        )
        flag = "SELECT is_processed FROM financial_transactions WHERE account_id = %s AND transaction_id = %s"
        assert conn.execute(flag, again).fetchone() == (True,)
        queued = conn.execute("SELECT DISTINCT source FROM customer_360_dirty_orders").fetchall()
        assert queued == [("financial_transactions",)]
        _cli(citus_dsn, "c360", "refresh")
        incremental = conn.execute(query).fetchall()
        _cli(citus_dsn, "c360", "refresh", "--full")
        assert conn.execute(query).fetchall() == incremental


def test_truncating_the_distributed_transactions_is_captured(citus_dsn):
    """TRUNCATE financial_transactions fires per shard, before the rows go: each shard queues the orders
    of its processed rows on its own node, so the next incremental refresh clears every financial
    profile, as a full one does."""
    seeding.seed(citus_dsn, seeding.SeedPlan(customers=60, seed=3, as_of=AS_OF), jobs=1)
    total = "SELECT sum(transaction_count) FROM customer_360_store"
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        _cli(citus_dsn, "c360", "refresh", "--full")
        assert conn.execute(total).fetchone()[0] > 0
        conn.execute("TRUNCATE financial_transactions")
        sources = conn.execute("SELECT DISTINCT source FROM customer_360_dirty_orders").fetchall()
        assert sources == [("truncate financial_transactions",)]
        _cli(citus_dsn, "c360", "refresh")
        assert conn.execute(total).fetchone()[0] == 0


def test_truncating_the_distributed_customers_is_captured(citus_dsn):
    """TRUNCATE fires per shard on the workers: every live customer gets a tombstone version and a
    queue entry there (shard-local), so the next incremental refresh empties the store."""
    seeding.seed(citus_dsn, seeding.SeedPlan(customers=60, seed=3, as_of=AS_OF), jobs=1)
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        _cli(citus_dsn, "c360", "refresh", "--full")
        assert conn.execute("SELECT count(*) FROM customer_360_store").fetchone()[0] == 60
        conn.execute("TRUNCATE crm_customers")
        live = conn.execute(
            "SELECT count(*) FROM lakehouse_customers "
            "WHERE effective_to IS NULL AND operation_type <> 'DELETE'"
        ).fetchone()[0]
        assert live == 0
        sources = conn.execute("SELECT DISTINCT source FROM customer_360_dirty").fetchall()
        assert sources == [("truncate crm_customers",)]
        _cli(citus_dsn, "c360", "refresh")
        assert conn.execute("SELECT count(*) FROM customer_360_store").fetchone()[0] == 0
    # and a seed that empties the tables first runs there too
    seeding.seed(citus_dsn, seeding.SeedPlan(customers=60, seed=4, as_of=AS_OF), jobs=1, truncate_first=True)
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM crm_customers").fetchone()[0] == 60

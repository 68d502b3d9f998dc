"""Thirteen months unattended, compressed: time is driven through the data (orders, transactions and
their ingestion time carry the simulated clock) and through maintenance (`maintain(at=T)`, the purge's
cutoff measured from T), with traffic, retention and maintenance at every step.

Checks: DEFAULT partitions stay small (orders and processed: empty; staging: only the rows it keeps on
purpose, those still owed a decision), nothing is lost (every valid transaction is processed exactly
once), reconcile is clean, and the monitor and backlog queries do the same work at the end as at the
start (EXPLAIN ANALYZE buffers and the partitions scanned, not wall time).

Bounded to about two minutes by default (a step of 3 simulated days, 150 transactions each);
OPSCONSOLE_SOAK_DAYS_PER_STEP=1 and OPSCONSOLE_SOAK_ROWS=2000 make it longer and heavier.
"""

from __future__ import annotations

import datetime as dt
import json
import os

import psycopg
from psycopg.types.json import Jsonb

from opsconsole.ops import maintenance
from opsconsole.ops import pipeline as ops
from opsconsole.pipeline.arrival import insert_counted
from tests.orders import add_orders

DAYS = 395  # thirteen months
STEP_DAYS = int(os.environ.get("OPSCONSOLE_SOAK_DAYS_PER_STEP", "3"))
ROWS = int(os.environ.get("OPSCONSOLE_SOAK_ROWS", "150"))
INVALID_EVERY = 50  # one row in 50 lacks its amount: dead-lettered, kept in staging on purpose


def _explain(conn, query: str) -> dict:
    plan = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}").fetchone()[0][0]

    def walk(node, acc):
        if "Relation Name" in node:
            acc.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child, acc)
        return acc

    top = plan["Plan"]
    return {
        "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "relations": walk(top, set()),
    }


def _default_rows(conn) -> dict[str, int]:
    out = {}
    for parent, default in conn.execute(
        "SELECT parent::text, default_partition::text FROM maintenance_partitioned_tables()"
    ).fetchall():
        out[parent] = conn.execute(f"SELECT count(*) FROM {default}").fetchone()[0]
    return out


def test_thirteen_months_of_traffic_retention_and_maintenance(db_dsn) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        now = conn.execute("SELECT date_trunc('day', now())").fetchone()[0]
        t = now - dt.timedelta(days=DAYS)
        # Deployed at t: its partitions reach three months (a week for staging) ahead, no further.
        for parent, reach in (
            ("erp_orders", t + dt.timedelta(days=100)),
            ("financial_transactions_processed", t + dt.timedelta(days=100)),
            ("financial_transactions_staging", t + dt.timedelta(days=8)),
        ):
            for (part,) in conn.execute(
                "SELECT partition_name::text FROM partition_bounds(%s) WHERE range_from > %s", (parent, reach)
            ).fetchall():
                conn.execute(f"DROP TABLE {part}")
        retention = conn.execute("SELECT staging_retention FROM financial_pipeline_settings").fetchone()[0]
        maintenance.maintain(conn, at=t)

        order_id = txn_id = 0
        valid = invalid = 0
        baseline = None
        worst_default: dict[str, int] = {}
        while t < now:
            t = min(now, t + dt.timedelta(days=STEP_DAYS))
            # the day's traffic: orders, then transactions that reference them (some without)
            orders = list(range(order_id + 1, order_id + 1 + ROWS // 3))
            order_id = orders[-1]
            add_orders(
                conn,
                *({"order_id": o, "customer_id": 1, "order_date": t, "total_amount": 10} for o in orders),
            )
            rows = []
            for i in range(ROWS):
                txn_id += 1
                bad = txn_id % INVALID_EVERY == 0
                invalid += bad
                valid += not bad
                rows.append(
                    (
                        txn_id,
                        1000 + txn_id % 97,
                        t + dt.timedelta(seconds=i),
                        None if bad else 12.5 + i,
                        "payment",
                        Jsonb({"order_id": orders[i % len(orders)]} if i % 2 else {}),
                        f"soak-{t:%Y%m%d}",
                        t + dt.timedelta(seconds=i),
                    )
                )
            values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
            insert_counted(
                conn,
                "INSERT INTO financial_transactions_staging (transaction_id, account_id, "
                "transaction_timestamp, amount, transaction_type, reference_data, batch_id, "
                f"ingestion_timestamp) VALUES {values}",
                [v for row in rows for v in row],
            )
            while ops.process_batch(conn, 5000).claimed:
                pass
            # the daily maintenance, at the simulated clock: the purge's cutoff is t - retention
            maintenance.maintain(conn, at=t, older_than=(now - t) + retention)
            defaults = _default_rows(conn)
            for k, v in defaults.items():
                worst_default[k] = max(worst_default.get(k, 0), v)
            if baseline is None and t >= now - dt.timedelta(days=DAYS - 35):
                baseline = {
                    "monitor": _explain(conn, "SELECT * FROM financial_processing_monitor"),
                    "backlog": _explain(conn, "SELECT * FROM financial_pipeline_backlog"),
                }

        # DEFAULT stayed small: nothing for orders and processed; staging keeps only owed rows
        assert worst_default["erp_orders"] == 0, worst_default
        assert worst_default["financial_transactions_processed"] == 0, worst_default
        done_in_default = conn.execute(
            "SELECT count(*) FROM financial_transactions_staging_default "
            "WHERE processing_status IN ('processed', 'duplicate')"
        ).fetchone()[0]
        assert done_in_default == 0
        assert worst_default["financial_transactions_staging"] <= invalid

        # nothing lost: every valid transaction processed once, every invalid one still owed
        assert conn.execute("SELECT count(*) FROM financial_transactions_processed").fetchone()[0] == valid
        assert (
            conn.execute(
                "SELECT count(*) FROM financial_transactions_staging WHERE processing_status = 'dead_letter'"
            ).fetchone()[0]
            == invalid
        )
        bad = [r for r in ops.reconcile(conn) if r["mismatch_count"]]
        assert not bad, bad
        # staging holds the retention's days, the week ahead and DEFAULT, not thirteen months of days
        staging_parts = conn.execute(
            "SELECT count(*) FROM partition_bounds('financial_transactions_staging')"
        ).fetchone()[0]
        assert staging_parts <= retention.days + 10, staging_parts

        # the monitor and backlog do the same work as after the first month
        end = {
            "monitor": _explain(conn, "SELECT * FROM financial_processing_monitor"),
            "backlog": _explain(conn, "SELECT * FROM financial_pipeline_backlog"),
        }
        for name in ("monitor", "backlog"):
            assert len(end[name]["relations"]) <= len(baseline[name]["relations"]) + 2, (name, baseline, end)
            assert end[name]["buffers"] <= 3 * baseline[name]["buffers"] + 100, (name, baseline, end)
        negative = conn.execute(
            "SELECT count(*) FROM financial_processing_rollup "
            "WHERE least(total_transactions, processed_count, failed_count, pending_count) < 0"
        ).fetchone()[0]
        print(
            json.dumps(
                {
                    "steps_days": STEP_DAYS,
                    "valid": valid,
                    "invalid": invalid,
                    "defaults": worst_default,
                    "baseline": {k: v["buffers"] for k, v in baseline.items()},
                    "end": {k: v["buffers"] for k, v in end.items()},
                    "negative_rollups": negative,
                }
            )
        )

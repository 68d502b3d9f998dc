"""Shared by the health, metrics and console on-call tests: staging rows and a failing critical rule."""

from __future__ import annotations

from opsconsole.ops import dq
from opsconsole.pipeline.arrival import insert_counted


def stage(conn, first: int, n: int, *, type_: str = "payment", ago: str = "0 seconds") -> None:
    """n staging rows with transaction ids first.., ingested `ago` (an interval) before now; an
    unknown type_ makes them dead letters at once (not retryable)."""
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, batch_id, ingestion_timestamp) "
        "SELECT g, g %% 7, now() - %s::interval - interval '1 minute', 10 + g %% 50, %s, 'health', "
        "now() - %s::interval FROM generate_series(%s::bigint, %s::bigint) g",
        (ago, type_, ago, first, first + n - 1),
    )


def fail_critical_dq_rule(conn) -> None:
    """Make the seeded rule customer_email_not_null critical and let it fail one run."""
    conn.execute(
        "UPDATE dq_rule_definitions SET severity = 'critical' WHERE rule_name = 'customer_email_not_null'"
    )
    conn.execute("INSERT INTO crm_customers (customer_id, email) VALUES (1, NULL), (2, NULL), (3, 'a@b.c')")
    dq.run_checks(conn, rule="customer_email_not_null")

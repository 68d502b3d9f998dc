"""Data that arrives late, or is retried long after it arrived: rollups never go negative."""

from __future__ import annotations

import psycopg
import pytest

from opsconsole.ops import pipeline as ops
from opsconsole.pipeline.arrival import insert_counted
from tests.orders import add_orders


@pytest.fixture
def plain(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as c:
        yield c


NEGATIVE = (
    "SELECT count(*) FROM financial_processing_rollup WHERE least(total_transactions, pending_count, "
    "processed_count, failed_count, dead_letter_count, duplicate_count, latency_count) < 0"
)


def test_retrying_rows_older_than_the_rollup_retention_never_makes_negative_counts(plain):
    plain.execute("SELECT ensure_staging_partitions(p_back => interval '45 days')")
    # a dead letter from 40 days ago (rollup retention: 30 days) and one from today
    insert_counted(
        plain,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, ingestion_timestamp) VALUES "
        "(1, 1, now() - interval '40 days', 10, 'bogus', now() - interval '40 days'), "
        "(2, 1, now(), 10, 'bogus', now())",
    )
    ops.process_batch(plain, 100)
    ops.purge(plain, "60 days")  # trims the rollups past their retention, keeps both rows
    assert plain.execute(NEGATIVE).fetchone()[0] == 0
    # fixed at the source: the type exists now; both are retried and processed
    plain.execute("INSERT INTO financial_transaction_types VALUES ('bogus', 'test')")
    assert ops.retry(plain, all_rows=True, include_dead_letter=True, reason="type added") == 2
    while ops.process_batch(plain, 100).claimed:
        pass
    assert (
        plain.execute(
            "SELECT count(*) FROM financial_transactions_processed WHERE transaction_id IN (1, 2)"
        ).fetchone()[0]
        == 2
    )
    assert plain.execute(NEGATIVE).fetchone()[0] == 0
    old = plain.execute(
        "SELECT count(*) FROM financial_processing_rollup WHERE minute_bucket < now() - interval '30 days'"
    ).fetchone()[0]
    assert old == 0  # the old minute was not created anew holding only the deltas
    # today's minute counts today's row through its whole life: arrived, dead-lettered, retried, done
    today = plain.execute(
        "SELECT sum(total_transactions), sum(processed_count), sum(dead_letter_count), sum(pending_count) "
        "FROM financial_processing_rollup WHERE minute_bucket >= now() - interval '1 hour'"
    ).fetchone()
    assert tuple(today) == (1, 1, 0, 0)


def test_order_not_found_is_retried_for_hours_and_late_orders_are_picked_up(plain):
    schedule = {
        r[0]: r[1:]
        for r in plain.execute(
            "SELECT error_code, max_attempts, first_delay, longest_delay, dead_letter_after "
            "FROM financial_retry_schedule()"
        )
    }
    attempts, first, longest, after = schedule["order_not_found"]
    assert (attempts, first.total_seconds(), longest.total_seconds()) == (12, 60, 3600)
    assert after.total_seconds() >= 5 * 3600  # an ERP batch hours late still finds its transactions
    assert schedule["future_timestamp"][3].total_seconds() == 150  # other codes keep the settings

    insert_counted(
        plain,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, reference_data) VALUES "
        "(1, 1, now(), 10, 'payment', '{\"order_id\": 42}'), "
        "(2, 1, now(), 10, 'payment', '{\"order_id\": 43}')",
    )
    ops.process_batch(plain, 100)

    def state(tid: int):
        return plain.execute(
            "SELECT processing_status, error_code, retry_count, "
            "round(extract(epoch FROM next_attempt_at - processed_at)) "
            "FROM financial_transactions_staging WHERE transaction_id = %s",
            (tid,),
        ).fetchone()

    assert state(1) == ("failed", "order_not_found", 1, 60)
    # ten failures later the wait is an hour, and the row is still retried
    plain.execute(
        "UPDATE financial_transactions_staging SET retry_count = 10, next_attempt_at = now() "
        "WHERE transaction_id = 1"
    )
    ops.process_batch(plain, 100)
    assert state(1) == ("failed", "order_not_found", 11, 3600)
    # the twelfth failure dead-letters it
    plain.execute(
        "UPDATE financial_transactions_staging SET next_attempt_at = now() WHERE transaction_id = 1"
    )
    ops.process_batch(plain, 100)
    assert state(1)[:3] == ("dead_letter", "order_not_found", 12)
    # the late ERP batch arrives; at its next attempt the other row finds its order
    add_orders(plain, {"order_id": 43, "customer_id": 1})
    plain.execute(
        "UPDATE financial_transactions_staging SET next_attempt_at = now() WHERE transaction_id = 2"
    )
    ops.process_batch(plain, 100)
    assert state(2)[0] == "processed"

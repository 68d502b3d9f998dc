"""An order reference is read one way everywhere: {"order_id": "0042"} is order 42 for the pipeline's
validation, customer 360, the console's customer transactions and `customer show`."""

from __future__ import annotations

import json

import psycopg
from click.testing import CliRunner

from opsconsole.cli import main
from opsconsole.db.queries import query
from opsconsole.pipeline.arrival import insert_counted
from tests.orders import add_orders


def test_a_zero_padded_order_reference_is_the_same_order_everywhere(db_dsn) -> None:
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO crm_customers (customer_id, first_name, last_name, email, source_system) "
            "VALUES (7, 'Ada', 'Lovelace', 'ada@example.com', 'crm')"
        )
        add_orders(
            conn,
            {"order_id": 42, "customer_id": 7, "order_number": "SO-42", "total_amount": 10}
            | {"currency_code": "USD", "status": "shipped"},
        )
        refs = ['{"order_id": "0042"}', '{"order_id": 42}', '{"order_id": "42"}', '{"order_id": " 42"}']
        for tid, ref in enumerate(refs, start=1):
            insert_counted(
                conn,
                "INSERT INTO financial_transactions_staging (transaction_id, account_id, "
                "transaction_timestamp, amount, transaction_type, reference_data) "
                "VALUES (%s, 5, now() - interval '1 hour', 10, 'payment', %s::jsonb)",
                (tid, ref),
            )
        conn.execute("SELECT * FROM process_financial_batch_detail(100)")
        fates = dict(
            conn.execute(
                "SELECT transaction_id, coalesce(error_code, processing_status) "
                "FROM financial_transactions_staging ORDER BY 1"
            ).fetchall()
        )
        # the pipeline: three spellings of order 42 are valid; a padded string is not an order id
        assert fates == {1: "processed", 2: "processed", 3: "processed", 4: "bad_order_reference"}
        # the processed ones reach financial_transactions, as the platform's source of record
        conn.execute(
            "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount, "
            "transaction_type, reference_data, is_processed) "
            "SELECT transaction_id, account_id, transaction_timestamp, amount, transaction_type, "
            "reference_data, true FROM financial_transactions_processed ON CONFLICT DO NOTHING"
        )
        assert conn.execute("SELECT count(*) FROM financial_transactions").fetchone()[0] == 3

        # customer 360 attributes all three to customer 7
        conn.execute("SELECT * FROM refresh_customer_360_full()")
        row = conn.execute(
            "SELECT transaction_count, total_transaction_amount FROM customer_360_mv WHERE customer_id = 7"
        ).fetchone()
        assert row == (3, 30)
        # the customer transactions query (console detail and `customer show`) lists them under order 42
        listed = conn.execute(query("customers/transactions"), {"id": 7, "limit": 10}).fetchall()
        assert sorted((r[0], r[6]) for r in listed) == [(1, 42), (2, 42), (3, 42)]

    # and so does `customer show`
    out = CliRunner().invoke(main, ["--dsn", db_dsn, "customer", "show", "7", "--json"])
    assert out.exit_code == 0, out.output
    shown = json.loads(out.output)["recent_transactions"]
    assert sorted(t["transaction_id"] for t in shown) == [1, 2, 3]

"""--json keeps every digit of NUMERIC amounts: Decimals are written as exact JSON number tokens."""

from __future__ import annotations

import json
from decimal import Decimal

import psycopg
from click.testing import CliRunner

from opsconsole.cli import main
from opsconsole.output import dumps, emit
from tests.orders import add_orders

BIG = "12345678901234567.8901"  # 21 significant digits: a binary float keeps about 16


def test_a_numeric_from_the_database_keeps_every_digit(db_dsn, capsys) -> None:
    with psycopg.connect(db_dsn) as conn:
        value = conn.execute("SELECT %s::numeric", (BIG,)).fetchone()[0]
    assert isinstance(value, Decimal)
    emit([{"amount": value, "negative": -value, "count": Decimal(3)}], True)
    out = capsys.readouterr().out
    assert f'"amount": {BIG}' in out and f'"negative": -{BIG}' in out and '"count": 3' in out
    assert json.loads(out, parse_float=Decimal) == [
        {"amount": Decimal(BIG), "negative": -Decimal(BIG), "count": 3}
    ]
    assert str(float(BIG)) not in out  # what the old float conversion printed


def test_exact_tokens_no_exponents_and_json_safe_specials() -> None:
    text = dumps({"e": Decimal("1E+3"), "tiny": Decimal("1E-10"), "nan": Decimal("NaN"), "s": 'a"b\\c'})
    assert json.loads(text, parse_float=Decimal) == {
        "e": 1000,
        "tiny": Decimal("0.0000000001"),
        "nan": "NaN",
        "s": 'a"b\\c',
    }


def test_customer_show_json_keeps_a_large_amount(conn, db_dsn) -> None:
    amount = "1234567890123456.7891"  # the largest scale numeric(20,4) stores: still beyond a float
    conn.execute(
        "INSERT INTO crm_customers (customer_id, first_name, last_name, email, source_system) "
        "VALUES (1, 'Ada', 'Big', 'ada@example.com', 'crm')"
    )
    add_orders(
        conn,
        {"order_id": 10, "customer_id": 1, "order_number": "SO-10", "total_amount": 1}
        | {"currency_code": "USD", "status": "shipped"},
    )
    conn.execute(
        "INSERT INTO financial_transactions (transaction_id, account_id, transaction_timestamp, amount, "
        "transaction_type, reference_data, is_processed) "
        "VALUES (1, 41, now(), %s, 'payment', '{\"order_id\": 10}', true)",
        (amount,),
    )
    result = CliRunner().invoke(main, ["--dsn", db_dsn, "customer", "show", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert f'"amount": {amount}' in result.output
    data = json.loads(result.output, parse_float=Decimal)
    assert data["recent_transactions"][0]["amount"] == Decimal(amount)

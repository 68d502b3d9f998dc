"""ERP orders written by tests the way the platform's writers write them (docs/scaling.md): the rows go
into erp_orders and their order ids are claimed in erp_order_keys (erp_order_keys_add), in one
transaction. No trigger claims them (on Citus a trigger runs on the order's shard), so an order
inserted into erp_orders alone would be unknown to the pipeline's order check."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

# erp_orders' columns a test may give, with the array type each travels as
COLUMNS = {
    "order_id": "bigint",
    "customer_id": "bigint",
    "order_number": "text",
    "order_date": "date",
    "total_amount": "numeric",
    "currency_code": "text",
    "status": "text",
    "sales_rep_id": "integer",
    "created_at": "timestamptz",
    "partition_date": "date",
}
REQUIRED = ("order_id", "customer_id")


def add_orders(conn: psycopg.Connection, *orders: dict) -> int:
    """Insert ``orders`` (dicts of erp_orders columns; order_id and customer_id required, order_date
    defaults to the server's current_date, partition_date to order_date, created_at to now()) and
    claim their ids. A duplicate order id raises UniqueViolation ("duplicate order_id N") and writes
    nothing. Returns the number of orders written."""
    if not orders:
        return 0
    unknown = {k for o in orders for k in o} - set(COLUMNS)
    missing = [k for k in REQUIRED if any(o.get(k) is None for o in orders)]
    if unknown or missing:
        raise ValueError(f"add_orders: unknown columns {sorted(unknown)}, missing {missing}")
    given = [c for c in COLUMNS if any(c in o for o in orders)]
    for c in ("order_date", "partition_date"):
        if c not in given:
            given.append(c)
    values = {
        "order_date": sql.SQL("coalesce(x.order_date, current_date)"),
        "partition_date": sql.SQL("coalesce(x.partition_date, x.order_date, current_date)"),
        "created_at": sql.SQL("coalesce(x.created_at, now())"),
    }
    stmt = sql.SQL(
        "INSERT INTO erp_orders ({cols}) SELECT {vals} FROM unnest({arrays}) AS x({cols}) "
        "RETURNING order_id, partition_date"
    ).format(
        cols=sql.SQL(", ").join(sql.Identifier(c) for c in given),
        vals=sql.SQL(", ").join(values.get(c, sql.SQL("x.{}").format(sql.Identifier(c))) for c in given),
        arrays=sql.SQL(", ").join(sql.SQL("%s::{}[]").format(sql.SQL(COLUMNS[c])) for c in given),
    )
    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(stmt, [[o.get(c) for o in orders] for c in given])
        written = cur.fetchall()
        cur.execute(
            "SELECT erp_order_keys_add(%s::bigint[], %s::date[])",
            ([r[0] for r in written], [r[1] for r in written]),
        )
    return len(written)

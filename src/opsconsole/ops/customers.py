"""Customer 360 actions and reads: search, show one customer, refresh, status, and what the Customers
pane shows. The CLI and the console call these.

Each takes a psycopg connection (autocommit), calls the SQL of sql/definitions/40_customer_360.sql
and 85_search.sql (search_customers, customer_360_mv, refresh_customer_360_incremental/full) or a named
query under sql/queries/customers/, and returns plain dicts. Expected failures become OpsError sentences.
"""

from __future__ import annotations

import re
import time
import uuid
from contextlib import suppress
from functools import partial
from typing import Any

import psycopg

from opsconsole.db.queries import dict_rows, query
from opsconsole.errors import OpsError, database_errors

MAX_ID = 2**63 - 1


class CustomerNotFound(OpsError):
    """No CRM customer has the id or uuid that was asked for."""

    exit_code = 1


class BadCustomerQuery(OpsError):
    """The search text or customer reference cannot be used as given."""

    exit_code = 1


# The customer 360 wording of the shared database-error sentences.
_sql_errors = partial(database_errors, objects="customer 360")


def search(conn: psycopg.Connection, text: str, limit: int = 20) -> list[dict[str, Any]]:
    """Ranked matches for a name, email or phone fragment; an id or uuid gives that customer."""
    if not text or not text.strip():
        raise BadCustomerQuery(
            "The search text is empty; give a name, email or phone fragment, an id or a uuid."
        )
    if not 1 <= limit <= 1000:
        raise BadCustomerQuery("The limit must be between 1 and 1000.")
    with _sql_errors("search customers"):
        return dict_rows(conn, "SELECT * FROM search_customers(%s, %s)", (text, limit))


def resolve_customer_id(conn: psycopg.Connection, ref: str | int) -> int:
    """A customer_id from an id or a uuid (text); CustomerNotFound when there is no such customer."""
    text = str(ref).strip()
    if re.fullmatch(r"[0-9]+", text):
        cid = int(text)
        if cid > MAX_ID:
            raise CustomerNotFound(f"No customer has id {text}: ids are at most {MAX_ID}.")
        return cid
    try:
        as_uuid = uuid.UUID(text)
    except ValueError:
        raise BadCustomerQuery(
            f"'{text}' is neither a customer id nor a uuid; "
            "find the customer with `opsconsole customer search`."
        ) from None
    with _sql_errors("read customers"):
        rows = dict_rows(conn, query("customers/by_uuid"), {"uuid": as_uuid})
    if not rows:
        raise CustomerNotFound(f"No customer has uuid {as_uuid}; try `opsconsole customer search`.")
    return int(rows[0]["customer_id"])


def show(conn: psycopg.Connection, ref: str | int, recent: int = 10) -> dict[str, Any]:
    """One customer: the 360 row, the CRM record, recent orders/events/transactions, linked records.

    'customer_360' is None while the customer waits for its first refresh ('refresh_pending' says so).
    """
    cid = resolve_customer_id(conn, ref)
    params = {"id": cid, "limit": max(1, min(int(recent), 1000))}
    with _sql_errors("read customers"):
        profile = dict_rows(conn, query("customers/profile"), params)
        if not profile:
            raise CustomerNotFound(f"No customer has id {cid}; try `opsconsole customer search`.")
        row_360 = dict_rows(conn, query("customers/row_360"), params)
        c360 = row_360[0] if row_360 else None
        linked: list[dict[str, Any]] = []
        if c360 is not None:
            linked = dict_rows(
                conn, query("customers/linked_records"), {"id": cid, "golden": c360["golden_customer_id"]}
            )
        return {
            "customer_id": cid,
            "profile": profile[0],
            "customer_360": c360,
            "refresh_pending": c360 is None or bool(c360.get("refresh_pending")),
            "linked_records": linked,
            "recent_orders": dict_rows(conn, query("customers/orders"), params),
            "recent_events": dict_rows(conn, query("customers/events"), params),
            "recent_transactions": dict_rows(conn, query("customers/transactions"), params),
        }


REFRESH_INCREMENTAL = "refresh_customer_360_incremental"  # audit action names: the SQL functions'
REFRESH_FULL = "refresh_customer_360_full"


def refresh(conn: psycopg.Connection, full: bool = False) -> dict[str, Any]:
    """Run the incremental (or full) customer-360 refresh (the SQL function writes its audit row, named
    after it). Returns its counts."""
    fn = REFRESH_FULL if full else REFRESH_INCREMENTAL
    started = time.perf_counter()
    try:
        with _sql_errors("refresh customer 360"):
            result = dict_rows(conn, f"SELECT * FROM {fn}()")[0]
    except OpsError as exc:
        ms = round((time.perf_counter() - started) * 1000, 3)
        # The function's own row rolled back with it; a failure of one's own may still be recorded.
        with suppress(psycopg.Error):
            conn.execute(
                "SELECT record_action_failure(%s, '{}'::jsonb, 'error', %s::numeric, %s, NULL)",
                (fn, ms, exc.message),
            )
        raise
    result["mode"] = "full" if full else "incremental"
    return result


def status(conn: psycopg.Connection) -> dict[str, Any]:
    """Queue depth, row count, expired windows and the latest refresh."""
    with _sql_errors("read customer 360 status"):
        return dict_rows(conn, query("customers/refresh_status"))[0]


# -- what the Customers pane reads --------------------------------------------------------------------


def console_search(
    conn: psycopg.Connection, q: str | None, limit: int, *, audited: bool, masked: bool
) -> list[dict[str, Any]]:
    """The Customers pane's search. `audited`: through search_customers(), which writes an audit row
    per call (in a read-write transaction of its own, as the pane's connection is read-only otherwise);
    else plain matching on crm_customers, or on customers_masked for a role that may not read PII."""
    if q and audited:
        if conn.autocommit:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ WRITE")
                return dict_rows(conn, "SELECT * FROM search_customers(%s, %s)", (q, limit))
        return dict_rows(conn, "SELECT * FROM search_customers(%s, %s)", (q, limit))
    sql_text = query("customers/search")
    if masked:
        sql_text = sql_text.replace("FROM crm_customers", "FROM customers_masked")
    return dict_rows(conn, sql_text, {"q": q, "like": f"%{q}%" if q else None, "limit": limit})


def profile(conn: psycopg.Connection, customer_id: int, via: str = "table") -> dict[str, Any] | None:
    """The CRM record as the role may see it: `table` reads crm_customers, `lookup` goes through the
    audited lookup_customer() (support: PII, one audit row per customer opened), `masked` reads
    customers_masked (masked in the database)."""
    if via == "lookup":
        with conn.transaction():
            conn.execute("SET TRANSACTION READ WRITE")  # lookup_customer writes its audit row
            rows = dict_rows(
                conn, "SELECT * FROM lookup_customer(%s, 'console: customer detail')", (customer_id,)
            )
        return rows[0] if rows else None
    sql_text = query("customers/profile")
    if via == "masked":
        sql_text = sql_text.replace("FROM crm_customers", "FROM customers_masked")
    rows = dict_rows(conn, sql_text, {"id": customer_id})
    return rows[0] if rows else None


DETAIL_PARTS = {"360": "row_360", "orders": "orders", "events": "events", "transactions": "transactions",
                "versions": "versions"}  # fmt: skip


def detail_rows(
    conn: psycopg.Connection, part: str, customer_id: int, limit: int = 10
) -> list[dict[str, Any]]:
    """One part of the customer detail: 360, orders, events, transactions or versions (the same reads
    as `customer show`)."""
    return dict_rows(conn, query(f"customers/{DETAIL_PARTS[part]}"), {"id": customer_id, "limit": limit})


def time_travel(conn: psycopg.Connection, customer_id: int, instant: str) -> list[dict[str, Any]]:
    """The customer as the lakehouse saw it at an instant (none: it did not exist then)."""
    return dict_rows(conn, query("customers/time_travel"), {"at": instant, "id": customer_id})

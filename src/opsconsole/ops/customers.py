"""Customer 360 actions: search, show one customer, refresh, status. The CLI and the console call these.

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
from psycopg.types.json import Jsonb

from opsconsole.db.queries import dict_rows, query
from opsconsole.errors import OpsError, database_errors
from opsconsole.output import to_jsonable

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
            "recent_orders": dict_rows(conn, query("customers/recent_orders"), params),
            "recent_events": dict_rows(conn, query("customers/recent_events"), params),
            "recent_transactions": dict_rows(conn, query("customers/recent_transactions"), params),
        }


def refresh(conn: psycopg.Connection, full: bool = False) -> dict[str, Any]:
    """Run the incremental (or full) customer-360 refresh and leave an audit row. Returns its counts."""
    fn = "refresh_customer_360_full" if full else "refresh_customer_360_incremental"
    action = "c360.refresh"
    arguments = Jsonb({"full": full})
    started = time.perf_counter()
    try:
        with _sql_errors("refresh customer 360"):
            result = dict_rows(conn, f"SELECT * FROM {fn}()")[0]
    except OpsError as exc:
        _audit(conn, action, arguments, None, "error", started, exc.message)
        raise
    result["mode"] = "full" if full else "incremental"
    _audit(conn, action, arguments, Jsonb(to_jsonable(result)), "ok", started, None)
    return result


def _audit(conn, action, arguments, result, status, started, reason) -> None:
    ms = round((time.perf_counter() - started) * 1000, 3)
    # A role that may refresh but not write the audit log still gets its refresh's outcome.
    with suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "SELECT record_audit(%s::text, %s::jsonb, %s::jsonb, %s::text, %s::numeric, %s::text)",
            (action, arguments, result, status, ms, reason),
        )


def status(conn: psycopg.Connection) -> dict[str, Any]:
    """Queue depth, row count, expired windows and the latest refresh."""
    with _sql_errors("read customer 360 status"):
        return dict_rows(conn, query("customers/refresh_status"))[0]

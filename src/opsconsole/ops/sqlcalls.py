"""The console's calls into the platform's SQL functions, kept in one place.

Each function takes a psycopg connection (autocommit), calls one SQL function by its contract
signature and returns plain dicts. When the area modules (ops/pipeline.py, ops/dq.py, ops/customers.py,
ops/catalog.py) exist, these delegate to them where the audit semantics agree (retry does); the
others still call SQL directly because the area functions audit differently (see the issue notes).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg

from opsconsole.db.queries import dict_rows
from opsconsole.ops.pipeline import retry

# -- pipeline -----------------------------------------------------------------------------------------


def due_count(conn: psycopg.Connection) -> int:
    """Rows a batch would claim now: pending, or failed and due for their retry."""
    row = conn.execute(
        "SELECT count(*) FROM financial_transactions_staging"
        " WHERE processing_status IN ('pending', 'failed') AND next_attempt_at <= now()"
    ).fetchone()
    return int(row[0]) if row else 0


def process_batch(conn: psycopg.Connection, batch_size: int, max_seconds: float = 300) -> dict[str, Any]:
    rows = dict_rows(
        conn,
        "SELECT * FROM process_financial_batch(%s, %s::interval)",
        (int(batch_size), dt.timedelta(seconds=max_seconds)),
    )
    return rows[0] if rows else {"processed_count": 0, "failed_count": 0}


def process_batch_quietly(
    conn: psycopg.Connection, batch_size: int, max_seconds: float = 300
) -> dict[str, Any]:
    """One batch through process_financial_batch_detail, which writes no audit row: for loops whose
    session is audited as a whole (continuous processing), so the log gets one row, not one per batch."""
    rows = dict_rows(
        conn,
        "SELECT processed_count, failed_count + dead_letter_count AS failed_count, avg_processing_ms,"
        " batch_duration FROM process_financial_batch_detail(%s, %s::interval)",
        (int(batch_size), dt.timedelta(seconds=max_seconds)),
    )
    return rows[0] if rows else {"processed_count": 0, "failed_count": 0}


def retry_scope_sql(
    staging_ids: list[int] | None,
    batch_id: str | None,
    error_code: str | None,
    everything: bool,
    include_dead_letter: bool,
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause that matches what retry_failed() re-queues for these arguments."""
    statuses = ["failed", "dead_letter"] if include_dead_letter else ["failed"]
    clauses = ["processing_status = ANY(%(statuses)s)"]
    params: dict[str, Any] = {"statuses": statuses}
    if staging_ids is not None:
        clauses.append("staging_id = ANY(%(ids)s)")
        params["ids"] = list(staging_ids)
    if batch_id is not None:
        clauses.append("batch_id = %(batch)s")
        params["batch"] = batch_id
    if error_code is not None:
        clauses.append("error_code = %(code)s")
        params["code"] = error_code
    if staging_ids is None and batch_id is None and error_code is None and not everything:
        clauses.append("false")
    return " AND ".join(clauses), params


def count_retryable(
    conn: psycopg.Connection,
    *,
    staging_ids: list[int] | None = None,
    batch_id: str | None = None,
    error_code: str | None = None,
    everything: bool = False,
    include_dead_letter: bool = False,
) -> int:
    where, params = retry_scope_sql(staging_ids, batch_id, error_code, everything, include_dead_letter)
    row = conn.execute(
        f"SELECT count(*) FROM financial_transactions_staging WHERE {where}", params
    ).fetchone()
    return int(row[0]) if row else 0


def retry_failed(
    conn: psycopg.Connection,
    *,
    staging_ids: list[int] | None = None,
    batch_id: str | None = None,
    error_code: str | None = None,
    everything: bool = False,
    include_dead_letter: bool = False,
    reason: str | None = None,
) -> dict[str, Any]:
    """The console's retry goes through the same action as `opsconsole retry` (ops.pipeline.retry)."""
    requeued = retry(
        conn,
        staging_ids=staging_ids,
        batch_id=batch_id,
        error_code=error_code,
        all_rows=everything,
        include_dead_letter=include_dead_letter,
        reason=reason,
    )
    return {"requeued": requeued}


# -- data quality -------------------------------------------------------------------------------------


def active_rules(conn: psycopg.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT rule_name FROM dq_rule_definitions WHERE is_active ORDER BY rule_name"
        ).fetchall()
    ]


def run_dq_checks(conn: psycopg.Connection, rule_name: str | None = None) -> list[dict[str, Any]]:
    if rule_name is None:
        return dict_rows(conn, "SELECT * FROM execute_data_quality_checks()")
    return dict_rows(
        conn,
        "SELECT * FROM execute_data_quality_checks(p_table_name => NULL::text, p_rule_name => %s::text)",
        (rule_name,),
    )


def last_dq_run_ms(conn: psycopg.Connection) -> float | None:
    """How long the last complete DQ run took (dq_runs, when the DQ migration keeps it)."""
    if conn.execute("SELECT to_regclass('dq_runs') IS NOT NULL").fetchone()[0] is not True:
        return None
    row = conn.execute(
        "SELECT duration_ms FROM dq_runs WHERE rule_filter IS NULL AND table_filter IS NULL"
        " AND duration_ms IS NOT NULL ORDER BY started_at DESC LIMIT 1"
    ).fetchone()
    return float(row[0]) if row else None


# -- customer 360 -------------------------------------------------------------------------------------


def refresh_c360(conn: psycopg.Connection) -> dict[str, Any]:
    rows = dict_rows(conn, "SELECT * FROM refresh_customer_360_incremental()")
    return rows[0] if rows else {"rows_processed": 0}


# -- catalog ------------------------------------------------------------------------------------------

CATALOG_SNAPSHOT_SQL = """
SELECT schema_name, table_name, column_name, data_type, is_nullable, data_classification
FROM data_catalog WHERE database_name = current_database()
"""


def catalog_snapshot(conn: psycopg.Connection) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    return {(r[0], r[1], r[2]): (r[3], r[4], r[5]) for r in conn.execute(CATALOG_SNAPSHOT_SQL).fetchall()}


def diff_catalog(
    before: dict[tuple[str, str, str], tuple[Any, ...]], after: dict[tuple[str, str, str], tuple[Any, ...]]
) -> dict[str, list[str]]:
    def name(key: tuple[str, str, str]) -> str:
        return ".".join(key)

    return {
        "added": sorted(name(k) for k in after.keys() - before.keys()),
        "removed": sorted(name(k) for k in before.keys() - after.keys()),
        "changed": sorted(name(k) for k in after.keys() & before.keys() if after[k] != before[k]),
    }


def refresh_catalog(conn: psycopg.Connection) -> dict[str, Any]:
    before = catalog_snapshot(conn)
    row = conn.execute("SELECT refresh_data_catalog()").fetchone()
    after = catalog_snapshot(conn)
    diff = diff_catalog(before, after)
    return {
        "refreshed": row[0] if row else None,
        "columns": len(after),
        **{k: len(v) for k, v in diff.items()},
        "diff": diff,
    }

"""Staging arrivals: every loader of financial_transactions_staging counts what it staged.

The maintained staging counts and the per-minute rollups (what the Monitor, the Backlog pane,
health and reconcile read) move by one call, financial_staging_arrived (sql/definitions/
30_pipeline.sql), made in the transaction that staged the rows; it also wakes the workers (NOTIFY
opsconsole_staging). It is a call rather than a trigger: the trigger's transition table cost a
quarter of COPY's time, and Citus cannot run it for a distributed staging table. Two ways in:

* ``staged``: after a COPY or INSERT of input columns only (the product's loaders): every row is
  pending and ingested now, so the count is all the function needs.
* ``insert_counted``: an INSERT that sets ingestion times or states itself (tools, tests): its own
  rows are counted by minute and state, in the same statement (``select_counted`` after a COPY that
  does).

A transaction without an account is never staged (0031: staging rows are placed by account, on Citus
by shard): ``load`` COPYs a frame's rows with an account into staging and rejects the others into
financial_staging_rejects, as they came, with who loaded them and why (``rejects`` shapes them for a
loader with its own COPY path, the seed).
"""

from __future__ import annotations

import json

import polars as pl
from psycopg import sql
from psycopg.rows import tuple_row

from opsconsole.pipeline.copyio import STAGING_COLUMNS, copy_frames

TABLE = "financial_transactions_staging"
REJECTS = "financial_staging_rejects"
REJECT_COLUMNS = (*STAGING_COLUMNS, "source", "reason")
NO_ACCOUNT = "account_id is missing: staging rows are placed by account"
ARRIVED = "SELECT financial_staging_arrived(%s::jsonb, %s::jsonb)"
# the one test of a staging frame's row that cannot be staged
WITHOUT_ACCOUNT = pl.col("account_id").is_null()

# The staged rows of one INSERT by ingestion minute and state: the shape financial_staging_arrived
# takes (the same keys as the rollups' deltas).
_COUNTS = """
    SELECT n.ingestion_minute AS minute_bucket,
           count(*) AS total_delta,
           count(*) FILTER (WHERE n.processing_status = 'pending') AS pending_delta,
           count(*) FILTER (WHERE n.processing_status = 'processed') AS processed_delta,
           count(*) FILTER (WHERE n.processing_status = 'failed') AS failed_delta,
           count(*) FILTER (WHERE n.processing_status = 'dead_letter') AS dead_letter_delta,
           count(*) FILTER (WHERE n.processing_status = 'duplicate') AS duplicate_delta
    FROM staged n
    GROUP BY 1
"""


def staged(db, rows: int, **note) -> None:
    """Count ``rows`` pending rows this transaction staged with the default ingestion time, and
    wake the workers; ``note`` goes into the notification (source, batch or file id). ``db`` is a
    connection or a cursor."""
    if rows > 0:
        counts = [{"total_delta": rows, "pending_delta": rows}]
        db.execute(ARRIVED, (json.dumps(counts), json.dumps(note)))


def rejects(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """The rows of a staging frame that cannot be staged (no account), shaped for
    financial_staging_rejects."""
    return (
        frame.filter(WITHOUT_ACCOUNT)
        .select(STAGING_COLUMNS)
        .with_columns(source=pl.lit(source), reason=pl.lit(NO_ACCOUNT))
    )


def stageable(frame: pl.DataFrame) -> pl.DataFrame:
    """The rows of a staging frame that have an account."""
    return frame.filter(~WITHOUT_ACCOUNT)


def load(cur, frame: pl.DataFrame, source: str, **note) -> tuple[int, int]:
    """One loader's batch of input columns, in the caller's transaction: the rows with an account
    are COPYed into staging and counted, the others rejected into financial_staging_rejects.
    Returns (staged, rejected)."""
    keep, aside = stageable(frame), rejects(frame, source)
    if keep.height:
        copy_frames(cur, TABLE, STAGING_COLUMNS, [keep], prefetch=False)
        staged(cur, keep.height, source=source, **note)
    if aside.height:
        copy_frames(cur, REJECTS, REJECT_COLUMNS, [aside], prefetch=False)
    return keep.height, aside.height


def insert_counted(db, insert_sql: str, params=None, **note) -> list[int]:
    """Run ``insert_sql`` (an ``INSERT INTO financial_transactions_staging ...`` without RETURNING,
    with the caller's placeholders) and count its rows by their own ingestion minute and state, in
    the same statement. Returns the staging ids, in order. ``db`` is a connection or a cursor."""
    returning = f"{insert_sql} RETURNING staging_id, ingestion_minute, processing_status"
    ids, _ = _counted(db, returning, params, note, ids=True)
    return list(ids)


def select_counted(db, where_sql: str, params=None, **note) -> int:
    """Count staging rows already written by a COPY that set their ingestion times or states (the
    benchmarks' loads): those matching ``where_sql``, a condition on financial_transactions_staging
    that this transaction's rows alone meet. Returns how many were counted."""
    select = f"SELECT staging_id, ingestion_minute, processing_status FROM {TABLE} WHERE {where_sql}"
    _, counted = _counted(db, select, params, note, ids=False)
    return int(counted)


def _counted(db, rows_sql: str, params, note: dict, *, ids: bool) -> tuple:
    conn = getattr(db, "connection", db)
    with conn.cursor(row_factory=tuple_row) as cur:
        literal = sql.Literal(json.dumps(note)).as_string(cur)
        if params is not None:
            literal = literal.replace("%", "%%")
        statement = (
            f"WITH staged AS ({rows_sql}) "
            + (
                "SELECT ARRAY(SELECT staging_id FROM staged ORDER BY staging_id), "
                if ids
                else "SELECT NULL, "
            )
            + f"(SELECT financial_staging_arrived(coalesce(jsonb_agg(to_jsonb(d)), '[]'), {literal}::jsonb) "
            f"FROM ({_COUNTS}) d)"
        )
        return cur.execute(statement, params).fetchone()

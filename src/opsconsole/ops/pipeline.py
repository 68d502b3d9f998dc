"""Pipeline actions and reads: process a batch, re-queue failed rows, purge, reconcile, and what the
Monitor and Backlog panes show.

Each function takes a psycopg connection (autocommit, as opened by opsconsole.db.connect), calls the
pipeline's SQL functions (sql/definitions/30_pipeline.sql) or a named query under sql/queries/pipeline/,
and returns plain data. The CLI, the console and the worker all come through here: each action has this
one implementation and one audit action name (PROCESS_BATCH, RETRY).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from opsconsole.db.queries import dict_rows, query
from opsconsole.errors import OpsError, database_errors

VALID_STATES = ("pending", "processed", "failed", "dead_letter", "duplicate", "parked")

# The audit action names (the SQL functions' names, as the SQL side audits them).
PROCESS_BATCH = "process_financial_batch"
RETRY = "retry_failed"
PARK = "park_dead_letters"
UNPARK = "unpark_dead_letters"
PAUSE = "pause_processing"
RESUME = "resume_processing"


class PipelineProblem(OpsError):
    """A pipeline action was asked for something it cannot do (bad selector, unknown code, ...)."""

    exit_code = 1


@dataclass(frozen=True)
class BatchResult:
    processed: int
    failed: int
    dead_letter: int
    duplicate: int
    claimed: int
    chunks: int
    avg_processing_ms: float
    duration_ms: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.claimed} rows in {self.duration_ms:.0f} ms: processed {self.processed}, "
            f"failed {self.failed}, dead_letter {self.dead_letter}, duplicate {self.duplicate}"
        )


def _ms(value: dt.timedelta | None) -> float:
    return round(value.total_seconds() * 1000, 1) if value is not None else 0.0


def process_batch(
    conn: psycopg.Connection,
    batch_size: int = 10000,
    max_time: dt.timedelta = dt.timedelta(minutes=5),
    worker: str | None = None,
) -> BatchResult:
    """Claim and process up to batch_size due staging rows in one transaction (see
    process_financial_batch_detail, which writes the audit row when it claimed any)."""
    if batch_size < 1:
        raise PipelineProblem("The batch size must be at least 1.")
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT * FROM process_financial_batch_detail(%s, %s, %s)", (batch_size, max_time, worker)
        ).fetchone()
        assert row is not None
        result = BatchResult(
            processed=row["processed_count"],
            failed=row["failed_count"],
            dead_letter=row["dead_letter_count"],
            duplicate=row["duplicate_count"],
            claimed=row["claimed_count"],
            chunks=row["chunk_count"],
            avg_processing_ms=float(row["avg_processing_ms"] or 0),
            duration_ms=_ms(row["batch_duration"]),
        )
    return result


def retry(
    conn: psycopg.Connection,
    *,
    staging_ids: Sequence[int] | None = None,
    batch_id: str | None = None,
    error_code: str | None = None,
    all_rows: bool = False,
    include_dead_letter: bool = False,
    reason: str | None = None,
    filter_text: str | None = None,
) -> int:
    """Re-queue failed (and with include_dead_letter, dead-lettered) rows; returns how many.

    Selectors are combined with AND; with none, all_rows must be set. filter_text is the Backlog's
    filter (the rows it shows), passed as a value. The SQL function writes the audit row (who, when,
    the selectors and the reason)."""
    ids = list(staging_ids) if staging_ids else None
    filter_text = _filter(filter_text)
    if ids is None and batch_id is None and error_code is None and filter_text is None and not all_rows:
        raise PipelineProblem("Say which rows to retry: --ids, --batch, --error-code, --filter, or --all.")
    if error_code is not None:
        known = conn.execute(
            "SELECT 1 FROM financial_error_codes WHERE error_code = %s", (error_code,)
        ).fetchone()
        if not known:
            codes = [r[0] for r in conn.execute("SELECT error_code FROM financial_error_codes ORDER BY 1")]
            raise PipelineProblem(f"Unknown error code {error_code!r}; known codes: {', '.join(codes)}.")
    row = conn.execute(
        "SELECT retry_failed(%s, %s, %s, %s, %s, %s, %s)",
        (ids, batch_id, error_code, all_rows, include_dead_letter, reason, filter_text),
    ).fetchone()
    assert row is not None
    return int(row[0])


def retry_scope_count(
    conn: psycopg.Connection,
    *,
    staging_ids: Sequence[int] | None = None,
    batch_id: str | None = None,
    error_code: str | None = None,
    all_rows: bool = False,
    include_dead_letter: bool = False,
    filter_text: str | None = None,
) -> int:
    """How many rows retry() would re-queue for these selectors (the confirmation's blast radius):
    retry_scope_count(), which counts the rows of retry_scope(), the scope retry_failed() re-queues."""
    ids = list(staging_ids) if staging_ids else None
    row = conn.execute(
        "SELECT retry_scope_count(%s, %s, %s, %s, %s, %s)",
        (ids, batch_id, error_code, all_rows, include_dead_letter, _filter(filter_text)),
    ).fetchone()
    return int(row[0]) if row else 0


def _filter(text: str | None) -> str | None:
    """The Backlog filter as the SQL side takes it: None when empty (no filter)."""
    return text.strip() if text and text.strip() else None


def _backlog_selectors(staging_ids: Sequence[int] | None, filter_text: str | None, what: str) -> tuple:
    ids = list(staging_ids) if staging_ids else None
    text = _filter(filter_text)
    if ids is None and text is None:
        raise PipelineProblem(f"Say which rows to {what}: --ids or --filter.")
    return ids, text


def park(
    conn: psycopg.Connection,
    *,
    staging_ids: Sequence[int] | None = None,
    filter_text: str | None = None,
    reason: str | None = None,
) -> int:
    """Park dead letters (no worker claims a parked row) by ids and/or the Backlog filter; returns how
    many. park_dead_letters() writes the audit row."""
    ids, text = _backlog_selectors(staging_ids, filter_text, "park")
    row = conn.execute("SELECT park_dead_letters(%s, %s, %s)", (ids, text, reason)).fetchone()
    return int(row[0]) if row else 0


def unpark(
    conn: psycopg.Connection,
    *,
    staging_ids: Sequence[int] | None = None,
    filter_text: str | None = None,
    reason: str | None = None,
) -> int:
    """Bring parked rows back to dead_letter (a retry can then take them); returns how many.
    unpark_dead_letters() writes the audit row."""
    ids, text = _backlog_selectors(staging_ids, filter_text, "bring back")
    row = conn.execute("SELECT unpark_dead_letters(%s, %s, %s)", (ids, text, reason)).fetchone()
    return int(row[0]) if row else 0


def move_scope_count(
    conn: psycopg.Connection,
    from_status: str,
    *,
    staging_ids: Sequence[int] | None = None,
    filter_text: str | None = None,
) -> int:
    """How many rows park() (from_status dead_letter) or unpark() (parked) would move: the count of
    backlog_move_scope(), the scope those actions move."""
    ids, text = list(staging_ids) if staging_ids else None, _filter(filter_text)
    row = conn.execute(
        "SELECT count(*) FROM backlog_move_scope(%s, %s, %s)", (from_status, ids, text)
    ).fetchone()
    return int(row[0]) if row else 0


def what_if(
    conn: psycopg.Connection,
    *,
    staging_ids: Sequence[int] | None = None,
    filter_text: str | None = None,
) -> list[dict[str, Any]]:
    """The pipeline's validators (financial_validate, the chunk's one definition) run now on the
    failed/dead-lettered/parked rows named, in a READ ONLY transaction that changes nothing: one row
    per error code they would get, error_code None for the rows that would pass."""
    ids, text = _backlog_selectors(staging_ids, filter_text, "check")
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        return dict_rows(conn, "SELECT error_code, rows FROM backlog_what_if(%s, %s)", (ids, text))


def pause(conn: psycopg.Connection, *, reason: str | None = None) -> bool:
    """Pause processing for every worker (each finishes its chunk in flight); pause_processing()
    writes the audit row. Returns whether processing was paused already."""
    row = conn.execute("SELECT pause_processing(%s)", (reason,)).fetchone()
    return bool(row[0]) if row else False


def resume(conn: psycopg.Connection, *, reason: str | None = None) -> bool:
    """Resume processing for every worker; resume_processing() writes the audit row. Returns whether
    processing was paused."""
    row = conn.execute("SELECT resume_processing(%s)", (reason,)).fetchone()
    return bool(row[0]) if row else False


def fleet_state(conn: psycopg.Connection) -> dict[str, Any]:
    """Whether the fleet is paused, since when, by whom and why (a database without the switch:
    never paused)."""
    try:
        rows = dict_rows(conn, query("pipeline/fleet_state"))
    except psycopg.errors.UndefinedTable:  # a database before the switch (0019): never paused
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        rows = []
    return rows[0] if rows else {"paused": False, "changed_at": None, "changed_by": None, "reason": None}


def fleet_paused(conn: psycopg.Connection) -> bool:
    """The check every worker makes before it claims."""
    return bool(fleet_state(conn)["paused"])


def due_count(conn: psycopg.Connection) -> int:
    """Rows a batch would claim now: pending, or failed and due for their retry."""
    row = conn.execute(
        "SELECT count(*) FROM financial_transactions_staging"
        " WHERE processing_status IN ('pending', 'failed') AND next_attempt_at <= now()"
    ).fetchone()
    return int(row[0]) if row else 0


def purge(
    conn: psycopg.Connection, older_than: str | None = None, limit: int = 100_000, attempts: int | None = None
) -> dict[str, Any]:
    """Staging retention (purge_financial_staging, which audits itself): drop the day partitions older
    than the retention, keeping their owed rows, and trim old rollups. Returns the counts and which
    partitions were dropped and created (compared before and after, in the same transaction).

    The purge waits at most lock_timeout (1 s) for its locks and is retried with backoff
    (opsconsole.db.locks), so loaders and claims never queue behind it for longer; two purges at
    once are serialised by an advisory lock inside the function. Raises LockBusy when it gives up."""
    from opsconsole.db.locks import with_lock_retry

    if limit < 1:
        raise PipelineProblem("The limit must be at least 1.")
    listing = "SELECT partition_name::text FROM financial_staging_partitions()"

    def step(c: psycopg.Connection) -> tuple[set[str], Any, set[str]]:
        # the purge's own lock, taken before the listing: a purge that waited for another one lists
        # the partitions as that one left them, and reports only what it dropped itself
        c.execute("SELECT pg_advisory_xact_lock('financial_transactions_staging'::regclass::oid::bigint)")
        before = {r[0] for r in c.execute(listing)}
        row = c.execute(
            "SELECT staging_rows_deleted, rollup_rows_deleted FROM purge_financial_staging(%s::interval, %s)",
            (older_than, limit),
        ).fetchone()
        return before, row, {r[0] for r in c.execute(listing)}

    with database_errors("purge staging", fallback=PipelineProblem):
        before, row, after = with_lock_retry(
            conn, "the staging purge", step, **({"attempts": attempts} if attempts else {})
        )
    assert row is not None
    return {
        "staging_rows_deleted": row[0],
        "rollup_rows_deleted": row[1],
        "partitions_dropped": sorted(before - after),
        "partitions_created": sorted(after - before),
    }


def reconcile(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """One row per consistency check with its mismatch count and sample ids."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM reconcile_financial_pipeline()").fetchall()


def recount(conn: psycopg.Connection) -> dict[str, int]:
    """Correct the maintained staging counts of the open states by what a count of staging finds
    (recount_financial_staging, an admin's function that audits itself): the fix for reconcile's
    staging_counts_drift. Returns the corrections applied, all 0 when the counts were right."""
    with (
        database_errors("recount the staging counts", fallback=PipelineProblem),
        conn.cursor(row_factory=dict_row) as cur,
    ):
        row = cur.execute("SELECT * FROM recount_financial_staging()").fetchone()
    return {k: int(v) for k, v in row.items()}


def rebuild_fraud_minutes(conn: psycopg.Connection) -> int:
    """Rebuild the fraud window's per-minute sums from the processed rows, every account's
    (financial_fraud_minutes_rebuild, an admin's function that audits itself): the fix for
    reconcile's fraud_minutes_differ. Workers need not stop. Returns the minutes written."""
    with database_errors("rebuild the fraud window's minutes", fallback=PipelineProblem):
        (n,) = conn.execute("SELECT financial_fraud_minutes_rebuild()").fetchone()
    return int(n)


def backlog(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Rows waiting, retrying or dead-lettered, by state and error code."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM financial_pipeline_backlog ORDER BY processing_status, error_code NULLS FIRST"
        ).fetchall()


def rejected_before_staging(conn: psycopg.Connection, hours: int = 24) -> int | None:
    """Transactions rejected before staging (no account: financial_staging_rejects, 0031) in the last
    ``hours``; None when this role may not read them."""
    try:
        with conn.transaction():
            (row,) = dict_rows(conn, query("pipeline/rejected_before_staging"), {"hours": hours})
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable):
        return None
    return int(row["n"])


def backlog_summary(conn: psycopg.Connection) -> dict[str, Any]:
    """Totals for a header line: pending, due now, failed, dead letters, oldest due time."""
    rows = backlog(conn)
    summary: dict[str, Any] = {
        "pending": 0,
        "failed": 0,
        "dead_letter": 0,
        "due_now": 0,
        "oldest_due_at": None,
    }
    for r in rows:
        summary[r["processing_status"]] += r["row_count"]
        summary["due_now"] += r["due_now"]
        if r["oldest_due_at"] is not None and (
            summary["oldest_due_at"] is None or r["oldest_due_at"] < summary["oldest_due_at"]
        ):
            summary["oldest_due_at"] = r["oldest_due_at"]
    return summary


def monitor(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """The last hour by ingestion minute (financial_processing_monitor)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM financial_processing_monitor").fetchall()


def wait_until_idle(conn: psycopg.Connection, timeout_s: float = 30.0, poll_s: float = 0.05) -> bool:
    """True once no staging row is due (pending or failed and due now); for tests and scripts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if due_count(conn) == 0:
            return True
        time.sleep(poll_s)
    return False


# -- what the Monitor and Backlog panes read ---------------------------------------------------------


# Reads over the failed and dead-lettered rows themselves (by code, the list, next due, retries) cost in
# proportion to how many there are (100k failed rows: ~100 ms of server CPU a refresh). They
# change only when a staging row changes state, and every such change moves the maintained counts
# (pipeline/staging_version), so a console re-reads them only when that fingerprint moved, or after
# FAILED_REREAD_S anyway. The cache is per database and per read, shared by the consoles of a process.
FAILED_REREAD_S = 120.0
_failed_cache: dict[tuple[Any, ...], tuple[float, tuple[Any, ...], Any]] = {}
_failed_lock = threading.Lock()


def _failed_set(conn: psycopg.Connection, key: tuple[Any, ...], read: Any) -> Any:
    info = conn.info
    full_key = (info.host, info.port, info.dbname, *key)
    version = tuple(dict_rows(conn, query("pipeline/staging_version"))[0].values())
    now = time.monotonic()
    with _failed_lock:
        hit = _failed_cache.get(full_key)
    if hit is not None and hit[1] == version and now - hit[0] < FAILED_REREAD_S:
        return hit[2]
    data = read()
    with _failed_lock:
        if len(_failed_cache) > 64:
            _failed_cache.clear()
        _failed_cache[full_key] = (now, version, data)
    return data


def open_rows(conn: psycopg.Connection, *, failed_detail: bool = False) -> dict[str, dict[str, Any]]:
    """The rows still owed work, by status (pending, failed, dead_letter): rows and oldest_ingested
    from the maintained counts at any staging size; with failed_detail also next_due and retries, read
    from the failed and dead-lettered rows themselves (the Backlog pane, which lists them anyway)."""
    found = {r["status"]: r for r in dict_rows(conn, query("pipeline/staging_open"))}
    if failed_detail:
        detail = _failed_set(conn, ("detail",), lambda: dict_rows(conn, query("pipeline/staging_failed")))
        for r in detail:
            found.setdefault(r["status"], {"status": r["status"], "rows": 0, "oldest_ingested": None})
            found[r["status"]].update(next_due=r["next_due"], retries=r["retries"])
    return found


def monitor_minutes(conn: psycopg.Connection, until: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The per-minute rollup of the hour up to `until` (None: now), newest first."""
    return dict_rows(conn, query("pipeline/monitor_minutes"), {"until": until})


def monitor_span(conn: psycopg.Connection) -> dict[str, Any]:
    """The oldest and newest rollup minutes (how far back the time cursor goes) and the database's now."""
    return dict_rows(conn, query("pipeline/monitor_span"))[0]


def worker_sessions(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Each connected pipeline worker: who, since when, busy or idle, its last minute and last chunk."""
    return dict_rows(conn, query("pipeline/worker_sessions"))


@dataclass(frozen=True)
class DrainEstimate:
    """How long the rows waiting for their first attempt take at the pipeline's current pace (rows
    claimed minus rows arriving, per minute, since the start of the previous minute)."""

    waiting: int
    claimed_per_min: float
    arrived_per_min: float

    @property
    def net_per_min(self) -> float:
        return self.claimed_per_min - self.arrived_per_min

    @property
    def seconds_left(self) -> float | None:
        """0 when nothing waits; None when the backlog does not shrink at this pace."""
        if self.waiting <= 0:
            return 0.0
        if self.net_per_min <= 0:
            return None
        return self.waiting / self.net_per_min * 60


def drain_estimate(conn: psycopg.Connection, waiting: int) -> DrainEstimate:
    """The pace from the batches' audit rows (claimed) and the rollups (arrived)."""
    row = dict_rows(conn, query("pipeline/drain_rate"))[0]
    minutes = max(float(row["seconds"]), 1.0) / 60
    return DrainEstimate(waiting, int(row["claimed"]) / minutes, int(row["arrived"]) / minutes)


def failed_by_code(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return _failed_set(conn, ("codes",), lambda: dict_rows(conn, query("pipeline/backlog_codes")))


def failed_rows(conn: psycopg.Connection, text: str | None, limit: int) -> list[dict[str, Any]]:
    """Failed and dead-lettered rows, narrowed to those matching `text` when given."""
    params = {"filter": text, "like": f"%{text}%" if text else None, "limit": limit}
    return _failed_set(
        conn, ("rows", text, limit), lambda: dict_rows(conn, query("pipeline/backlog_rows"), params)
    )


def staging_detail(
    conn: psycopg.Connection,
    staging_id: int,
    transaction_id: int | None,
    batch_id: str | None,
    error_code: str | None,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]], list[dict[str, Any]]]:
    """One staging row in full, the other attempts of its transaction, and the operator actions that
    named it, its batch or its error code."""
    params = {
        "id": staging_id,
        "transaction_id": transaction_id,
        "batch_id": batch_id,
        "error_code": error_code,
    }
    full = dict_rows(conn, query("pipeline/staging_row"), params)
    attempts = dict_rows(conn, query("pipeline/staging_attempts"), params)
    history = dict_rows(conn, query("pipeline/staging_history"), params)
    return (full[0]["row"] if full else None), attempts, history

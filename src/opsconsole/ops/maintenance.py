"""`opsconsole maintain`: the periodic work of a platform that runs for months unattended.

In small steps, each its own transaction under a short lock_timeout with bounded retries
(opsconsole.db.locks), so that loaders and claims never queue behind maintenance for more than about
a second:
1. partitions ahead for every time-partitioned table (found in pg_partitioned_table: three months
   for the monthly tables, erp_orders and financial_transactions_processed; a week of days for
   staging), and rows moved out of DEFAULT into their partition in batches of `batch_rows`
   (ensure_partitions_step, one batch per transaction);
2. retention: purge_financial_staging (drops old staging days, keeps owed rows, trims rollups);
3. statistics: ANALYZE of every partition, DEFAULT and parent that changed.
Concurrent runs are serialised by a session advisory lock; workers run it about daily under the same
lock, so exactly one of N does it. Each step audits itself in SQL (maintain.partitions, the purge,
maintain.analyze) and maintenance_run_report() writes the run's 'maintain' row from them. Admin role.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg

from opsconsole.db.locks import LockBusy, with_lock_retry
from opsconsole.errors import OpsError, database_errors

RUN_LOCK = (1869573998, 1)  # pg_advisory_lock(classid, objid) held for a whole run ('ops' 'maintain')
MAX_STEPS_PER_TABLE = 10_000  # a bound on one run's work per table (10k steps of 10k rows = 100M rows)
DUE_AFTER = "20 hours"  # workers start a run when the last successful one is older than this


class MaintenanceBusy(OpsError):
    """Another maintenance run holds the lock."""

    exit_code = 4


def maintain(
    conn: psycopg.Connection,
    *,
    batch_rows: int = 10_000,
    older_than: str | None = None,
    wait_s: float = 30.0,
    say: Callable[[str], None] | None = None,
    lock_attempts: int | None = None,
    at: Any = None,
) -> dict[str, Any]:
    """One maintenance run on an autocommit connection; returns what it did (see module doc).

    Waits up to `wait_s` for another run to finish (then does whatever is still left to do, usually
    nothing); raises MaintenanceBusy if it does not. A step that cannot get its lock raises LockBusy
    after its retries: the steps before it stay done, that step changed nothing. `at` (a timestamptz)
    is the clock the partition horizons are measured from (default: now; the soak test drives it)."""
    if batch_rows < 1:
        raise OpsError("The batch size must be at least 1.")
    say = say or (lambda line: None)
    started = time.monotonic()
    if not _take_run_lock(conn, wait_s):
        raise MaintenanceBusy(
            "Another maintenance run (`opsconsole maintain` or a worker's daily run) holds the "
            f"maintenance lock and did not finish within {wait_s:.0f} s; nothing was changed."
        )
    run_started_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # the steps' audit rows follow
    retry_kw = {"attempts": lock_attempts} if lock_attempts else {}
    report: dict[str, Any] = {
        "partitions_created": [],
        "partitions_attached": [],
        "rows_moved_from_default": 0,
        "steps": 0,
        "purge": None,
        "analyzed": [],
        "default_rows": {},
        "seconds": 0.0,
    }
    try:
        with database_errors("run maintenance", objects="the maintenance functions"):
            tables = conn.execute(
                "SELECT parent::text, default_partition::text FROM maintenance_partitioned_tables()"
            ).fetchall()
            touched: dict[str, set[str]] = {}
            for parent, default in tables:
                for _ in range(MAX_STEPS_PER_TABLE):
                    row = with_lock_retry(
                        conn,
                        f"partition maintenance of {parent}",
                        lambda c, p=parent: c.execute(
                            "SELECT action, partition_name, rows_moved "
                            "FROM ensure_partitions_step(%s, %s, coalesce(%s::timestamptz, now()))",
                            (p, batch_rows, at),
                        ).fetchone(),
                        **retry_kw,
                    )
                    if row is None:
                        break
                    action, partition, moved = row
                    report["steps"] += 1
                    report["rows_moved_from_default"] += moved
                    changed = touched.setdefault(parent, set())
                    changed.add(partition)
                    if moved and default:
                        changed.add(default)
                    if action == "created":
                        report["partitions_created"].append(partition)
                    elif action == "attached":
                        report["partitions_attached"].append(partition)
                        say(f"{partition}: attached after moving its rows out of DEFAULT")
            from opsconsole.ops.pipeline import purge

            report["purge"] = purge(conn, older_than, **retry_kw)
            if report["purge"]["staging_rows_deleted"] or report["purge"]["partitions_dropped"]:
                touched.setdefault("financial_transactions_staging", set())
            for parent, changed in touched.items():
                for rel in [*sorted(changed), parent]:
                    if conn.execute("SELECT to_regclass(%s)", (rel,)).fetchone()[0] is None:
                        continue  # dropped by the purge meanwhile
                    with_lock_retry(
                        conn,
                        f"ANALYZE {rel}",
                        lambda c, r=rel: c.execute("SELECT maintenance_analyze(ARRAY[%s::regclass])", (r,)),
                        **retry_kw,
                    )
                    report["analyzed"].append(rel)
            for parent, default in tables:
                if default:
                    n = conn.execute(f"SELECT count(*) FROM {_quoted(conn, default)}").fetchone()[0]
                    report["default_rows"][parent] = n
            report["seconds"] = round(time.monotonic() - started, 3)
            # each step audited itself in SQL; the run's 'maintain' row sums them up there too
            conn.execute(
                "SELECT maintenance_run_report(%s, %s::integer, %s::text)",
                (run_started_at, batch_rows, older_than),
            )
    except LockBusy as exc:
        _audit_failure(conn, batch_rows, older_than, exc.message, started)
        raise
    finally:
        _release_run_lock(conn)
    return report


def run_if_due(
    conn: psycopg.Connection, *, say: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    """For workers: run maintenance when the last successful run is older than DUE_AFTER and no other
    session holds the maintenance lock, so exactly one of N workers does it; else None at once.
    Whether it is due is decided under the lock (a worker that lost the race sees the winner's run)."""
    if not _take_run_lock(conn, 0):
        return None  # another worker (or an operator) is on it
    try:
        due = conn.execute(
            "SELECT coalesce(max(occurred_at), '-infinity') < now() - %s::interval FROM ops_audit_log "
            "WHERE action = 'maintain' AND status = 'ok'",
            (DUE_AFTER,),
        ).fetchone()[0]
        return maintain(conn, wait_s=0, say=say) if due else None  # (the lock is re-entrant)
    finally:
        _release_run_lock(conn)


def _take_run_lock(conn: psycopg.Connection, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", RUN_LOCK).fetchone()[0]:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _release_run_lock(conn: psycopg.Connection) -> None:
    if not conn.closed and not conn.broken:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", RUN_LOCK)


def _audit_failure(conn, batch_rows: int, older_than: str | None, why: str, started: float) -> None:
    with contextlib.suppress(psycopg.Error):  # the sentence still reaches the operator
        conn.execute(
            "SELECT record_action_failure('maintain', %s::jsonb, 'error', %s::numeric, %s)",
            (
                json.dumps({"batch_rows": batch_rows, "older_than": older_than}, default=str),
                round((time.monotonic() - started) * 1000, 3),
                why,
            ),
        )


def _quoted(conn: psycopg.Connection, regclass_text: str) -> str:
    """A relation name from regclass::text output, safe to splice (it is already quoted as needed)."""
    return conn.execute("SELECT %s::regclass::text", (regclass_text,)).fetchone()[0]

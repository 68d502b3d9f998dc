"""Running an operator action: time it, tell cancellation from failure, and leave an audit row.

`run_audited` wraps any action body (a function of a psycopg connection returning a dict). Whatever
happens (success, an error, a cancel from pg_cancel_backend or the console's cancel key) one row goes
to ops_audit_log on a connection that still works: a success by the action function itself (in SQL, in
its own transaction), a failure or cancel here through record_action_failure(). The SQL calls themselves
are the area modules' actions (ops/pipeline.py, ops/dq.py, ...), the same ones the CLI calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from opsconsole.errors import first_line
from opsconsole.output import to_jsonable

# Group roles may not write an audit row that claims success (record_audit is the owner's); they may
# record that their own attempt failed. An 'ok' row from here is the owner's (tools, tests).
AUDIT_SQL = "SELECT record_audit(%s::text, %s::jsonb, %s::jsonb, %s::text, %s::numeric, %s::text)"
FAILURE_SQL = "SELECT record_action_failure(%s::text, %s::jsonb, %s::text, %s::numeric, %s::text, %s::text)"


@dataclass
class ActionOutcome:
    action: str
    status: str  # ok | error | cancelled
    result: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    message: str = ""
    audit_id: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def describe_error(exc: BaseException) -> str:
    """errors.first_line with the server's hint, when it gave one: what an audit row, a job's line or
    a pane's border says about a failure."""
    text = first_line(exc)
    hint = exc.diag.message_hint if isinstance(exc, psycopg.Error) else None
    return f"{text} ({hint})" if hint else text


def is_cancel(exc: BaseException | None) -> bool:
    """A statement cancelled by the operator (psycopg cancel or pg_cancel_backend), also when an ops
    function turned it into an OpsError sentence."""
    while exc is not None:
        if isinstance(exc, pg_errors.QueryCanceled) and "statement timeout" not in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def write_audit(
    conn: psycopg.Connection,
    action: str,
    arguments: dict[str, Any],
    result: dict[str, Any] | None,
    status: str,
    duration_ms: float | None,
    reason: str | None = None,
) -> int | None:
    ms = round(duration_ms, 3) if duration_ms is not None else None
    if status != "ok":
        error = (result or {}).get("error")
        row = conn.execute(
            FAILURE_SQL,
            (
                action,
                json.dumps(to_jsonable(arguments)),
                status,
                ms,
                None if error is None else str(error),
                reason,
            ),
        ).fetchone()
        return row[0] if row else None
    try:
        row = conn.execute(
            AUDIT_SQL,
            (
                action,
                json.dumps(to_jsonable(arguments)),
                json.dumps(to_jsonable(result)) if result is not None else None,
                status,
                ms,
                reason,
            ),
        ).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        # A group role: its work was audited by the action functions themselves, row by row; a
        # console-level summary of its own (a session of continuous processing) is not its to write.
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        return None
    return row[0] if row else None


def run_audited(
    conn: psycopg.Connection,
    action: str,
    arguments: dict[str, Any],
    body: Callable[[psycopg.Connection], dict[str, Any]],
    *,
    reason: str | None = None,
    audit_conn: Callable[[], psycopg.Connection] | None = None,
    audited_by_callee: bool = False,
    failures_audited_by_callee: bool = False,
) -> ActionOutcome:
    """Run body(conn) and record the outcome. `audit_conn` opens a fresh connection for the audit
    row when the action's own connection died under it (server restart, pg_terminate_backend).

    `audited_by_callee`: the SQL function writes its own audit row when it succeeds (retry_failed,
    the DQ run), so one is written here only when it failed or was cancelled (its row rolled back).
    `failures_audited_by_callee`: the action audits its failures too (ops.dq.run_checks, ops.customers
    .refresh), cancels included; then none is written here."""
    started = time.perf_counter()
    try:
        result = body(conn)
        status, message = "ok", ""
    except Exception as exc:  # every failure is reported and audited, never raised into the UI
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
            conn.rollback()
        if is_cancel(exc):
            status, message = "cancelled", "cancelled by the operator"
        else:
            status, message = "error", describe_error(exc)
        result = {"error": message}
    duration_ms = (time.perf_counter() - started) * 1000
    outcome = ActionOutcome(action, status, result, duration_ms, message)
    if status == "ok" and audited_by_callee:
        return outcome
    if status != "ok" and failures_audited_by_callee:
        return outcome
    try:
        target = conn if not conn.closed and not conn.broken else None
        if target is None and audit_conn is not None:
            with audit_conn() as fresh:
                outcome.audit_id = write_audit(fresh, action, arguments, result, status, duration_ms, reason)
        elif target is not None:
            outcome.audit_id = write_audit(target, action, arguments, result, status, duration_ms, reason)
    except Exception as exc:  # the action's outcome matters more than the failed audit write
        outcome.message = (outcome.message + "; " if outcome.message else "") + (
            f"the audit row could not be written: {describe_error(exc)}"
        )
    return outcome

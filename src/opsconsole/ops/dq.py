"""Data-quality actions and reads: run the checks, list rules, add a rule, read a rule's history, and
what the Data quality pane shows.

Each function takes a psycopg connection, calls the SQL side (dq_run, dq_add_rule, dq_latest_results,
data_quality_metrics) and returns plain dicts/dataclasses that the CLI and the console share.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from opsconsole.db.queries import dict_rows, query
from opsconsole.errors import OpsError, from_database

RULE_TYPES = ("completeness", "uniqueness", "validity", "accuracy", "consistency", "freshness")
SEVERITIES = ("info", "warning", "error", "critical")
OPERATORS = ("not_null", "=", "<>", "<", "<=", ">", ">=", "between", "in", "not_in")
OPERATORS += ("like", "ilike", "regex", "iregex")
SEVERE = ("error", "critical")
RUN = "dq.run"  # the audit action name of a run (dq_run() writes it)


class DQProblem(OpsError):
    """A DQ request the database refused (unknown rule or table, bad timeout)."""


class RuleRejected(OpsError):
    """The validator refused a rule definition."""


@dataclass
class RunReport:
    run_id: int | None
    status: str
    rules_total: int = 0
    rules_passed: int = 0
    rules_failed: int = 0
    rules_errored: int = 0
    severe_failures: int = 0
    duration_ms: Decimal | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_severe_failure(self) -> bool:
        """True when a rule of severity error or critical failed or could not run."""
        return self.severe_failures > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "rules_total": self.rules_total,
            "rules_passed": self.rules_passed,
            "rules_failed": self.rules_failed,
            "rules_errored": self.rules_errored,
            "severe_failures": self.severe_failures,
            "duration_ms": self.duration_ms,
            "results": self.results,
        }


def _problem(exc: psycopg.Error, what: str) -> OpsError:
    """The DQ wording of the shared database-error sentences; refusals become DQProblem."""
    problem = from_database(exc, what, objects="the data-quality objects", fallback=DQProblem)
    assert problem is not None  # a fallback always gives a sentence
    return problem


def run_checks(
    conn: psycopg.Connection,
    table: str | None = None,
    rule: str | None = None,
    timeout_ms: int | None = None,
) -> RunReport:
    """Run the active DQ rules (or one table's, or one named rule) as one run; return its report."""
    started = time.perf_counter()
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            results = cur.execute("SELECT * FROM dq_run(%s, %s, %s)", (table, rule, timeout_ms)).fetchall()
            run_id = results[0]["run_id"] if results else None
            summary = None
            if run_id is not None:
                summary = cur.execute(
                    "SELECT status, rules_total, rules_passed, rules_failed, rules_errored, severe_failures,"
                    " duration_ms FROM dq_runs WHERE run_id = %s",
                    (run_id,),
                ).fetchone()
    except psycopg.Error as exc:
        problem = _problem(exc, "run the DQ checks")
        _audit_failure(
            conn, "dq.run", {"table": table, "rule": rule, "timeout_ms": timeout_ms}, problem.message, started
        )
        raise problem from None
    if summary is None:
        return RunReport(run_id=None, status="passed", results=[])
    return RunReport(run_id=run_id, results=results, **summary)


def active_rule_names(conn: psycopg.Connection) -> list[str]:
    return [
        r["rule_name"]
        for r in dict_rows(conn, "SELECT rule_name FROM dq_rule_definitions WHERE is_active ORDER BY 1")
    ]


def last_run_ms(conn: psycopg.Connection) -> float | None:
    """How long the last complete run took (an estimate for the next one's progress bar)."""
    rows = dict_rows(
        conn,
        "SELECT duration_ms FROM dq_runs WHERE rule_filter IS NULL AND table_filter IS NULL"
        " AND duration_ms IS NOT NULL ORDER BY started_at DESC LIMIT 1",
    )
    return float(rows[0]["duration_ms"]) if rows else None


SEVERITY_ORDER = {"critical": 0, "error": 1, "warning": 2}


def latest_results(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every rule with its latest result and recent scores (the read of `dq rules`), failing or
    erroring rules first, then by severity (the Data quality pane)."""
    rows = [
        {
            "rule_name": r["rule_name"],
            "table_name": r["table_name"],
            "rule_type": r["rule_type"],
            "severity": r["severity"],
            "is_active": r["is_active"],
            "threshold_value": r["threshold_value"],
            "score": r["last_score"],
            "status": r["last_status"],
            "check_timestamp": r["last_checked_at"],
            "message": r["last_message"],
            "recent": r["recent_scores"],
        }
        for r in dict_rows(conn, query("dq/rules"), {"table": None, "include_inactive": True})
    ]
    rows.sort(
        key=lambda r: (
            r["status"] not in ("fail", "error"),
            SEVERITY_ORDER.get(r["severity"], 3),
            r["rule_name"],
        )
    )
    return rows


def recent_results(conn: psycopg.Connection, rule: str) -> list[dict[str, Any]]:
    """One rule's recent results in full, newest first (every column data_quality_metrics has)."""
    rows = [r["row"] for r in dict_rows(conn, query("dq/results"), {"rule": rule})]
    for r in rows:
        if r.get("check_timestamp"):
            r["check_timestamp"] = dt.datetime.fromisoformat(r["check_timestamp"])
    return rows


def list_rules(
    conn: psycopg.Connection, table: str | None = None, include_inactive: bool = True
) -> list[dict[str, Any]]:
    """Every rule with its latest result and the trend of its last ten results."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                query("dq/rules"), {"table": table, "include_inactive": include_inactive}
            ).fetchall()
    except psycopg.Error as exc:
        raise _problem(exc, "list the DQ rules") from None


def history(conn: psycopg.Connection, rule: str, limit: int = 20) -> list[dict[str, Any]]:
    """A rule's recorded results, newest first."""
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("dq/history"), {"rule": rule, "limit": limit}).fetchall()
            if not rows:
                known = cur.execute(
                    "SELECT 1 FROM dq_rule_definitions WHERE rule_name = %s", (rule,)
                ).fetchone()
                if not known:
                    raise DQProblem(
                        f'No DQ rule is named "{rule}" and no results are recorded under that name.'
                    )
            return rows
    except psycopg.Error as exc:
        raise _problem(exc, "read the DQ history") from None


@dataclass
class RuleSpec:
    """A rule as `dq add` takes it; see dq_add_rule() in sql/definitions/20_data_quality.sql."""

    rule_name: str
    table_name: str
    rule_type: str
    rule_expression: str | None = None
    threshold_value: Decimal = Decimal("1.0")
    severity: str = "warning"
    column_name: str | None = None
    operator: str | None = None
    value: Any = None
    reference_table: str | None = None
    reference_column: str | None = None
    max_age: str | None = None
    timeout_ms: int | None = None
    description: str | None = None
    is_active: bool = True

    def arguments(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def parse_value(text: str | None) -> Any:
    """--value is JSON (0, "x", [1, 2]); anything that is not JSON is taken as a plain string."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def add_rule(conn: psycopg.Connection, spec: RuleSpec) -> dict[str, Any]:
    """Insert a validated rule; RuleRejected with the validator's reason when it is refused."""
    started = time.perf_counter()
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                """SELECT * FROM dq_add_rule(
                       p_rule_name => %(rule_name)s, p_table_name => %(table_name)s,
                       p_rule_type => %(rule_type)s, p_rule_expression => %(rule_expression)s,
                       p_threshold_value => %(threshold_value)s, p_severity => %(severity)s,
                       p_column_name => %(column_name)s, p_operator => %(operator)s,
                       p_value => %(value)s::jsonb, p_reference_table => %(reference_table)s,
                       p_reference_column => %(reference_column)s, p_max_age => %(max_age)s::interval,
                       p_timeout_ms => %(timeout_ms)s, p_description => %(description)s,
                       p_is_active => %(is_active)s)""",
                {
                    **spec.__dict__,
                    "value": None if spec.value is None else json.dumps(spec.value),
                },
            ).fetchone()
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.errors.InsufficientPrivilege):
            raise _problem(exc, "add the DQ rule") from None
        reason = (exc.diag.message_primary or str(exc).splitlines()[0]).rstrip(".")
        if not reason.startswith("DQ rule"):
            reason = f'DQ rule "{spec.rule_name}" rejected: {reason}'
        _audit_failure(conn, "dq.add_rule", spec.arguments(), reason, started)
        raise RuleRejected(f"{reason}.") from None


def _audit_failure(
    conn: psycopg.Connection, action: str, arguments: dict, reason: str, started: float
) -> None:
    """A refused action leaves an audit row too (the SQL one rolled back with the action)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        return
    ms = (time.perf_counter() - started) * 1000
    # A role that may not write the audit log still gets the reason.
    with contextlib.suppress(psycopg.Error):
        conn.execute(
            "SELECT record_action_failure(%s, %s::jsonb, 'error', %s::numeric, %s, %s)",
            (action, json.dumps(arguments, default=str), round(ms, 3), reason, reason),
        )

"""The timeline of what changed: SLA-breach minutes, data-quality failures, schema changes and catalog
differences (ops_timeline in sql/definitions/70_timeline.sql) with the operator actions of the audit
log, on one time axis, newest first.

Operator actions come through the Activity pane's read (ops.audit.recent), so they are exactly what
that pane shows the role: search texts were masked when the audit row was written."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from opsconsole.db.queries import dict_rows, query
from opsconsole.ops import audit

KINDS = ("sla", "dq", "schema", "catalog", "action")
KIND_LABELS = {
    "sla": "SLA breach",
    "dq": "data quality",
    "schema": "schema change",
    "catalog": "catalog",
    "action": "operator action",
}


@dataclass(frozen=True)
class Event:
    occurred_at: dt.datetime
    kind: str
    subject: str
    detail: str
    severity: str
    key: str  # stable across refreshes (the table's row key)

    def matches(self, text: str) -> bool:
        needle = text.casefold()
        return any(
            needle in part.casefold() for part in (self.kind, self.subject, self.detail, self.severity)
        )


def _action_detail(row: dict[str, Any]) -> str:
    args = row.get("arguments") or {}
    scope = ", ".join(f"{k}={v}" for k, v in args.items() if v not in (None, "", [], {})) if args else ""
    outcome = row["status"] if row["status"] != "ok" else "ok"
    reason = f"; reason: {row['reason']}" if row.get("reason") else ""
    return f"{outcome}{' · ' + scope if scope else ''}{reason}"


def recent(conn: psycopg.Connection, minutes: int, *, breach_pct: float) -> tuple[dt.datetime, list[Event]]:
    """The events of the last `minutes` by the database's clock: (the window's end, the events)."""
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    until = row[0]
    return until, events(conn, until - dt.timedelta(minutes=minutes), until, breach_pct=breach_pct)


def events(
    conn: psycopg.Connection,
    since: dt.datetime,
    until: dt.datetime,
    *,
    breach_pct: float,
    limit: int = 500,
    actions: int = 500,
) -> list[Event]:
    """Every event in [since, until], newest first (at most `limit` of the SQL kinds and `actions`
    operator actions)."""
    out: list[Event] = []
    params = {"since": since, "until": until, "breach_pct": breach_pct, "limit": limit}
    for r in dict_rows(conn, query("timeline/events"), params):
        key = f"{r['kind']}:{r['ref']}:{r['subject']}"
        out.append(Event(r["occurred_at"], r["kind"], r["subject"], r["detail"] or "", r["severity"], key))
    for r in audit.recent(conn, actions):
        if since <= r["occurred_at"] <= until:
            severity = "info" if r["status"] == "ok" else "warning"
            out.append(
                Event(
                    r["occurred_at"],
                    "action",
                    f"{r['action']} by {r['actor']}",
                    _action_detail(r),
                    severity,
                    f"action:{r['audit_id']}",
                )
            )
    out.sort(key=lambda e: (e.occurred_at, e.key), reverse=True)
    return out

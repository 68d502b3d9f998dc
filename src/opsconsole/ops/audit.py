"""The operator audit log as the Activity pane reads it (rows are written by the actions themselves:
in SQL by the action functions, or through opsconsole.ops.actions.write_audit)."""

from __future__ import annotations

from typing import Any

import psycopg

from opsconsole.db.queries import dict_rows, query


def recent(conn: psycopg.Connection, limit: int = 200) -> list[dict[str, Any]]:
    """The newest operator actions first."""
    return dict_rows(conn, query("audit/activity"), {"limit": limit})

"""Named read queries kept as files in sql/queries/, loaded once, and the one way to run a query
for dict rows."""

from __future__ import annotations

from functools import cache
from typing import Any

import psycopg
from psycopg.rows import dict_row

from opsconsole.db.migrate import sql_dir


@cache
def query(name: str) -> str:
    path = sql_dir() / "queries" / f"{name}.sql"
    return path.read_text(encoding="utf-8")


def dict_rows(conn: psycopg.Connection, sql: Any, params: Any = None) -> list[dict[str, Any]]:
    """Run one statement and return its rows as dicts ([] for a statement that returns none)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []

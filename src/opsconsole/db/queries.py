"""Named read queries kept as files in sql/queries/, loaded once."""

from __future__ import annotations

from functools import cache

from opsconsole.db.migrate import sql_dir


@cache
def query(name: str) -> str:
    path = sql_dir() / "queries" / f"{name}.sql"
    return path.read_text(encoding="utf-8")

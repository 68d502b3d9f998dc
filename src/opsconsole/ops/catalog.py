"""Catalog, lineage and lakehouse actions: call the SQL of 50_lakehouse.sql and 60_catalog_lineage.sql.

They return plain data.

The CLI (opsconsole.cli.catalog) and the console both call these. Each takes an open psycopg
connection (autocommit) and raises OpsError subclasses for failures a person can meet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import psycopg

from opsconsole.db.queries import dict_rows, query
from opsconsole.errors import OpsError
from opsconsole.errors import database_errors as _database_errors

DIRECTIONS = ("up", "down", "both")


# The catalog and lakehouse wording of the shared database-error sentences (ops.lake uses it too).
database_errors = partial(_database_errors, objects="the catalog and lakehouse objects")


REFRESH = "refresh_data_catalog"  # the audit action name (the SQL function's)

CatalogKey = tuple[str, str, str]


@dataclass(frozen=True)
class CatalogRefresh:
    added: int
    changed: int
    removed: int
    total: int
    duration_ms: float
    # which columns (schema.table.column) were added, removed and changed: the console shows them
    diff: dict[str, list[str]] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "diff"}


def _snapshot(conn: psycopg.Connection) -> dict[CatalogKey, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT schema_name, table_name, column_name, data_type, is_nullable, data_classification"
        " FROM data_catalog WHERE database_name = current_database()"
    ).fetchall()
    return {(r[0], r[1], r[2]): tuple(r[3:]) for r in rows}


def diff_catalog(
    before: dict[CatalogKey, tuple[Any, ...]], after: dict[CatalogKey, tuple[Any, ...]]
) -> dict[str, list[str]]:
    def name(key: CatalogKey) -> str:
        return ".".join(key)

    return {
        "added": sorted(name(k) for k in after.keys() - before.keys()),
        "removed": sorted(name(k) for k in before.keys() - after.keys()),
        "changed": sorted(name(k) for k in after.keys() & before.keys() if after[k] != before[k]),
    }


def refresh_catalog(conn: psycopg.Connection) -> CatalogRefresh:
    """Re-read the schema into data_catalog with refresh_data_catalog_report(), which writes its own
    audit row (refresh_data_catalog); the result says how many columns changed and which."""
    with database_errors("refresh the catalog"), conn.transaction():
        before = _snapshot(conn)
        row = dict_rows(conn, "SELECT * FROM refresh_data_catalog_report()")[0]
        after = _snapshot(conn)
        result = CatalogRefresh(
            added=row["added"],
            changed=row["changed"],
            removed=row["removed"],
            total=row["total"],
            duration_ms=float(row["duration_ms"]),
            diff=diff_catalog(before, after),
        )
    return result


def column_count(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) FROM data_catalog WHERE database_name = current_database()"
    ).fetchone()
    return int(row[0]) if row else 0


def all_columns(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every catalogued column of this database, in catalogue order (the Catalog pane's tree)."""
    return dict_rows(conn, query("catalog/columns"))


def catalog_tables(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """One row per catalogued table or view: what it is, its size in columns, its most sensitive data."""
    with database_errors("read the catalog"):
        return dict_rows(
            conn,
            """
            SELECT schema_name, table_name, min(object_type) AS object_type, count(*) AS columns,
                   CASE max(CASE data_classification WHEN 'restricted' THEN 4 WHEN 'confidential' THEN 3
                                                     WHEN 'internal' THEN 2 WHEN 'public' THEN 1 END)
                        WHEN 4 THEN 'restricted' WHEN 3 THEN 'confidential' WHEN 2 THEN 'internal'
                        WHEN 1 THEN 'public' END AS classification,
                   string_agg(DISTINCT business_owner, ', ') AS business_owner,
                   min(table_description) AS description
            FROM data_catalog
            WHERE database_name = current_database()
            GROUP BY schema_name, table_name
            ORDER BY schema_name, table_name
            """,
        )


def catalog_columns(conn: psycopg.Connection, table: str) -> list[dict[str, Any]]:
    """The catalogued columns of one table (name as stored, optionally schema-qualified)."""
    schema, _, name = table.rpartition(".")
    with database_errors("read the catalog"):
        rows = dict_rows(
            conn,
            """
            SELECT column_name, data_type, is_nullable, data_classification, column_description,
                   business_owner, technical_owner, tags, object_type, schema_name, table_name,
                   last_updated
            FROM data_catalog
            WHERE database_name = current_database() AND table_name = %(name)s
              AND (%(schema)s = '' OR schema_name = %(schema)s)
            ORDER BY schema_name, ordinal_position
            """,
            {"name": name, "schema": schema},
        )
    if not rows:
        raise OpsError(
            f"The catalog has no table named {table}; check the name or run `opsconsole catalog refresh`."
        )
    return rows


def lineage(conn: psycopg.Connection, table: str, direction: str = "both") -> list[dict[str, Any]]:
    """Flows into (up) and/or out of (down) a table, nearest first, each with its direction."""
    if direction not in DIRECTIONS:
        raise OpsError(f"Unknown lineage direction {direction!r}; use up, down or both.")
    rows: list[dict[str, Any]] = []
    with database_errors("read lineage"):
        for name, fn in (("up", "lineage_upstream"), ("down", "lineage_downstream")):
            if direction in (name, "both"):
                rows += [
                    {"direction": name, **r}
                    for r in dict_rows(conn, f"SELECT * FROM {fn}(%s)", (table,))  # fn is one of two names
                ]
    return rows


def lake_history(conn: psycopg.Connection, customer_id: int) -> list[dict[str, Any]]:
    """Every version of one customer, oldest first (lake_history())."""
    with database_errors("read the lakehouse"):
        rows = dict_rows(conn, "SELECT * FROM lake_history(%s)", (customer_id,))
    if not rows:
        raise OpsError(f"Customer {customer_id} has no versions in the lakehouse.")
    return rows

"""Lakehouse export: a platform table, or the customers as they were at an instant, to Parquet.

`export_table` reads with psycopg and writes with polars (no pyarrow needed): Parquet, or a Delta Lake
table (the deltalake package) where every export into the same path is a new Delta version.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from opsconsole.errors import OpsError, PermissionProblem
from opsconsole.ops.catalog import database_errors

FORMATS = ("parquet", "delta")
FETCH_ROWS = 50_000

# Tables that keep their history, and the query that rebuilds their state at an instant. The CRM
# row stored in each version is expanded into crm_customers' columns (as that table is today).
AS_OF_QUERIES = {
    "lakehouse_customers": """
        SELECT r.*, t.version_number AS lake_version, t.effective_from AS lake_effective_from
        FROM time_travel_customers(%(as_of)s::timestamptz) t
        CROSS JOIN LATERAL jsonb_populate_record(NULL::crm_customers, t.customer_data) r
        ORDER BY t.customer_id
    """,
}

# PostgreSQL type name -> polars dtype; everything else is written as text.
_SIMPLE_TYPES: dict[str, Any] = {
    "bool": pl.Boolean,
    "int2": pl.Int64,
    "int4": pl.Int64,
    "int8": pl.Int64,
    "oid": pl.Int64,
    "float4": pl.Float64,
    "float8": pl.Float64,
    "date": pl.Date,
    "timestamp": pl.Datetime("us"),
    "timestamptz": pl.Datetime("us", "UTC"),
    "interval": pl.Duration("us"),
}


def _dtype(conn: psycopg.Connection, column: psycopg.Column) -> Any:
    info = conn.adapters.types.get(column.type_code)
    name = info.name if info else ""
    if name == "numeric":
        return pl.Decimal(38, column.scale) if column.scale is not None else pl.Float64
    return _SIMPLE_TYPES.get(name, pl.String)


def _text(value: Any) -> str | None:
    """Text for a column written as a string: JSON for jsonb and arrays, str() for the rest."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)  # uuid, inet, cidr, numeric without scale, ranges, ...


def _frame(conn: psycopg.Connection, columns: list[psycopg.Column], rows: list[tuple]) -> pl.DataFrame:
    series = []
    for i, column in enumerate(columns):
        dtype = _dtype(conn, column)
        values = [row[i] for row in rows]
        if dtype == pl.String:
            values = [_text(v) for v in values]
        elif dtype == pl.Datetime("us", "UTC"):
            values = [v.astimezone(dt.UTC) if v is not None else None for v in values]
        series.append(pl.Series(column.name, values, dtype=dtype))
    return pl.DataFrame(series)


def _resolve_table(conn: psycopg.Connection, table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname = ANY (platform_schemas())"
        " AND (%s = '' OR n.nspname = %s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        " AND NOT c.relispartition",
        (name, schema, schema),
    ).fetchone()
    if row is None:
        raise OpsError(f"There is no platform table or view named {table}; check the name.")
    return row[0], row[1]


DELTA_MISSING = (
    "Delta Lake export needs the optional deltalake package: install it with "
    "`pip install 'opsconsole[delta]'`, or use --format parquet."
)


def export_table(
    conn: psycopg.Connection,
    table: str,
    path: str | os.PathLike[str],
    as_of: str | None = None,
    fmt: str = "parquet",
) -> dict[str, Any]:
    """Write TABLE (or its state at AS_OF) to PATH; return what was written. Leaves an audit row."""
    if fmt not in FORMATS:
        raise OpsError(f"Unknown export format {fmt!r}; use parquet or delta.")
    if fmt == "delta" and importlib.util.find_spec("deltalake") is None:
        raise OpsError(DELTA_MISSING)
    target = Path(path)
    if not target.parent.is_dir():
        raise OpsError(f"The directory {target.parent} does not exist; create it or choose another path.")

    started = time.perf_counter()
    with database_errors("export the table"):
        # Data leaving the database is audited in the same transaction; only the owner may write that
        # row (record_audit), so nobody else exports unaudited.
        can_audit = conn.execute(
            "SELECT has_function_privilege("
            "'record_audit(text, jsonb, jsonb, text, numeric, text)'::regprocedure, 'EXECUTE')"
        ).fetchone()
        if not (can_audit and can_audit[0]):
            raise PermissionProblem(
                "Exporting tables is the schema owner's (the export's audit row is the owner's to write); "
                "connect as the owner."
            )
        schema, name = _resolve_table(conn, table)
        if as_of is not None:
            if name not in AS_OF_QUERIES:
                raise OpsError(
                    f"{name} keeps no history, so --as-of cannot apply; only "
                    f"{', '.join(sorted(AS_OF_QUERIES))} can be exported as of an instant."
                )
            query: Any = AS_OF_QUERIES[name]
            params: dict[str, Any] | None = {"as_of": as_of}
        else:
            query = sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
            params = None
        frames = []
        try:
            with conn.transaction(), conn.cursor(name="opsconsole_export") as cur:
                cur.execute(query, params)
                columns = list(cur.description or [])
                while chunk := cur.fetchmany(FETCH_ROWS):
                    frames.append(_frame(conn, columns, chunk))
                if not frames:
                    frames.append(_frame(conn, columns, []))
        except psycopg.errors.InvalidDatetimeFormat:
            raise OpsError(f"{as_of!r} is not a timestamp; use e.g. 2025-03-01T12:00:00Z.") from None
        frame = pl.concat(frames, how="vertical")

        if fmt == "parquet":
            partial = target.with_name(target.name + ".partial")
            frame.write_parquet(partial)
            partial.replace(target)  # readers never see half a file
        else:
            # Each export is one Delta commit: exporting a table as of successive instants into the
            # same path gives a Delta table whose versions readers (DuckDB, Spark) can time-travel.
            from deltalake import CommitProperties

            frame.write_delta(
                str(target),
                mode="overwrite",
                delta_write_options={
                    "schema_mode": "overwrite",
                    "commit_properties": CommitProperties(
                        custom_metadata={
                            "opsconsole.table": f"{schema}.{name}",
                            "opsconsole.as_of": as_of or "",
                        }
                    ),
                },
            )

        result = {
            "table": f"{schema}.{name}",
            "as_of": as_of,
            "format": fmt,
            "path": str(target),
            "rows": frame.height,
            "columns": frame.width,
        }
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        conn.execute(
            "SELECT record_audit('lake.export', %s, %s, 'ok', %s::numeric)",
            (
                Jsonb({"table": table, "as_of": as_of, "format": fmt, "path": str(target)}),
                Jsonb(result),
                duration_ms,
            ),
        )
    return {**result, "duration_ms": duration_ms}

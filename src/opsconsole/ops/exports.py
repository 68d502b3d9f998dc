"""Data leaving through the console: a list exported to a CSV or JSON file, or a row copied to the
clipboard. One implementation for every list; each is recorded by console_export() (80_privacy.sql,
audit name console.export) with the rows and the classifications of the columns touched.

The rows are what the role read, already masked by the database as that role sees them; nothing here
unmasks or re-reads them. The audit row and the file go together: the file is written inside the
transaction that records it, so a file that cannot be written leaves no audit row, and an audit that
fails (no EXECUTE, an older database) leaves no file.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from opsconsole.errors import OpsError
from opsconsole.output import dumps, to_jsonable

AUDIT_NAME = "console.export"
FORMATS = ("csv", "json")


class ExportFailed(OpsError):
    """The export or copy could not be recorded or written."""

    exit_code = 1


def file_name(list_name: str, fmt: str, now: dt.datetime) -> str:
    return f"opsconsole-{list_name}-{now.strftime('%Y%m%d-%H%M%S')}.{fmt}"


def csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(to_jsonable(value), ensure_ascii=False, sort_keys=True)
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    return str(value)


def row_json(labels: Sequence[str], row: Sequence[Any]) -> str:
    """One row as a JSON object (what `y` copies)."""
    return dumps({label: to_jsonable(v, exact=True) for label, v in zip(labels, row, strict=True)})


def _record(
    conn: psycopg.Connection, list_name: str, fmt: str, rows: int, sources: Sequence[str], target: str
) -> dict[str, Any]:
    # the console's read connections are read-only by default: this one transaction writes its audit row
    conn.execute("SET TRANSACTION READ WRITE")
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(
            "SELECT console_export(%s, %s, %s, %s, %s)", (list_name, fmt, rows, list(sources), target)
        )
        row = cur.fetchone()
    return dict(row[0]) if row and row[0] else {}


def _write(path: Path, fmt: str, labels: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.part")
    try:
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            if fmt == "csv":
                writer = csv.writer(fh)
                writer.writerow(labels)
                writer.writerows([csv_text(v) for v in row] for row in rows)
            else:
                fh.write("[\n")
                fh.write(",\n".join(row_json(labels, row) for row in rows))
                fh.write("\n]\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def export_list(
    conn: psycopg.Connection,
    list_name: str,
    fmt: str,
    labels: Sequence[str],
    sources: Sequence[str],
    rows: Sequence[Sequence[Any]],
    directory: Path,
    now: dt.datetime,
) -> dict[str, Any]:
    """Write the rows to a new file in `directory` and record it; returns path, rows, classifications."""
    if fmt not in FORMATS:
        raise ExportFailed(f"Export writes csv or json, not {fmt}.")
    path = (directory / file_name(list_name, fmt, now)).resolve()
    n = 1
    while path.exists():  # two exports in one second: keep both
        n += 1
        path = path.with_name(file_name(list_name, fmt, now).replace(f".{fmt}", f"-{n}.{fmt}"))
    try:
        with conn.transaction():
            classes = _record(conn, list_name, fmt, len(rows), sources, str(path))
            _write(path, fmt, labels, rows)
    except OSError as exc:
        raise ExportFailed(f"Could not write {path}: {exc.strerror or exc}.") from None
    except psycopg.Error as exc:
        path.unlink(missing_ok=True)
        raise ExportFailed(f"The export was not recorded, so nothing was written: {_reason(exc)}.") from None
    return {"path": str(path), "rows": len(rows), "classifications": classes}


def record_copy(
    conn: psycopg.Connection,
    list_name: str,
    labels: Sequence[str],
    sources: Sequence[str],
    row: Sequence[Any],
) -> str:
    """Record a copy of one row; returns the text to put on the clipboard (a JSON object)."""
    text = row_json(labels, row)
    try:
        with conn.transaction():
            _record(conn, list_name, "clipboard", 1, sources, "clipboard")
    except psycopg.Error as exc:
        raise ExportFailed(f"The copy was not recorded, so nothing was copied: {_reason(exc)}.") from None
    return text


def _reason(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    message = diag.message_primary if diag is not None and diag.message_primary else str(exc)
    return message.rstrip(".")

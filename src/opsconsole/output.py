"""Printing results: a rich table for people, JSON for machines (--json)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def to_jsonable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "exploded"):  # ipaddress objects
        return str(value)
    return value


def emit(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], as_json: bool, title: str | None = None
) -> None:
    """Print rows (or one mapping) as JSON or as a table."""
    if as_json:
        print(json.dumps(to_jsonable(rows), indent=2, ensure_ascii=False))
        return
    if isinstance(rows, Mapping):
        table = Table(title=title, show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        for key, value in rows.items():
            table.add_row(str(key), format_cell(value))
        console.print(table)
        return
    if not rows:
        console.print(f"{title + ': ' if title else ''}no rows.")
        return
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(str(key))
    for row in rows:
        table.add_row(*(format_cell(v) for v in row.values()))
    console.print(table)


def format_cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, decimal.Decimal):
        return f"{value:,.2f}" if value != value.to_integral_value() else f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, Mapping | list):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    return str(value)

"""Printing results: a rich table for people, JSON for machines (--json).

Money in JSON: a NUMERIC value (a Python Decimal) is written as a JSON number token with exactly the
digits the database returned (`12345678901234567.8901`, never `1.2345678901234568e16`), so nothing is
rounded on the way out. A reader that parses numbers as binary floats rounds them itself; read with
`json.loads(text, parse_float=decimal.Decimal)` (Python) or jq 1.7+ (which keeps a number's literal
digits unless it does arithmetic on it) to keep every digit. NaN and ±Infinity, which NUMERIC allows
and JSON does not, are written as the strings "NaN", "Infinity" and "-Infinity".
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from opsconsole.tui.clock import human_duration

console = Console()
err_console = Console(stderr=True)


def to_jsonable(value: Any, *, exact: bool = False) -> Any:
    """Plain JSON types; with exact=True, Decimals stay Decimals (for dumps(), which keeps their digits)."""
    if isinstance(value, decimal.Decimal):
        if exact:
            return value
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, exact=exact) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [to_jsonable(v, exact=exact) for v in value]
    if hasattr(value, "exploded"):  # ipaddress objects
        return str(value)
    return value


_EXACT = re.compile(r'"\\u0000(\d+)\\u0000"')


def dumps(value: Any, *, indent: int | None = None) -> str:
    """JSON text in which every Decimal is a number token with its exact digits (see the module doc)."""
    numbers: list[str] = []

    def placeholder(obj: Any) -> str:
        if not isinstance(obj, decimal.Decimal):
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        if not obj.is_finite():
            return "NaN" if obj.is_nan() else ("-Infinity" if obj < 0 else "Infinity")
        numbers.append(format(obj, "f"))  # positional notation: no exponent, every digit kept
        return f"\x00{len(numbers) - 1}\x00"  # NUL never occurs in PostgreSQL text

    text = json.dumps(to_jsonable(value, exact=True), indent=indent, ensure_ascii=False, default=placeholder)
    return _EXACT.sub(lambda m: numbers[int(m.group(1))], text)


def emit(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Any], as_json: bool, title: str | None = None
) -> None:
    """Print rows (or one mapping) as JSON or as a table."""
    if as_json:
        print(dumps(rows, indent=2))
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
    if isinstance(value, dt.timedelta):  # "37d 10h", as the console says it
        return human_duration(value.total_seconds())
    if isinstance(value, Mapping | list):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    return str(value)

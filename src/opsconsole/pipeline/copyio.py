"""Moving polars frames into PostgreSQL with COPY, and small catalog look-ups the loaders share.

Why CSV and not COPY BINARY: measured on this 2-core machine (median of 3, 200k rows), polars
`write_csv` in 50k-row slices streamed into `COPY ... FROM STDIN (FORMAT csv)` loaded ecommerce_events
(10 columns, jsonb, inet, uuid) at ~60k rows/s and staging rows at ~129k rows/s, while psycopg's
binary `write_row` (C accelerated, set_types, JSON text passed through) managed ~52k and ~95k rows/s:
the binary path has to visit every row in Python to hand psycopg uuid/inet/Decimal objects, whereas
polars writes CSV in native code at ~1.5M rows/s, so the server's parsing and index maintenance is
the only real cost.

CSV semantics used here: an unquoted empty field is NULL, a quoted empty field ("") is the empty
string (polars' default output).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence

import polars as pl
import psycopg
from psycopg import sql

COPY_SLICE_ROWS = 50_000
# The staging table's input columns: what every loader COPYs (the rest have defaults or are computed).
STAGING_COLUMNS = (
    "transaction_id",
    "account_id",
    "transaction_timestamp",
    "amount",
    "transaction_type",
    "reference_data",
    "batch_id",
)
TS_FORMAT = "%Y-%m-%d %H:%M:%S%.6f+00:00"


def pg_text_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Columns in a form PostgreSQL parses unambiguously from CSV.

    Timestamps are written in UTC with an explicit offset (so the session TimeZone never matters),
    nested values as JSON text (for jsonb), everything else as polars writes it.
    """
    exprs = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_zone is None:
                col = col.dt.replace_time_zone("UTC")
            else:
                col = col.dt.convert_time_zone("UTC")
            exprs.append(col.dt.to_string(TS_FORMAT).alias(name))
        elif isinstance(dtype, pl.Struct):
            exprs.append(col.struct.json_encode().alias(name))
        elif isinstance(dtype, pl.List | pl.Array):
            exprs.append(pl.struct(col.alias("v")).struct.json_encode().str.slice(5).str.head(-1).alias(name))
        else:
            exprs.append(col)
    return df.select(exprs)


def copy_frame(
    cur: psycopg.Cursor,
    table: str | sql.Composable,
    df: pl.DataFrame,
    *,
    on_rows=None,
    slice_rows: int = COPY_SLICE_ROWS,
) -> int:
    """COPY every row of ``df`` into ``table`` (columns matched by the frame's column names).

    ``on_rows(n)`` is called after each slice is sent, for progress reporting. Returns the row count.
    """
    if df.height == 0:
        return 0
    target = sql.Identifier(table) if isinstance(table, str) else table
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in df.columns)
    )
    text = pg_text_frame(df)
    with cur.copy(stmt) as copy:
        for offset in range(0, text.height, slice_rows):
            part = text.slice(offset, slice_rows)
            copy.write(part.write_csv(include_header=False))
            if on_rows is not None:
                on_rows(part.height)
    return df.height


def _csv_slices(frames: Iterable[pl.DataFrame], columns: Sequence[str]) -> Iterator[tuple[str, int]]:
    for df in frames:
        text = pg_text_frame(df.select(columns))
        for offset in range(0, text.height, COPY_SLICE_ROWS):
            part = text.slice(offset, COPY_SLICE_ROWS)
            yield part.write_csv(include_header=False), part.height


def _prefetch(items: Iterator, depth: int = 3) -> Iterator:
    """Run ``items`` in a background thread, ``depth`` ahead: the next chunk is generated and
    rendered to CSV (polars releases the GIL) while the server is still parsing the previous one."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    worker = threading.Thread(target=produce, name="copy-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def copy_frames(
    cur: psycopg.Cursor,
    table: str | sql.Composable,
    columns: Sequence[str],
    frames: Iterable[pl.DataFrame],
    *,
    on_rows=None,
    prefetch: bool = True,
) -> int:
    """COPY a stream of frames (each with ``columns``) into ``table`` within one COPY statement.

    With ``prefetch`` the frames are generated and rendered in a background thread while this one
    streams the previous slice, overlapping client work with the server's parsing.
    """
    total = 0
    target = sql.Identifier(table) if isinstance(table, str) else table
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    slices = _csv_slices(frames, columns)
    if prefetch:
        slices = _prefetch(slices)
    with cur.copy(stmt) as copy:
        for text, rows in slices:
            copy.write(text)
            total += rows
            if on_rows is not None:
                on_rows(rows)
    return total

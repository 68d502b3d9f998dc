"""P1: bulk ingest into financial_transactions_staging, COPY (binary) vs executemany."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import polars as pl

from bench.harness import BenchDB, Result, median_of, timed

STAGING_COLUMNS = (
    "transaction_id",
    "account_id",
    "transaction_timestamp",
    "amount",
    "transaction_type",
    "reference_data",
    "batch_id",
)
TYPES = ["payment", "refund", "transfer", "fee"]


def staging_rows(n: int, offset: int = 0) -> list[tuple]:
    """n deterministic staging rows (generated column-wise, then turned into tuples once)."""
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ids = pl.int_range(offset, offset + n, eager=True)
    frame = pl.DataFrame(
        {
            "transaction_id": ids,
            "account_id": ids % 5_000,
            "seconds": ids % 86_400,
            "cents": (ids * 7919) % 500_000 - 20_000,
            "type": (ids % len(TYPES)).cast(pl.Int32),
        }
    )
    return [
        (
            tid,
            acc,
            base + dt.timedelta(seconds=sec),
            Decimal(cents) / 100,
            TYPES[t],
            None,
            f"bench-{tid // 10_000}",
        )
        for tid, acc, sec, cents, t in frame.iter_rows()
    ]


def _truncate(db: BenchDB) -> None:
    with db.connect() as conn:
        conn.execute("TRUNCATE financial_transactions_staging")


def _copy(db: BenchDB, rows: list[tuple]) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        cols = ", ".join(STAGING_COLUMNS)
        with cur.copy(f"COPY financial_transactions_staging ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "int8", "timestamptz", "numeric", "varchar", "jsonb", "varchar"])
            for row in rows:
                copy.write_row(row)


def _executemany(db: BenchDB, rows: list[tuple]) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        cols = ", ".join(STAGING_COLUMNS)
        cur.executemany(
            f"INSERT INTO financial_transactions_staging ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def p1_ingest(db: BenchDB, quick: bool) -> Result:
    n = 50_000 if quick else 1_000_000
    n_base = 20_000 if quick else 100_000  # executemany is slow; its rate is size-independent
    rows = staging_rows(n)
    base_rows = rows[:n_base]

    def run_copy() -> float:
        _truncate(db)
        return n / timed(lambda: _copy(db, rows))

    def run_many() -> float:
        _truncate(db)
        return n_base / timed(lambda: _executemany(db, base_rows))

    copy_rate = median_of(run_copy)
    many_rate = median_of(run_many)
    ratio = copy_rate / many_rate
    return Result(
        id="P1",
        what=f"ingest {n:,} staging rows (COPY binary)",
        value=copy_rate,
        baseline=many_rate,
        ratio=ratio,
        target=">= 5x and >= 100k rows/s",
        ok=ratio >= 5 and copy_rate >= 100_000,
        unit="rows/s",
        details={"rows": n, "baseline_rows": n_base},
    )


BENCHMARKS = [p1_ingest]

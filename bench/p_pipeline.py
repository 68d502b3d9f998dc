"""The financial pipeline benchmarks.

P1 bulk ingest (COPY vs executemany), P2 processing (set-based vs the spec's row-by-row function),
P3 latency under a steady offered load, P4 the monitor query (rollups vs the spec's view).
"""

from __future__ import annotations

import datetime as dt
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import psycopg

from bench.harness import BenchDB, Result, backend_run_ns, median_of, settle, timed
from opsconsole.ops import pipeline as ops_pipeline
from opsconsole.pipeline import arrival
from opsconsole.pipeline.copyio import STAGING_COLUMNS, copy_frame, pg_text_frame

TYPES = ["payment", "refund", "transfer", "fee"]


def staging_frame(n: int, offset: int = 0) -> pl.DataFrame:
    """n deterministic staging rows, generated column-wise."""
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ids = pl.int_range(offset, offset + n, eager=True).alias("transaction_id")
    return pl.DataFrame({"transaction_id": ids}).select(
        "transaction_id",
        account_id=pl.col("transaction_id") % 5_000,
        transaction_timestamp=pl.lit(base) + pl.duration(seconds=pl.col("transaction_id") % 86_400),
        amount=(((pl.col("transaction_id") * 7919) % 500_000 - 20_000) / 100).cast(pl.Decimal(20, 2)),
        transaction_type=(pl.col("transaction_id") % len(TYPES)).replace_strict(
            dict(enumerate(TYPES)), return_dtype=pl.String
        ),
        reference_data=pl.lit(None, pl.String),
        batch_id=pl.lit("bench-") + (pl.col("transaction_id") // 10_000).cast(pl.String),
    )


def staging_rows(n: int, offset: int = 0) -> list[tuple]:
    """The same rows as tuples, for the row-wise paths (executemany, binary write_row)."""
    return [tuple(r) for r in staging_frame(n, offset).rows()]


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
        arrival.staged(cur, len(rows), source="bench")


def _executemany(db: BenchDB, rows: list[tuple]) -> None:
    with db.connect() as conn, conn.cursor() as cur:
        cols = ", ".join(STAGING_COLUMNS)
        cur.executemany(
            f"INSERT INTO financial_transactions_staging ({cols}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        arrival.staged(cur, len(rows), source="bench")


def copy_staging_frame(db: BenchDB, frame: pl.DataFrame) -> None:
    """The product's loader (pipeline.copyio: polars CSV slices streamed into COPY, then the
    arrival call, in one transaction). A frame that sets more than the input columns (states,
    ingestion times) is counted by whoever loads it (arrival.select_counted)."""
    with db.connect() as conn, conn.transaction(), conn.cursor() as cur:
        copy_frame(cur, "financial_transactions_staging", frame)
        if set(frame.columns) <= set(STAGING_COLUMNS):
            arrival.staged(cur, frame.height, source="bench")


def p1_ingest(db: BenchDB, quick: bool) -> Result:
    n = 50_000 if quick else 1_000_000
    n_base = 5_000 if quick else 100_000  # executemany is slow; its rate barely depends on size
    frame = staging_frame(n)
    base_rows = [tuple(r) for r in frame.head(n_base).rows()]

    def run_copy() -> float:
        _truncate(db)
        return n / timed(lambda: copy_staging_frame(db, frame))

    def run_many() -> float:
        _truncate(db)
        return n_base / timed(lambda: _executemany(db, base_rows))

    copy_rate = median_of(run_copy)
    many_rate = median_of(run_many)
    ratio = copy_rate / many_rate
    return Result(
        id="P1",
        what=f"ingest {n:,} staging rows (COPY from polars)",
        value=copy_rate,
        baseline=many_rate,
        ratio=ratio,
        target=">= 5x and >= 150k rows/s",
        ok=ratio >= 5 and copy_rate >= 150_000,
        unit="rows/s",
        details={"rows": n, "baseline_rows": n_base},
    )


# --------------------------------------------------------------------------------------------------
# P2-P4: processing, latency under load, the monitor (the pipeline issue)
# --------------------------------------------------------------------------------------------------
BASELINE_SQL = Path(__file__).resolve().parent / "baseline_spec.sql"
RESET_PIPELINE = (
    "TRUNCATE financial_transactions_staging, financial_transactions_processed, "
    "financial_transaction_ledger, financial_fraud_minutes, "
    "financial_processing_rollup, financial_latency_rollup"
)


def _install_baseline(db: BenchDB) -> None:
    """The spec's row-by-row pipeline, made to run, in schema spec_baseline (never migrated)."""
    with db.connect() as conn:
        conn.execute(BASELINE_SQL.read_text(encoding="utf-8"))


def _load_staging(db: BenchDB, rows: list[tuple]) -> None:
    with db.connect() as conn:
        conn.execute(RESET_PIPELINE)
    _copy(db, rows)
    with db.connect() as conn:
        conn.execute("ANALYZE financial_transactions_staging")


def _drain_on(conn: psycopg.Connection, chunk: int, stop_at: int | None = None) -> int:
    """One worker loop on conn: process chunks (one transaction each) until nothing is due."""
    done = 0
    while True:
        row = conn.execute(
            "SELECT claimed_count FROM process_financial_batch_detail(%s)", (chunk,)
        ).fetchone()
        if not row or row[0] == 0:
            return done
        done += row[0]
        if stop_at is not None and done >= stop_at:
            return done


def _drain(dsn: str, chunk: int, stop_at: int | None = None) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _drain_on(conn, chunk, stop_at)


def _backend_cpu_us(conn: psycopg.Connection, work: Callable[[], object]) -> float | None:
    """Server CPU (µs, the backend's schedstat) that work() costs conn's backend; None when this
    machine cannot read it."""
    started = backend_run_ns(conn.info.backend_pid)
    if started is None:
        return None
    work()
    return (backend_run_ns(conn.info.backend_pid) - started) / 1e3


def _drain_parallel(dsn: str, chunk: int, workers: int) -> int:
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(lambda _: _drain(dsn, chunk), range(workers)))


# The writes a processed row cannot do without, and nothing else: its payload hash, its ledger row,
# its processed row, and its staging row gone (a DELETE, the cheapest way to record that it left).
# No claim, validation, score, rollup or status. What this costs per row is the floor under any
# processing design that keeps the ledger (exactly-once) and the processed table, on this server.
WRITES_FLOOR = """
WITH c AS MATERIALIZED (
    SELECT s FROM financial_transactions_staging s WHERE s.staging_id BETWEEN %(lo)s AND %(hi)s
),
h AS (SELECT * FROM financial_payload_hashes(ARRAY(SELECT c.s FROM c))),
r AS (SELECT (c.s).* FROM c),
l AS (
    INSERT INTO financial_transaction_ledger
        (transaction_id, payload_hash, staging_id, account_id, transaction_timestamp, recorded_at)
    SELECT r.transaction_id, h.payload_hash, r.staging_id, r.account_id, r.transaction_timestamp, now()
    FROM r JOIN h USING (staging_id)
    ORDER BY r.account_id, r.transaction_id
    ON CONFLICT (account_id, transaction_id) DO NOTHING
    RETURNING staging_id
),
p AS (
    INSERT INTO financial_transactions_processed (
        transaction_id, account_id, transaction_timestamp, amount, transaction_type, reference_data,
        batch_id, processed_at, processing_duration_ms, validation_status, risk_score, staging_id,
        ingestion_timestamp, payload_hash)
    SELECT r.transaction_id, r.account_id, r.transaction_timestamp, r.amount, r.transaction_type,
           r.reference_data, r.batch_id, now(), 0, 'valid', 0, r.staging_id, r.ingestion_timestamp,
           h.payload_hash
    FROM r JOIN h USING (staging_id)
    RETURNING staging_id
),
d AS (
    DELETE FROM financial_transactions_staging s USING r
    WHERE s.staging_id = r.staging_id AND s.ingestion_timestamp = r.ingestion_timestamp
    RETURNING s.staging_id
)
SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM p), (SELECT count(*) FROM d)
"""


def _cpu_per_row(db: BenchDB, rows: list[tuple], chunk: int, floor: bool) -> float | None:
    """Server CPU per row (µs) of draining `rows` in chunks: the pipeline's own chunks, or (floor)
    only WRITES_FLOOR. None when this machine cannot read the backend's CPU."""
    _load_staging(db, rows)
    with db.connect() as conn:
        lo, hi = conn.execute(
            "SELECT min(staging_id), max(staging_id) FROM financial_transactions_staging"
        ).fetchone()
        written = [0, 0, 0]

        def writes_only() -> None:
            for first in range(lo, hi + 1, chunk):
                counts = conn.execute(WRITES_FLOOR, {"lo": first, "hi": first + chunk - 1}).fetchone()
                written[:] = [a + b for a, b in zip(written, counts, strict=True)]

        us = _backend_cpu_us(conn, writes_only if floor else lambda: _drain_on(conn, chunk))
        if floor and us is not None and written != [len(rows)] * 3:
            raise RuntimeError(
                f"the writes floor wrote {written} (ledger, processed, deleted) of {len(rows)} rows"
            )
    return None if us is None else us / len(rows)


# One account's transactions, evenly spread over one hour (a merchant at a few per second). The
# fraud window pairs a row with the rows of its account in its window, so this is the case whose
# cost grows with the account's density, not with the chunk.
DENSE_ACCOUNT = """
INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, amount,
    transaction_type, reference_data, batch_id)
SELECT g, 42, timestamptz '2026-12-01 10:00+00' + (g * 3600.0 / %(n)s) * interval '1 second',
       10 + g %% 97, 'payment', NULL, 'dense'
FROM generate_series(1, %(n)s) g
"""


def _dense_account_cpu_per_row(db: BenchDB, n: int, chunk: int) -> float | None:
    """Server CPU per row (µs) of draining n rows of one account, all within one hour."""
    with db.connect() as conn:
        conn.execute(RESET_PIPELINE)
        conn.execute(DENSE_ACCOUNT, {"n": n})
        conn.execute("ANALYZE financial_transactions_staging")
        us = _backend_cpu_us(conn, lambda: _drain_on(conn, chunk))
    return None if us is None else us / n


# A real-time feed: event time follows arrival, so each account's last hour of transactions is in
# the fraud window of its next one. P2's own rows advance event time one second per row whatever
# the rate, which keeps every account sparse; a feed of a few hundred rows a second is not. The
# history is processed rows (loaded directly: the window reads the processed table), the feed's
# next seconds are staged and drained.
REAL_TIME_HISTORY = """
INSERT INTO financial_transactions_processed (transaction_id, account_id, transaction_timestamp, amount,
    transaction_type, validation_status, risk_score)
SELECT 1000000000 + g, g %% %(accounts)s,
       timestamptz '2026-12-01 12:00+00' - (g::float8 / %(rate)s) * interval '1 second',
       10 + g %% 97, 'payment', 'valid', 0
FROM generate_series(1, %(n)s) g
"""
REAL_TIME_FEED = """
INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, amount,
    transaction_type, reference_data, batch_id)
SELECT g, g %% %(accounts)s, timestamptz '2026-12-01 12:00+00' + (g::float8 / %(rate)s) * interval '1 second',
       10 + g %% 97, 'payment', NULL, 'real-time'
FROM generate_series(1, %(n)s) g
"""


def _real_time_cpu_per_row(db: BenchDB, accounts: int, rate: int, n: int, chunk: int) -> float | None:
    """Server CPU per row (µs) of draining the next n rows of a feed of `rate` rows/s over
    `accounts` accounts, after an hour of it was processed."""
    with db.connect() as conn:
        conn.execute(RESET_PIPELINE)
        conn.execute(REAL_TIME_HISTORY, {"accounts": accounts, "rate": rate, "n": rate * 3600})
        conn.execute("SELECT financial_fraud_minutes_rebuild()")  # as the chunk would have kept it
        conn.execute(REAL_TIME_FEED, {"accounts": accounts, "rate": rate, "n": n})
        conn.execute("ANALYZE financial_transactions_staging, financial_transactions_processed")
        us = _backend_cpu_us(conn, lambda: _drain_on(conn, chunk))
    return None if us is None else us / n


def p2_process(db: BenchDB, quick: bool) -> Result:
    n = 10_000 if quick else 200_000
    n_base = 300 if quick else 5_000  # the row-by-row baseline's rate does not improve with size
    chunk = 5_000 if quick else 10_000
    rows = staging_rows(n)
    _install_baseline(db)

    def one_worker() -> float:
        _load_staging(db, rows)
        seconds = timed(lambda: _drain(db.dsn, chunk))
        return n / seconds

    def two_workers() -> float:
        _load_staging(db, rows)
        seconds = timed(lambda: _drain_parallel(db.dsn, chunk, 2))
        return n / seconds

    def baseline() -> float:
        with db.connect() as conn:
            conn.execute(
                "TRUNCATE spec_baseline.financial_transactions_staging, "
                "spec_baseline.financial_transactions_processed"
            )
            cols = ", ".join(STAGING_COLUMNS)
            conn.execute(
                f"INSERT INTO spec_baseline.financial_transactions_staging ({cols}) "
                f"SELECT {cols} FROM financial_transactions_staging ORDER BY staging_id LIMIT %s",
                (n_base,),
            )
            conn.execute("ANALYZE spec_baseline.financial_transactions_staging")
            seconds = timed(
                lambda: conn.execute("SELECT * FROM spec_baseline.process_financial_batch(%s)", (n_base,))
            )
            got = conn.execute(
                "SELECT count(*) FROM spec_baseline.financial_transactions_staging "
                "WHERE processing_status = 'processed'"
            ).fetchone()[0]
        return got / seconds

    # Interleaved rounds (one worker, two workers, baseline), not three of each in a row: on a shared
    # machine the load drifts within a run, and a ratio of medians taken minutes apart measures the
    # drift as much as the code. The baseline copies the rows the round's two-worker run loaded.
    rounds = [(one_worker(), two_workers(), baseline()) for _ in range(3)]
    rate1 = statistics.median(r[0] for r in rounds)
    rate2 = statistics.median(r[1] for r in rounds)
    base = statistics.median(r[2] for r in rounds)
    ratio = rate1 / base
    scaling = rate2 / rate1
    # Where one worker stands against its floor: server CPU per row of the pipeline's chunk and of
    # the writes alone (WRITES_FLOOR), beside the time per row that 40x allows for everything.
    cpu = {
        "chunk": _cpu_per_row(db, rows, chunk, floor=False),
        "writes_floor": _cpu_per_row(db, rows, chunk, floor=True),
        "allowed_at_40x": 1e6 / (40 * base),
    }
    dense_rows = 5_000 if quick else 20_000
    cpu[f"one_account_{dense_rows}_rows_in_an_hour"] = _dense_account_cpu_per_row(db, dense_rows, chunk)
    feed_rate = 100 if quick else 200
    cpu[f"real_time_feed_{feed_rate}_rows_s_100_accounts"] = _real_time_cpu_per_row(
        db, 100, feed_rate, 2_000 if quick else 10_000, chunk
    )
    return Result(
        id="P2",
        what=f"process {n:,} staged rows (validate + score + move), chunks of {chunk:,}",
        value=rate1,
        baseline=base,
        ratio=ratio,
        target=">= 40x with 1 worker; 2 workers >= 1.3x one",
        ok=ratio >= 40 and scaling >= 1.3,
        unit="rows/s",
        details={
            "rows": n,
            "baseline_rows": n_base,
            "two_workers_rows_s": rate2,
            "two_vs_one": scaling,
            # per round: one worker, two workers, baseline (rows/s); the spread says how noisy the box was
            "rounds": [[round(x) for x in r] for r in rounds],
            # µs per row; None: the server's backends are not visible in this machine's /proc
            "cpu_us_per_row": {k: None if v is None else round(v, 1) for k, v in cpu.items()},
        },
    )


P3_SLA_MS = 1000


def _offer(db: BenchDB, rate: int, seconds: int) -> dict:
    """Offer a steady load (a COPY of rate/10 rows every 100 ms) while two worker loops run; latency
    per row is processed_at - ingestion_timestamp (the loader's transaction start, so it includes the
    COPY). `held`: p99 within the SLA, no growing backlog, and the loader kept up its rate."""
    per_tick = rate // 10
    stop = threading.Event()
    backlog_samples: list[int] = []

    def worker() -> None:
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            while not stop.is_set():
                row = conn.execute(
                    "SELECT claimed_count FROM process_financial_batch_detail(5000)"
                ).fetchone()
                if not row or row[0] == 0:
                    time.sleep(0.01)

    # Every tick's rows are rendered to CSV before the clock starts: the loader stands for clients on
    # other machines, so its Python work must not take CPU from the workers on this shared box.
    cols = ", ".join(STAGING_COLUMNS)
    ticks = [
        pg_text_frame(staging_frame(per_tick, offset=i * per_tick)).write_csv(include_header=False)
        for i in range(seconds * 10 + 10)
    ]
    with db.connect() as conn:
        conn.execute(RESET_PIPELINE)
    # Each probe starts as the benchmark does: the previous probe's dirty buffers flushed and the
    # machine quiet. A probe right after an unheld one otherwise paid for its gigabytes of WAL (a
    # checkpoint forced by max_wal_size) and its autovacuum.
    before = settle(db.admin_dsn)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    offered = 0
    try:
        copy_sql = f"COPY financial_transactions_staging ({cols}) FROM STDIN (FORMAT csv)"
        with db.connect() as conn, conn.cursor() as cur:
            started = time.perf_counter()
            tick = 0
            while time.perf_counter() - started < seconds and tick < len(ticks):
                with conn.transaction():
                    with cur.copy(copy_sql) as copy:
                        copy.write(ticks[tick])
                    arrival.staged(cur, per_tick, source="bench")
                offered += per_tick
                tick += 1
                if tick % 10 == 0:
                    backlog_samples.append(_pending(conn))
                sleep = started + tick * 0.1 - time.perf_counter()
                if sleep > 0:
                    time.sleep(sleep)
            elapsed = time.perf_counter() - started
        deadline = time.monotonic() + 60
        with db.connect() as conn:
            while time.monotonic() < deadline:
                if _pending(conn) == 0:
                    break
                time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    with db.connect() as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM processed_at - ingestion_timestamp) * 1000) AS p, count(*) AS n "
            "FROM financial_transactions_staging WHERE processing_status = 'processed'"
        ).fetchone()
    p50, p95, p99 = row[0]
    half = len(backlog_samples) // 2
    growing = bool(backlog_samples) and half > 0 and min(backlog_samples[half:]) > max(backlog_samples[:half])
    achieved = offered / elapsed
    return {
        "offered": rate,  # the rate asked for; offered_rows_s is what the loader achieved
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "rows": row[1],
        "offered_rows_s": achieved,
        "pending_samples": backlog_samples,
        "before": before,
        "held": p99 is not None and p99 < P3_SLA_MS and not growing and achieved >= 0.9 * rate,
    }


def p3_latency(db: BenchDB, quick: bool) -> Result:
    """P3: the target's offered rate for a minute; when it does not hold, the highest rate that does,
    found by halving the interval between 0 and the target: what an operator sizes by, and how far
    short the target is. Each probe offers its rate as long as the target run (the history a chunk
    scores against grows with the rows offered, so a shorter probe would flatter the rate)."""
    rate = 10_000 if quick else 50_000
    seconds = 5 if quick else 60
    run = _offer(db, rate, seconds)
    probes: list[dict] = []
    held_at = rate if run["held"] else 0
    if not run["held"]:
        lo, hi = 0, rate
        for _ in range(1 if quick else 3):
            mid = (lo + hi) // 2000 * 1000
            probe = _offer(db, mid, seconds)
            probes.append({k: probe[k] for k in ("offered", "offered_rows_s", "p99_ms", "held", "before")})
            lo, hi = (mid, hi) if probe["held"] else (lo, mid)
        held_at = lo
    lowest = min([rate] + [p["offered"] for p in probes])
    held = f"held up to {held_at:,} rows/s" if held_at else f"held at no rate down to {lowest:,} rows/s"
    return Result(
        id="P3",
        what=f"staging -> processed latency p99 at {rate:,} rows/s offered for {seconds} s, "
        f"2 workers ({held})",
        value=run["p99_ms"],
        baseline=None,
        ratio=None,
        target="p99 < 1 s, no growing backlog",
        ok=run["held"],
        unit="ms",
        details={
            **{k: v for k, v in run.items() if k != "held"},
            # the highest offered rate (rows/s) that held: the target's own, or the best probe's
            "held_rows_s": held_at,
            "probes": probes,
        },
    )


def _pending(conn: psycopg.Connection) -> int:
    """The pending rows, from the maintained counts the console reads: counting them in staging took
    the loader's connection 50-150 ms a second once the backlog grew, which lowered the rate it
    offered and took CPU from the workers it was measuring."""
    return int(ops_pipeline.open_rows(conn).get("pending", {}).get("rows") or 0)


def p4_monitor(db: BenchDB, quick: bool) -> Result:
    """The monitor with N rows in staging: the rollup view vs the spec's view over the same rows."""
    n = 200_000 if quick else 10_000_000
    _install_baseline(db)
    with db.connect() as conn:
        conn.execute(RESET_PIPELINE)
        # N processed rows ingested over the last hour, in both schemas (server-side, no client cost)
        for schema, extra_col, extra_val in (
            ("public", ", processed_at", ", now()"),
            ("spec_baseline", "", ""),
        ):
            conn.execute(
                f"INSERT INTO {schema}.financial_transactions_staging (transaction_id, account_id, "
                "transaction_timestamp, amount, transaction_type, ingestion_timestamp, processing_status, "
                f"processing_duration_ms{extra_col}) "
                "SELECT g, g %% 5000, now() - interval '2 hours', g %% 1000, 'payment', "
                f"now() - (g %% 3600) * interval '1 second', 'processed', g %% 1500{extra_val} "
                "FROM generate_series(1, %s) g",
                (n,),
            )
        arrival.select_counted(conn, "true", source="bench")  # the product's rows, as a loader counts them
        # the latency histogram the chunks would have written (the status counts came from the arrival)
        conn.execute(
            "INSERT INTO financial_latency_rollup (minute_bucket, bucket_lower_ms, bucket_upper_ms, "
            "row_count) "
            "SELECT m.minute_bucket, b.lo, b.hi, 100 FROM financial_processing_rollup m "
            "CROSS JOIN (VALUES (0, 100), (100, 500), (500, 1000), (1000, 1500)) b(lo, hi)"
        )
        conn.execute(
            "UPDATE financial_processing_rollup SET latency_count = processed_count, "
            "latency_sum_ms = processed_count * 700, latency_max_ms = 1499"
        )
        conn.execute("VACUUM ANALYZE financial_transactions_staging")
        conn.execute("VACUUM ANALYZE spec_baseline.financial_transactions_staging")

        def query(sql: str) -> float:
            def once() -> float:
                return timed(lambda: conn.execute(sql).fetchall())

            once()  # warm the cache for both
            return median_of(once, runs=5)

        ours = query("SELECT * FROM financial_processing_monitor")
        spec = query("SELECT * FROM spec_baseline.financial_processing_monitor")
        minutes = len(conn.execute("SELECT * FROM financial_processing_monitor").fetchall())
    ratio = spec / ours
    return Result(
        id="P4",
        what=f"monitor query with {n:,} rows in staging",
        value=ours * 1000,
        baseline=spec * 1000,
        ratio=ratio,
        target=">= 100x",
        ok=ratio >= 100,
        unit="ms",
        details={"rows": n, "minutes_returned": minutes},
    )


BENCHMARKS = [p1_ingest, p2_process, p3_latency, p4_monitor]

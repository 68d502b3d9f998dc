"""A transaction's fraud score depends on the data, not on how rows were chunked nor on which worker
claimed them (issue 14): its history is what arrived before it (lower staging_id), not whatever shared
its chunk. Before the fix an out-of-order arrival scored 0 alone and 40 in a chunk with its predecessor
(the explicit example); and with several workers a row was scored while an earlier arrival of its
account sat in another worker's uncommitted chunk (the claim now takes whole account buckets).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import psycopg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from opsconsole.pipeline.arrival import insert_counted

BASE = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)  # a Monday morning: business hours

rows_strategy = st.lists(
    st.tuples(
        st.integers(1, 3),  # account
        st.integers(0, 90),  # event time, minutes after BASE, in any arrival order
        st.sampled_from([Decimal(10), Decimal(100), Decimal(250)]),
    ),
    min_size=2,
    max_size=12,
)


def _stage(conn: psycopg.Connection, rows, base_id: int) -> None:
    with conn.cursor() as cur:
        for i, (account, minutes, amount) in enumerate(rows):
            insert_counted(
                cur,
                "INSERT INTO financial_transactions_staging (transaction_id, account_id, "
                "transaction_timestamp, amount, transaction_type) VALUES (%s, %s, %s, %s, 'payment')",
                (base_id + i, base_id + account, BASE + dt.timedelta(minutes=minutes), amount),
            )


def _read_scores(conn: psycopg.Connection, base_id: int) -> list:
    return [
        r[0]
        for r in conn.execute(
            "SELECT risk_score FROM financial_transactions_processed "
            "WHERE transaction_id BETWEEN %s AND %s ORDER BY transaction_id",
            (base_id, base_id + 999),
        )
    ]


# Dense accounts' windows are counted by a moving frame, the others' by a slot join
# (financial_apply_chunk); this forces the frame for every account.
FRAME_ALWAYS = "-c opsconsole.fraud_frame_min_rows=0"


def _scores(dsn: str, rows, chunk: int, run: int, options: str = "") -> list:
    """Stage the rows (accounts and ids of this run only), process them in chunks of `chunk`, return
    the scores in arrival order."""
    with psycopg.connect(dsn, autocommit=True, options=options) as conn:
        base_id = run * 1000
        _stage(conn, rows, base_id)
        while conn.execute(
            "SELECT claimed_count FROM process_financial_batch_detail(%s)", (chunk,)
        ).fetchone()[0]:
            pass
        return _read_scores(conn, base_id)


def _scores_concurrently(dsn: str, rows, chunk: int, workers: int, run: int, options: str = "") -> list:
    """As _scores, with `workers` real connections claiming at the same time. Each holds its chunk
    uncommitted for a moment (a slow chunk), so the others claim and score while it is in flight."""
    base_id = run * 1000
    with psycopg.connect(dsn, autocommit=True) as conn:
        _stage(conn, rows, base_id)
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def owed(conn: psycopg.Connection) -> int:
        with conn.transaction():  # ends here: an open transaction would keep this worker's claims
            return conn.execute(
                "SELECT count(*) FROM financial_transactions_staging WHERE transaction_id BETWEEN %s AND %s "
                "AND processing_status IN ('pending', 'failed')",
                (base_id, base_id + 999),
            ).fetchone()[0]

    def work() -> None:
        try:
            with psycopg.connect(dsn, options=options) as conn:
                conn.commit()
                start.wait(10)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    with conn.transaction():
                        claimed = conn.execute(
                            "SELECT claimed_count FROM process_financial_batch_detail(%s)", (chunk,)
                        ).fetchone()[0]
                        if claimed:
                            time.sleep(0.05)  # the chunk stays in flight while the others claim
                    if not claimed:
                        if not owed(conn):
                            return
                        time.sleep(0.01)
                left = conn.execute(
                    "SELECT staging_id, processing_status, error_code, error_message "
                    "FROM financial_transactions_staging WHERE transaction_id BETWEEN %s AND %s "
                    "AND processing_status IN ('pending', 'failed')",
                    (base_id, base_id + 999),
                ).fetchall()
                raise AssertionError(f"the workers did not drain the staged rows within 60 s: {left}")
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _read_scores(conn, base_id)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(rows=[(1, 5, Decimal(100)), (1, 0, Decimal(10))])  # the later event arrives first
@given(rows=rows_strategy)
def test_the_score_does_not_depend_on_the_chunk_size(db_dsn, rows) -> None:
    run = _scores.__dict__.setdefault("run", [0])
    run[0] += 4
    one_by_one = _scores(db_dsn, rows, 1, run[0])
    in_threes = _scores(db_dsn, rows, 3, run[0] + 1)
    all_at_once = _scores(db_dsn, rows, 1000, run[0] + 2)
    framed_in_threes = _scores(db_dsn, rows, 3, run[0] + 3, FRAME_ALWAYS)
    assert one_by_one == in_threes == all_at_once == framed_in_threes


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@example(rows=[(1, 0, Decimal(100)), (1, 5, Decimal(10)), (1, 10, Decimal(250))])  # one account, in order
@given(rows=rows_strategy)
def test_the_score_does_not_depend_on_the_worker_or_the_number_of_workers(db_dsn, rows) -> None:
    run = _scores.__dict__.setdefault("run", [0])
    run[0] += 1
    reference = _scores(db_dsn, rows, 1000, run[0])
    for workers in (1, 2, 3):
        for chunk in (1, 3, 1000):
            run[0] += 1
            # chunks of 3: every account's windows by the moving frame
            options = FRAME_ALWAYS if chunk == 3 else ""
            got = _scores_concurrently(db_dsn, rows, chunk, workers, run[0], options)
            assert got == reference, (workers, chunk)

"""financial_fraud_minutes: the chunk keeps it exactly, and a real-time feed's chunk reads the whole
minutes of its windows from it instead of the processed rows (docs/pipeline.md, eleventh session)."""

from __future__ import annotations

import datetime as dt
import threading
import time

import psycopg

from opsconsole.pipeline.arrival import insert_counted

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)

# A feed whose event time follows arrival: `accounts` accounts, one row each every `every` seconds.
FEED = (
    "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
    "amount, transaction_type) "
    "SELECT %(first)s + g, g %% %(accounts)s, "
    "%(t0)s::timestamptz + (%(first)s + g) * %(step)s * interval '1 second', "
    "%(base)s + (g * 7919) %% 500, 'payment' FROM generate_series(1, %(n)s) g"
)


def _feed(conn, first: int, n: int, accounts: int = 3, step: float = 2.0, base: int = 10) -> None:
    insert_counted(
        conn, FEED, {"first": first, "n": n, "accounts": accounts, "step": step, "t0": T0, "base": base}
    )


def _drain(conn, chunk: int) -> None:
    while conn.execute("SELECT claimed_count FROM process_financial_batch_detail(%s)", (chunk,)).fetchone()[
        "claimed_count"
    ]:
        pass


def _minutes(conn) -> set[tuple]:
    return {
        tuple(r.values())
        for r in conn.execute(
            "SELECT account_id, minute, row_count, amount_abs_sum, max_staging_id "
            "FROM financial_fraud_minutes"
        ).fetchall()
    }


def test_the_chunk_keeps_the_minutes_a_rebuild_would_write(conn):
    """Chunks of every size upsert the minutes of the rows they process: after a drain the table is
    what a rebuild from the processed rows writes, row for row (count, sum, latest arrival)."""
    _feed(conn, 0, 600)
    # rows that fail (no account) are not processed and must not be counted
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type) VALUES (99999, 1, %s, 5, 'bogus')",
        (T0 + dt.timedelta(minutes=3),),
    )
    for chunk in (1, 7, 50, 1000):
        _drain(conn, chunk)
        _feed(conn, 600 + chunk * 10, 40)
    _drain(conn, 1000)
    kept = _minutes(conn)
    processed = conn.execute("SELECT count(*) AS n FROM financial_transactions_processed").fetchone()["n"]
    assert sum(m[2] for m in kept) == processed == 600 + 4 * 40
    conn.execute("SELECT financial_fraud_minutes_rebuild()")
    assert _minutes(conn) == kept


def _processed_rows_read(conn) -> int:
    """Processed rows this transaction read, over every partition (pg_stat_xact_*: this transaction's
    own counts, no flush needed)."""
    return conn.execute(
        "SELECT coalesce(sum(s.seq_tup_read + s.idx_tup_fetch), 0)::bigint AS n "
        "FROM pg_partition_tree('financial_transactions_processed') t "
        "JOIN pg_stat_xact_user_tables s ON s.relid = t.relid"
    ).fetchone()["n"]


def test_a_real_time_feed_reads_whole_minutes_from_the_table(conn):
    """Three accounts, a row each every 6 s for an hour and a half, processed; then the next rows.
    Reading every row of their one-hour windows fetches about 600 processed rows per account; with
    the minutes, about the two edge minutes' worth. Scores are equal either way."""
    _feed(conn, 0, 2700)  # 90 minutes at one row every 2 s over 3 accounts
    _drain(conn, 1000)
    _feed(conn, 2700, 30)
    reads, scores = {}, {}
    for minutes in ("off", "on"):
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT set_config('opsconsole.fraud_minutes', %s, true)", (minutes,))
            # the index range scans a large table gets (at this size a sequential scan is cheaper,
            # and reads everything either way)
            conn.execute("SET LOCAL enable_seqscan = off")
            before = _processed_rows_read(conn)
            done = conn.execute("SELECT * FROM process_financial_batch_detail(1000)").fetchone()
            reads[minutes] = _processed_rows_read(conn) - before
            scores[minutes] = conn.execute(
                "SELECT transaction_id, risk_score FROM financial_transactions_processed "
                "WHERE transaction_id > 2700 ORDER BY transaction_id"
            ).fetchall()
            assert done["processed_count"] == 30
    assert scores["on"] == scores["off"]
    assert len({r["risk_score"] for r in scores["on"]}) > 1  # the scores differ: the window counts
    assert reads["off"] >= 3 * 550
    assert reads["on"] < reads["off"] / 5, reads


def test_a_minute_holding_a_later_arrival_is_read_row_by_row(conn):
    """A row that waits (a retry's backoff) while later arrivals are processed has them in its
    window: the minutes that hold them are read raw for it (their latest arrival is after it), so
    its score counts only what arrived before it, as the row-by-row reference does."""
    _feed(conn, 0, 900, accounts=1, step=4.0)  # one account, a row every 4 s for an hour
    # and rows 2 s after each of the later rows below, arriving before the waiting row: its stale
    # minutes hold rows it must count, anywhere in the minute, beside rows it must not
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type) "
        "SELECT 60000 + g, 0, %s::timestamptz + g * interval '4 seconds', 3000 + g, 'payment' "
        "FROM generate_series(0, 59) g",
        (T0 + dt.timedelta(seconds=3602),),
    )
    _drain(conn, 1000)
    # the waiting row arrives first of what follows, and is not due for an hour
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, next_attempt_at) "
        "VALUES (50000, 0, %s, 77, 'payment', now() + interval '1 hour')",
        (T0 + dt.timedelta(seconds=4 * 960),),
    )
    # arrive after it and are processed before it; amounts far from the hour's, so that counting
    # them would move its score (the count alone is capped)
    _feed(conn, 900, 60, accounts=1, step=4.0, base=20000)
    _drain(conn, 1000)
    conn.execute(
        "UPDATE financial_transactions_staging SET next_attempt_at = now() WHERE transaction_id = 50000"
    )
    _drain(conn, 1000)
    got = conn.execute(
        "SELECT risk_score, account_id, amount, transaction_timestamp, transaction_type "
        "FROM financial_transactions_processed WHERE transaction_id = 50000"
    ).fetchone()
    minutes = conn.execute(
        "SELECT count(*) AS n FROM financial_fraud_minutes WHERE max_staging_id > "
        "(SELECT staging_id FROM financial_transactions_staging WHERE transaction_id = 50000) "
        "AND minute < date_bin('1 minute', %s::timestamptz, timestamptz 'epoch')",
        (got["transaction_timestamp"],),
    ).fetchone()["n"]
    assert minutes >= 3  # whole minutes of its window hold the later rows

    def reference() -> object:
        return conn.execute(
            "SELECT detect_fraud_indicators(%s, %s, %s, %s) AS s",
            (got["account_id"], got["amount"], got["transaction_timestamp"], got["transaction_type"]),
        ).fetchone()["s"]

    with conn.transaction(force_rollback=True):
        with_later = reference()
    # the reference: what arrived before it is the first 900 rows, not the 60 after it
    conn.execute("DELETE FROM financial_transactions_processed WHERE transaction_id BETWEEN 901 AND 960")
    assert got["risk_score"] == reference() != with_later


def test_a_rebuild_while_a_chunk_writes_minutes_waits_for_it_and_misses_nothing(conn, db_dsn):
    """An admin rebuilds while workers run: a chunk that has written new minutes and not committed
    holds the rebuild until it commits, and the rebuild then sums its rows. (Without the lock the
    rebuild, not seeing the chunk's rows, writes the same new minute and fails on its key.)"""
    _feed(conn, 0, 300)
    _drain(conn, 1000)
    _feed(conn, 300, 90)  # minutes no chunk wrote yet
    with psycopg.connect(db_dsn) as chunk:  # a transaction, held open after the chunk
        assert chunk.execute(
            "SELECT processed_count FROM process_financial_batch_detail(1000)"
        ).fetchone() == (90,)
        done: dict[str, object] = {}

        def rebuild() -> None:
            try:
                with psycopg.connect(db_dsn, autocommit=True) as admin:
                    done["minutes"] = admin.execute("SELECT financial_fraud_minutes_rebuild()").fetchone()[0]
            except psycopg.Error as exc:
                done["error"] = exc

        t = threading.Thread(target=rebuild)
        t.start()
        deadline = time.monotonic() + 10
        while not conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%%financial_fraud_minutes_rebuild%%'"
        ).fetchone()["n"]:
            assert time.monotonic() < deadline and t.is_alive(), done
            time.sleep(0.05)
        chunk.commit()
        t.join(10)
    assert "error" not in done, done
    kept = _minutes(conn)
    assert done["minutes"] == len(kept)
    assert sum(m[2] for m in kept) == 390
    check = conn.execute(
        "SELECT mismatch_count FROM reconcile_financial_pipeline() WHERE check_name = 'fraud_minutes_differ'"
    ).fetchone()
    assert check["mismatch_count"] == 0

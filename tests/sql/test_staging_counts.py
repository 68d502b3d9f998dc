"""financial_staging_counts (0018, 32_staging_counts.sql) stays equal to a real count of staging rows
by state after a mixed workload: arrivals on several connections, processing with retryable failures
and dead letters, retries (of dead letters too, one in a minute the rollups no longer keep), a purge
that drops whole days and folds the counts of the backends that are gone."""

from __future__ import annotations

import psycopg
import pytest

from opsconsole.ops import pipeline as ops
from opsconsole.pipeline.arrival import insert_counted

OPEN = ("pending", "failed", "dead_letter")


@pytest.fixture
def plain(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as c:
        yield c


def real(conn) -> dict[str, int]:
    counts = dict.fromkeys(OPEN, 0)
    for status, n in conn.execute(
        "SELECT processing_status, count(*) FROM financial_transactions_staging GROUP BY 1"
    ).fetchall():
        if status in counts:
            counts[status] = n
    counts["processed"] = conn.execute("SELECT count(*) FROM financial_transactions_processed").fetchone()[0]
    return counts


def maintained(conn) -> dict[str, int]:
    row = conn.execute(
        "SELECT pending, failed, dead_letter, processed FROM financial_staging_totals"
    ).fetchone()
    return dict(zip((*OPEN, "processed"), (int(v) for v in row), strict=True))


def stage(dsn: str, first: int, n: int, *, ago: str, type_: str = "payment", future: bool = False) -> None:
    """n rows from a connection of their own (so each batch of arrivals has its own counts row),
    ingested `ago` before now; an unknown type dead-letters at once, a future timestamp fails and is
    retried with backoff."""
    with psycopg.connect(dsn, autocommit=True) as c:
        insert_counted(
            c,
            "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
            "amount, transaction_type, batch_id, ingestion_timestamp) "
            "SELECT g, g %% 7, CASE WHEN %s THEN now() + interval '2 days' ELSE now() - %s::interval END, "
            "10 + g %% 50, %s, 'counts', now() - %s::interval "
            "FROM generate_series(%s::bigint, %s::bigint) g",
            (future, ago, type_, ago, first, first + n - 1),
        )


def test_counts_equal_a_real_count_after_a_mixed_workload(db_dsn, plain):
    stage(db_dsn, 1, 400, ago="3 days")  # a day the purge drops, in a minute the rollups trim
    stage(db_dsn, 1001, 30, ago="3 days", type_="no-such-type")  # dead letters there
    stage(db_dsn, 2001, 200, ago="5 minutes")
    stage(db_dsn, 3001, 25, ago="1 minute", type_="no-such-type")
    stage(db_dsn, 4001, 40, ago="1 minute", future=True)  # retryable: failed, then retried
    stage(db_dsn, 1, 5, ago="2 minutes")  # the same ids, another payload: dead letters (conflict)
    assert maintained(plain) == real(plain)

    with psycopg.connect(db_dsn, autocommit=True) as worker:
        ops.process_batch(worker, 10_000)
    counts = real(plain)
    assert counts["dead_letter"] == 60 and counts["failed"] == 40 and counts["processed"] == 600
    assert maintained(plain) == counts

    plain.execute("UPDATE financial_pipeline_settings SET rollup_retention = interval '2 days'")
    # a retry of failed rows (they fail again: still in the future) and of every dead letter, among
    # them rows of a minute older than the rollup retention (the rollups drop that delta)
    ops.retry(plain, all_rows=True, include_dead_letter=True, reason="test")
    assert maintained(plain) == real(plain) and real(plain)["pending"] == 100
    with psycopg.connect(db_dsn, autocommit=True) as worker:
        ops.process_batch(worker, 10_000)
    assert maintained(plain) == real(plain)
    ops.retry(plain, error_code="unknown_type", include_dead_letter=True, reason="test")
    stage(db_dsn, 5001, 10, ago="3 days")  # pending in the day the purge drops: kept in DEFAULT

    before = plain.execute("SELECT count(*) FROM financial_staging_counts").fetchone()[0]
    done = ops.purge(plain, "1 day")
    assert done["partitions_dropped"] and done["rollup_rows_deleted"] > 0
    after = plain.execute("SELECT count(*) FROM financial_staging_counts").fetchone()[0]
    assert after < before  # the arrivals' and workers' rows (their connections closed) were folded
    assert maintained(plain) == real(plain)
    assert real(plain)["pending"] == 65 and real(plain)["dead_letter"] == 5

    with psycopg.connect(db_dsn, autocommit=True) as worker:
        ops.process_batch(worker, 10_000)
    counts = real(plain)
    assert maintained(plain) == counts and counts["dead_letter"] == 60 and counts["pending"] == 0


def test_backlog_reads_over_failed_rows_are_reread_only_when_the_counts_move(db_dsn, plain):
    stage(db_dsn, 1, 20, ago="1 minute", type_="no-such-type")
    with psycopg.connect(db_dsn, autocommit=True) as worker:
        ops.process_batch(worker, 10_000)
    first = ops.failed_by_code(plain)
    assert [(r["error_code"], r["dead_letter"]) for r in first] == [("unknown_type", 20)]
    assert ops.failed_by_code(plain) is first  # nothing moved: not read again
    stage(db_dsn, 101, 5, ago="1 minute", type_="no-such-type")
    with psycopg.connect(db_dsn, autocommit=True) as worker:
        ops.process_batch(worker, 10_000)
    assert [r["dead_letter"] for r in ops.failed_by_code(plain)] == [25]
    ops.retry(plain, error_code="unknown_type", include_dead_letter=True, reason="test")
    assert ops.failed_by_code(plain) == []
    assert ops.open_rows(plain, failed_detail=True)["pending"]["rows"] == 25


def test_demo_history_and_parking_keep_the_counts_exact(db_dsn, plain):
    """The demo's backfilled hour writes rollup minutes with no staging rows behind them: it must not
    move the counts of staging rows (it did, through financial_rollup_apply: the demo's Backlog showed
    7,240 failed rows where 69 existed). Parking and unparking dead letters keep them exact too."""
    from opsconsole.datagen import scenarios

    stage(db_dsn, 1, 50, ago="2 minutes")
    stage(db_dsn, 1001, 12, ago="2 minutes", type_="no-such-type")
    ops.process_batch(plain, batch_size=1000)
    before = maintained(plain)
    assert before == real(plain) and before["dead_letter"] == 12
    result = scenarios.play_history(plain, rate=200, seed=1)
    assert result["minutes_written"] > 50  # the backfill did write the hour's rollups
    written = "SELECT sum(failed_count), sum(dead_letter_count) FROM financial_processing_rollup"
    assert all(v > 0 for v in plain.execute(written).fetchone())
    assert maintained(plain) == before == real(plain)
    assert ops.park(plain, filter_text="no-such-type") == 12
    assert maintained(plain) == real(plain) and maintained(plain)["dead_letter"] == 0
    assert ops.unpark(plain, filter_text="no-such-type") == 12
    assert maintained(plain) == real(plain) and maintained(plain)["dead_letter"] == 12


def test_a_loader_that_skips_the_arrival_call_shows_as_drift(plain):
    # Arrivals are counted by the loaders' call (opsconsole.pipeline.arrival), not by a trigger. The
    # call counts rows by their own minute and state; a plain INSERT is not counted, and reconcile
    # says so rather than the counts drifting silently.
    insert_counted(
        plain,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type, ingestion_timestamp, processing_status, error_code)"
        " VALUES (1, 1, now(), 10, 'payment', now() - interval '3 minutes', 'pending', NULL),"
        " (2, 1, now(), 10, 'bogus', now() - interval '3 minutes', 'dead_letter', 'unknown_type'),"
        " (3, 1, now(), 10, 'payment', now(), 'pending', NULL)",
    )
    assert maintained(plain) == real(plain)
    minutes = plain.execute(
        "SELECT total_transactions, pending_count, dead_letter_count FROM financial_processing_rollup"
        " ORDER BY minute_bucket"
    ).fetchall()
    assert minutes == [(2, 1, 1), (1, 1, 0)]

    def drift() -> int:
        rows = plain.execute(
            "SELECT check_name, mismatch_count FROM reconcile_financial_pipeline()"
        ).fetchall()
        return dict(rows)["staging_counts_drift"]

    assert drift() == 0
    plain.execute(
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type) VALUES (4, 1, now(), 10, 'payment')"
    )
    assert maintained(plain)["pending"] == real(plain)["pending"] - 1
    assert drift() == 1
    # a state changed by hand is drift too; the recount corrects both, and is audited
    plain.execute(
        "UPDATE financial_transactions_staging SET processing_status = 'failed' WHERE transaction_id = 2"
    )
    assert drift() == 3
    fixed = ops.recount(plain)
    assert fixed == {"pending_delta": 1, "failed_delta": 1, "dead_letter_delta": -1}
    assert drift() == 0 and maintained(plain) == real(plain)
    assert ops.recount(plain) == dict.fromkeys(fixed, 0)
    audit = plain.execute(
        "SELECT result FROM ops_audit_log WHERE action = 'recount_financial_staging' ORDER BY audit_id"
    ).fetchall()
    assert [r[0] for r in audit] == [fixed, dict.fromkeys(fixed, 0)]


def test_the_arrival_call_refuses_what_is_not_a_count(plain):
    for bad in ("null", '{"total_delta": 5}', '"5"'):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            plain.execute("SELECT financial_staging_arrived(%s::jsonb, NULL)", (bad,))
    # only the arrival keys are read: a latency figure in the counts moves nothing
    plain.execute(
        'SELECT financial_staging_arrived(\'[{"total_delta": 2, "pending_delta": 2,'
        ' "latency_count": 99, "sla_breaches": 99}]\', NULL)'
    )
    row = plain.execute(
        "SELECT sum(total_transactions), sum(latency_count), sum(sla_breaches)"
        " FROM financial_processing_rollup"
    ).fetchone()
    assert tuple(int(v) for v in row) == (2, 0, 0)

"""The fraud window's two ways of counting a row's history (financial_apply_chunk: a moving frame for a
dense account, a slot join for the rest) give the same scores on a Citus coordinator, where the
processed history is read from the shards. The property tests prove them equal on one server; this
proves the frame's statement runs distributed and reads the same history there.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from opsconsole.pipeline.arrival import insert_counted

BASE = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)  # a Monday morning
FRAME_ALWAYS, SLOT_ALWAYS = "0", "999999999"


def _rows(first_account: int) -> list[tuple]:
    """Two dense accounts: a jittered feed, arrivals anywhere in the hour, and equal timestamps."""
    rows = []
    for i in range(240):
        account = first_account + i % 2
        at = {0: i * 15 + (i * 7919) % 11 - 5, 1: (i * 104729) % 3600, 2: (i * 15) - (i * 15) % 60}[i % 3]
        rows.append((account, BASE + dt.timedelta(seconds=at), 10 + (i * 31) % 240))
    return rows


def _scores(dsn: str, first_account: int, frame_min: str) -> list:
    options = f"-c opsconsole.fraud_frame_min_rows={frame_min}"
    with psycopg.connect(dsn, autocommit=True, options=options) as conn:
        # history processed before: in the window of the first rows, loaded without staging
        for account in (first_account, first_account + 1):
            conn.execute(
                "INSERT INTO financial_transactions_processed (transaction_id, account_id, "
                "transaction_timestamp, amount, transaction_type) VALUES (%s, %s, %s, 500, 'payment')",
                (first_account * 1000 + account, account, BASE - dt.timedelta(minutes=20)),
            )
        accounts = [first_account, first_account + 1]
        conn.execute("SELECT financial_fraud_minutes_rebuild(%s::bigint[])", (accounts,))
        for i, (account, ts, amount) in enumerate(_rows(first_account)):
            insert_counted(
                conn,
                "INSERT INTO financial_transactions_staging (transaction_id, account_id, "
                "transaction_timestamp, amount, transaction_type) VALUES (%s, %s, %s, %s, 'payment')",
                (i, account, ts, amount),
            )
        while conn.execute("SELECT claimed_count FROM process_financial_batch_detail(100)").fetchone()[0]:
            pass
        return conn.execute(
            "SELECT transaction_id, account_id - %s, risk_score FROM financial_transactions_processed "
            "WHERE account_id IN (%s, %s) AND transaction_id < 1000 ORDER BY account_id, transaction_id",
            (first_account, first_account, first_account + 1),
        ).fetchall()


def test_the_moving_frame_gives_the_slot_joins_scores_on_citus(citus_dsn):
    framed = _scores(citus_dsn, 101, FRAME_ALWAYS)
    slotted = _scores(citus_dsn, 201, SLOT_ALWAYS)
    assert len(framed) == 240
    # not vacuous: most rows have history (velocity), and the scores vary
    assert sum(1 for r in framed if r[2] >= 10) > 200
    assert len({r[2] for r in framed}) > 20
    assert framed == slotted

"""Regression tests for the two costs profiling found in the chunk (financial_apply_chunk)."""

from __future__ import annotations

import datetime as dt

import pytest

from opsconsole.pipeline.arrival import insert_counted

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)


def test_the_chunk_scores_its_rows_in_one_call(conn):
    """Every function call costs its pinned search_path (a GUC save and restore): the chunk used to
    call the score once per processed row (three times, before the planner was kept from pulling the
    subquery up); it now scores all its rows in one call of financial_fraud_scores."""
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type) "
        "SELECT g, g %% 7, %s::timestamptz + g * interval '1 minute', g * 10, 'payment' "
        "FROM generate_series(1, 60) g",
        (T0,),
    )
    insert_counted(
        conn, "INSERT INTO financial_transactions_staging (transaction_id, account_id) VALUES (NULL, 1)"
    )  # not scored
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'all'")  # SQL functions too
        done = conn.execute("SELECT * FROM process_financial_batch_detail(1000)").fetchone()
        calls = conn.execute(
            "SELECT pg_stat_get_xact_function_calls('financial_fraud_scores'::regproc) AS n"
        ).fetchone()["n"]
    assert (done["processed_count"], done["dead_letter_count"], done["chunk_count"]) == (60, 1, 1)
    assert calls == 1


def test_the_chunk_keeps_generated_columns(conn):
    """The chunk's UPDATE assigns ingestion_timestamp to itself (a planner-side speed fix): the
    ingestion time, its minute and the payload hash stay what they were at arrival."""
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type, reference_data, ingestion_timestamp) VALUES "
        "(1, 1, %(t)s, 10, 'payment', NULL, %(i)s), (2, 1, %(t)s, 10, 'wire', '{\"k\": 1}', %(i)s)",
        {"t": T0, "i": T0 + dt.timedelta(seconds=75)},
    )
    before = conn.execute(
        "SELECT staging_id, ingestion_timestamp, ingestion_minute "
        "FROM financial_transactions_staging ORDER BY staging_id"
    ).fetchall()
    conn.execute("SELECT * FROM process_financial_batch_detail(100)")
    after = conn.execute(
        "SELECT staging_id, ingestion_timestamp, ingestion_minute, processing_status "
        "FROM financial_transactions_staging ORDER BY staging_id"
    ).fetchall()
    assert [r["processing_status"] for r in after] == ["processed", "dead_letter"]
    assert [{k: r[k] for k in before[0]} for r in after] == before
    assert before[0]["ingestion_minute"] == T0 + dt.timedelta(minutes=1)


@pytest.mark.parametrize("frame_min", ["0", "999999999"], ids=["moving frame", "slot join"])
def test_the_window_join_takes_infinite_timestamps(conn, frame_min):
    """The window join pairs rows by time slot (epoch / window width): a row at -infinity has no slot
    (nothing is in its window, it is in no other row's) and one at +infinity is a future timestamp;
    neither may fail the chunk, which would mark its other rows internal_error. The moving frame (a
    dense account's way) orders rows by time and must take them too."""
    conn.execute("SELECT set_config('opsconsole.fraud_frame_min_rows', %s, false)", (frame_min,))
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type) VALUES (1, 1, '-infinity', 10, 'payment'), "
        "(2, 1, 'infinity', 10, 'payment'), (3, 1, %(t)s, 10, 'payment'), (4, 1, %(t2)s, 30, 'payment')",
        {"t": T0, "t2": T0 + dt.timedelta(minutes=30)},
    )
    conn.execute("SELECT * FROM process_financial_batch_detail(100)")
    got = conn.execute(
        "SELECT s.transaction_id, s.processing_status, s.error_code, p.risk_score "
        "FROM financial_transactions_staging s "
        "LEFT JOIN financial_transactions_processed p USING (account_id, transaction_id) ORDER BY 1"
    ).fetchall()
    assert [(r["transaction_id"], r["processing_status"], r["error_code"]) for r in got] == [
        (1, "processed", None),
        (2, "failed", "future_timestamp"),
        (3, "processed", None),
        (4, "processed", None),
    ]
    # row 4's history is row 3 alone (count 1, mean 10): velocity 10 + deviation 30, in business hours
    assert got[3]["risk_score"] == 40


def test_the_chunk_is_planned_for_its_own_rows(conn):
    """A generic plan estimates unnest(p_rows) at 10 rows whatever the chunk holds; PL/pgSQL took one
    after five chunks, and its nested loops paired every late row of a dense account with every other
    (5.5 s a chunk against 0.34 s, docs/pipeline.md). The chunk pins custom plans, whatever the
    session asks for."""
    conn.execute("SET plan_cache_mode = force_generic_plan")
    config = conn.execute(
        "SELECT proconfig FROM pg_proc WHERE oid = 'financial_apply_chunk'::regproc"
    ).fetchone()["proconfig"]
    assert "plan_cache_mode=force_custom_plan" in config
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type) "
        "SELECT g, 1, %s::timestamptz + g * interval '1 second', 10, 'payment' FROM generate_series(1, 40) g",
        (T0,),
    )
    for _ in range(8):  # past the five custom plans after which PL/pgSQL may go generic
        conn.execute("SELECT * FROM process_financial_batch_detail(5)")
    assert (
        conn.execute(
            "SELECT count(*) AS n FROM financial_transactions_processed WHERE account_id = 1"
        ).fetchone()["n"]
        == 40
    )


@pytest.mark.parametrize("generic_max", ["1000", "0"])
def test_a_small_chunks_generic_plan_stays_inside_the_chunk(conn, generic_max):
    """A chunk of up to opsconsole.chunk_generic_max_rows rows switches plan_cache_mode for its own
    statements only: the caller's transaction keeps its own mode after the chunk returns."""
    insert_counted(
        conn,
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp, "
        "amount, transaction_type) "
        "SELECT g, g %% 3, %s::timestamptz + g * interval '1 second', 10, 'payment' "
        "FROM generate_series(1, 20) g",
        (T0,),
    )
    with conn.transaction():
        conn.execute("SELECT set_config('opsconsole.chunk_generic_max_rows', %s, true)", (generic_max,))
        conn.execute("SET LOCAL plan_cache_mode = auto")
        done = conn.execute("SELECT * FROM process_financial_batch_detail(100)").fetchone()
        mode = conn.execute("SELECT current_setting('plan_cache_mode') AS m").fetchone()["m"]
    assert done["processed_count"] == 20
    assert mode == "auto"

"""Property tests for the pipeline: the set-based score equals the row-by-row reference, and every
staged row ends in exactly one state, as predicted from the data alone.

Each example runs inside a transaction that is rolled back, so one database serves all examples.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opsconsole.pipeline.arrival import insert_counted
from tests.orders import add_orders

UTC = dt.UTC
BASE = dt.datetime(2025, 1, 3, 20, 0, tzinfo=UTC)  # Friday evening: spans off-hours and the weekend
ZONES = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Asia/Kathmandu"]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

row_strategy = st.tuples(
    st.integers(1, 30),  # transaction_id (repeats: replays and conflicts)
    st.integers(1, 2),  # account_id
    # minutes after BASE: dense enough that windows overlap, with the window's edges well represented
    st.one_of(st.integers(0, 150), st.sampled_from([0, 1, 30, 59, 60, 61, 120])),
    st.sampled_from([0, 0, 30]),  # seconds: equal timestamps happen
    st.one_of(
        st.sampled_from([Decimal(10), Decimal(100), Decimal("-25.5"), Decimal(60000)]),
        st.decimals(min_value=-1000, max_value=120000, places=2),
    ),
)


def _insert(conn, rows) -> list[int]:
    ids = []
    for txid, account, ts, amount, ttype, ref in rows:
        ids += insert_counted(
            conn,
            "INSERT INTO financial_transactions_staging (transaction_id, account_id, "
            "transaction_timestamp, amount, transaction_type, reference_data) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (txid, account, ts, amount, ttype, ref),
        )
    return ids


@PROPS
@given(
    rows=st.lists(
        st.tuples(row_strategy, st.sampled_from(["payment"] * 5 + ["refund", "bogus"])),
        min_size=3,
        max_size=30,
    ),
    zone=st.sampled_from(ZONES),
    chunk_size=st.integers(1, 8),
    # the chunk pairs rows by time slots of the window's width: widths that do and do not divide an hour
    window=st.sampled_from(["1 hour", "1 hour", "17 minutes", "1 day"]),
    # winners of one account in a chunk from which the moving frame counts the window instead of
    # the slot join: always, for some accounts of some chunks, never (the default at this size)
    frame_min=st.sampled_from(["0", "3", "64"]),
    # the whole minutes of a window summed from financial_fraud_minutes, or every row read
    minutes=st.sampled_from(["on", "off"]),
    # chunks up to this size take the generic plan: never, or these (the default)
    generic_max=st.sampled_from(["0", "1000"]),
)
def test_set_based_score_equals_row_by_row_reference(
    conn, rows, zone, chunk_size, window, frame_min, minutes, generic_max
):
    with conn.transaction(force_rollback=True):
        conn.execute("SELECT set_config('opsconsole.fraud_frame_min_rows', %s, true)", (frame_min,))
        conn.execute("SELECT set_config('opsconsole.fraud_minutes', %s, true)", (minutes,))
        conn.execute("SELECT set_config('opsconsole.chunk_generic_max_rows', %s, true)", (generic_max,))
        conn.execute(
            "UPDATE financial_pipeline_settings SET business_time_zone = %s, chunk_size = %s, "
            "fraud_window = %s::interval",
            (zone, chunk_size, window),
        )
        data = [
            (txid, acct, BASE + dt.timedelta(minutes=m, seconds=s), amount, ttype, None)
            for (txid, acct, m, s, amount), ttype in rows
        ]
        _insert(conn, data)
        conn.execute("SELECT * FROM process_financial_batch_detail(1000)")
        done = conn.execute(
            "SELECT s.staging_id, s.chunk_id, p.account_id, p.amount, p.transaction_timestamp, "
            "p.transaction_type, p.risk_score FROM financial_transactions_processed p "
            "JOIN financial_transactions_staging s ON s.staging_id = p.staging_id "
            "ORDER BY s.staging_id"
        ).fetchall()
        # every valid row was processed (one per account and transaction_id), so the comparison below
        # is not vacuous
        assert len(done) == len({(r[1], r[0]) for r in data if r[4] != "bogus"})
        # The reference: score each processed row with detect_fraud_indicators, in arrival order,
        # inserting it before scoring the next, on an empty processed table (a row's history is what
        # arrived before it, whatever the chunks).
        conn.execute("DELETE FROM financial_transactions_processed")
        for r in done:
            ref = conn.execute(
                "SELECT detect_fraud_indicators(%s, %s, %s, %s) AS s",
                (r["account_id"], r["amount"], r["transaction_timestamp"], r["transaction_type"]),
            ).fetchone()["s"]
            assert ref == r["risk_score"], (r, ref)
            conn.execute(
                "INSERT INTO financial_transactions_processed (transaction_id, account_id, "
                "transaction_timestamp, "
                "amount, transaction_type) VALUES (%s, %s, %s, %s, %s)",
                (
                    r["staging_id"],
                    r["account_id"],
                    r["transaction_timestamp"],
                    r["amount"],
                    r["transaction_type"],
                ),
            )


kind_strategy = st.sampled_from(
    ["ok", "ok", "ok", "ok", "missing", "bogus", "future", "too_big", "no_order", "bad_ref", "with_order"]
)


@PROPS
@given(
    rows=st.lists(st.tuples(row_strategy, kind_strategy), min_size=1, max_size=30),
    chunk_size=st.integers(1, 10),
)
def test_every_staged_row_ends_in_exactly_one_state(conn, rows, chunk_size):
    from psycopg.types.json import Jsonb

    far_future = dt.datetime.now(UTC) + dt.timedelta(days=2)
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE financial_pipeline_settings SET chunk_size = %s", (chunk_size,))
        add_orders(conn, {"order_id": 7, "customer_id": 1, "order_date": BASE, "partition_date": BASE})
        data, kinds = [], []
        for (txid, acct, m, s, amount), kind in rows:
            ts = far_future if kind == "future" else BASE + dt.timedelta(minutes=m, seconds=s)
            ref = {
                "no_order": {"order_id": 8},
                "bad_ref": {"order_id": "x"},
                "with_order": {"order_id": 7},
            }.get(kind)
            data.append(
                (
                    txid,
                    acct,  # (a staging row has an account: 0031)
                    ts,
                    None if kind == "missing" else Decimal("1e9") if kind == "too_big" else amount,
                    "bogus" if kind == "bogus" else "payment",
                    Jsonb(ref) if ref else None,
                )
            )
            kinds.append(kind)
        ids = _insert(conn, data)
        result = conn.execute("SELECT * FROM process_financial_batch_detail(1000)").fetchone()

        # Predict each row's fate from the data alone.
        code_of = {
            "missing": ("dead_letter", "missing_field"),
            "bogus": ("dead_letter", "unknown_type"),
            "too_big": ("dead_letter", "amount_out_of_bounds"),
            "future": ("failed", "future_timestamp"),
            "no_order": ("failed", "order_not_found"),
            "bad_ref": ("dead_letter", "bad_order_reference"),
        }
        expected, winner_payload = {}, {}
        for sid, row, kind in zip(ids, data, kinds, strict=True):
            if kind in code_of:
                expected[sid] = code_of[kind]
                continue
            payload = (row[1], row[2], row[3], row[4], row[5].obj if row[5] else None)
            key = (row[1], row[0])  # exactly-once per (account_id, transaction_id)
            if key not in winner_payload:
                winner_payload[key] = payload
                expected[sid] = ("processed", None)
            elif winner_payload[key] == payload:
                expected[sid] = ("duplicate", "duplicate")
            else:
                expected[sid] = ("dead_letter", "payload_conflict")

        got = conn.execute(
            "SELECT staging_id, processing_status, error_code, error_message, "
            "next_attempt_at > now() AS later "
            "FROM financial_transactions_staging ORDER BY staging_id"
        ).fetchall()
        assert {r["staging_id"]: (r["processing_status"], r["error_code"]) for r in got} == expected
        for r in got:
            assert (r["error_message"] is None) == (r["processing_status"] == "processed")
            if r["processing_status"] == "failed":
                assert r["later"]  # retry is due later, not now

        counts = conn.execute(
            "SELECT (SELECT count(*) FROM financial_transactions_processed) AS processed, "
            "(SELECT count(*) FROM financial_transaction_ledger) AS ledger"
        ).fetchone()
        assert counts["processed"] == counts["ledger"] == len(winner_payload) == result["processed_count"]
        # The rollups agree with staging, state by state.
        by_state = conn.execute(
            "SELECT processing_status, count(*) AS n FROM financial_transactions_staging GROUP BY 1"
        ).fetchall()
        roll = conn.execute(
            "SELECT sum(total_transactions) AS total, sum(pending_count) AS pending, "
            "sum(processed_count) AS processed, sum(failed_count) AS failed, "
            "sum(dead_letter_count) AS dead_letter, sum(duplicate_count) AS duplicate "
            "FROM financial_processing_rollup"
        ).fetchone()
        want = {
            "pending": 0,
            "processed": 0,
            "failed": 0,
            "dead_letter": 0,
            "duplicate": 0,
            "total": len(ids),
        }
        for r in by_state:
            want[r["processing_status"]] = r["n"]
        assert {k: int(v) for k, v in roll.items()} == want
        assert not [
            r for r in conn.execute("SELECT * FROM reconcile_financial_pipeline()") if r["mismatch_count"]
        ]


# A dense account's windows are counted by a moving frame, the others' by the slot join
# (financial_apply_chunk). Both must give every row the same history, in the cases that separate
# them: out-of-order arrivals (near in time, as a jittered feed, and anywhere in the hour), equal
# timestamps, history processed before (loaded without staging: staging_id NULL) and history that
# ARRIVED AFTER the staged rows yet was processed first (another worker's, higher staging_id).
dense_strategy = st.lists(
    st.tuples(
        st.integers(1, 3),  # account: few, so the accounts are dense
        st.integers(0, 3600),  # seconds after BASE, in arrival order ...
        st.sampled_from(["jitter", "anywhere", "tie"]),  # ... moved near, anywhere, or to a minute's start
        st.sampled_from([Decimal(10), Decimal("99.5"), Decimal(250), Decimal("-40.25")]),
    ),
    min_size=20,
    max_size=300,
)
history_strategy = st.lists(
    st.tuples(
        st.integers(1, 3),
        st.integers(-3600, 3600),
        st.sampled_from([None, "after"]),  # staging_id NULL, or one above every staged row's
        st.sampled_from([Decimal(5), Decimal(300)]),
    ),
    max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=dense_strategy,
    history=history_strategy,
    chunk_size=st.sampled_from([7, 50, 1000]),
    window=st.sampled_from(["1 hour", "10 minutes", "1 day"]),
)
def test_the_moving_frame_and_the_slot_join_give_the_same_scores(conn, rows, history, chunk_size, window):
    scores = {}
    # the frame for every account; the slot join for every one; each with the whole minutes of a
    # window summed from financial_fraud_minutes (the default), and the frame with every row read;
    # chunks of up to 1,000 rows planned generic (the default), and the slot join's planned custom
    runs = (("0", "on", "1000"), ("999999999", "on", "0"), ("0", "off", "1000"))
    for frame_min, minutes, generic_max in runs:
        with conn.transaction(force_rollback=True):
            conn.execute("SELECT set_config('opsconsole.fraud_frame_min_rows', %s, true)", (frame_min,))
            conn.execute("SELECT set_config('opsconsole.fraud_minutes', %s, true)", (minutes,))
            conn.execute("SELECT set_config('opsconsole.chunk_generic_max_rows', %s, true)", (generic_max,))
            conn.execute(
                "UPDATE financial_pipeline_settings SET chunk_size = %s, fraud_window = %s::interval",
                (chunk_size, window),
            )
            data = []
            for i, (account, second, move, amount) in enumerate(rows):
                at = {"jitter": second + (i * 7919) % 11 - 5, "anywhere": (i * 104729) % 3600}.get(
                    move, second - second % 60
                )
                data.append((i + 1, account, BASE + dt.timedelta(seconds=at), amount, "payment", None))
            ids = _insert(conn, data)
            for j, (account, second, sid, amount) in enumerate(history):
                conn.execute(
                    "INSERT INTO financial_transactions_processed (transaction_id, account_id, "
                    "transaction_timestamp, amount, transaction_type, staging_id) "
                    "VALUES (%s, %s, %s, %s, 'payment', %s)",
                    (
                        100_000 + j,
                        account,
                        BASE + dt.timedelta(seconds=second),
                        amount,
                        None if sid is None else max(ids) + 1 + j,
                    ),
                )
            conn.execute("SELECT financial_fraud_minutes_rebuild()")  # as the chunk keeps it
            conn.execute("SELECT * FROM process_financial_batch_detail(100000)")
            scores[frame_min, minutes] = conn.execute(
                "SELECT transaction_id, risk_score FROM financial_transactions_processed "
                "WHERE transaction_id < 100000 ORDER BY transaction_id"
            ).fetchall()
    assert len(scores["0", "on"]) == len(rows)  # every row processed: the comparison is not vacuous
    assert scores["0", "on"] == scores["999999999", "on"] == scores["0", "off"]

"""The operator's controls over the pipeline (sql/definitions/35_operator_controls.sql, issue 16):
retry exactly what the Backlog filter shows, park a dead letter and bring it back, "what if" before a
retry, and the fleet's pause switch; each action audited under its one name, operator and up."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from opsconsole.db.queries import dict_rows, query
from tools import sample

GROUPS_REFUSED = ("opsconsole_viewer", "opsconsole_support")


def shown(conn: psycopg.Connection, text: str | None) -> list[dict]:
    """The Backlog's rows for a filter, through the pane's own named query."""
    return dict_rows(conn, query("pipeline/backlog_rows"), {"filter": text, "limit": 500})


def status_counts(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT processing_status AS s, count(*) AS n FROM financial_transactions_staging GROUP BY 1"
    ).fetchall()
    return {r["s"]: r["n"] for r in rows}


def audits(conn: psycopg.Connection, action: str) -> list[dict]:
    return conn.execute(
        "SELECT arguments, result, reason FROM ops_audit_log WHERE action = %s ORDER BY audit_id", (action,)
    ).fetchall()


@pytest.mark.parametrize("text", ["order_not_found", "B-0316", "dead_letter", "bogus", "zzz-nothing"])
def test_retry_by_filter_requeues_exactly_the_retryable_rows_the_filter_shows(conn, text):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    conn.execute("SELECT park_dead_letters(p_filter => 'missing_field')")  # parked rows are never retried
    rows = shown(conn, text)
    retryable = {r["staging_id"] for r in rows if r["processing_status"] in ("failed", "dead_letter")}
    counted = conn.execute(
        "SELECT retry_scope_count(p_include_dead_letter => true, p_filter => %s) AS n", (text,)
    ).fetchone()["n"]
    assert counted == len(retryable)
    n = conn.execute(
        "SELECT retry_failed(p_include_dead_letter => true, p_filter => %s, p_reason => 'by filter') AS n",
        (text,),
    ).fetchone()["n"]
    assert n == counted
    requeued = conn.execute(
        "SELECT staging_id FROM financial_transactions_staging WHERE requeue_count > 0"
    ).fetchall()
    assert {r["staging_id"] for r in requeued} == retryable
    assert audits(conn, "retry_failed")[-1]["arguments"]["filter"] == text
    assert status_counts(conn).get("parked") == 2


def test_the_filter_is_a_value_never_sql(conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    before = status_counts(conn)
    for text in ("'; DELETE FROM financial_transactions_staging; --", "%", "%_%", "x' OR '1'='1"):
        assert conn.execute("SELECT retry_scope_count(p_filter => %s) AS n", (text,)).fetchone()["n"] == 0
        assert conn.execute("SELECT retry_failed(p_filter => %s) AS n", (text,)).fetchone()["n"] == 0
    assert status_counts(conn) == before


def test_a_parked_dead_letter_is_never_claimed_and_comes_back(conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    conn.execute("UPDATE financial_transactions_staging SET next_attempt_at = now() - interval '1 hour'")
    parked = conn.execute("SELECT park_dead_letters(p_filter => 'unknown_type', p_reason => 'vendor') AS n")
    assert parked.fetchone()["n"] == 3
    # parking takes dead letters only: the failed rows of the same filter stay
    assert conn.execute("SELECT park_dead_letters(p_filter => 'order_not_found') AS n").fetchone()["n"] == 0
    assert status_counts(conn)["parked"] == 3
    assert {r["processing_status"] for r in shown(conn, "unknown_type")} == {"parked"}

    conn.execute("SELECT * FROM process_financial_batch(1000)")
    assert status_counts(conn)["parked"] == 3  # every due row was claimed, none of the parked ones

    # the rollups keep agreeing with staging, state by state
    roll = conn.execute(
        "SELECT sum(dead_letter_count) AS dl, sum(failed_count) AS f FROM financial_processing_rollup"
    ).fetchone()
    counts = status_counts(conn)
    assert roll["dl"] == counts.get("dead_letter", 0)
    assert roll["f"] == counts.get("failed", 0)
    # reconcile knows the state: nothing to report
    bad = conn.execute(
        "SELECT check_name FROM reconcile_financial_pipeline() WHERE mismatch_count > 0"
    ).fetchall()
    assert bad == []
    # a retry never takes a parked row, even when asked for everything
    conn.execute("SELECT retry_failed(p_all => true, p_include_dead_letter => true)")
    assert status_counts(conn)["parked"] == 3
    # retention keeps parked rows (owed a decision)
    conn.execute("SELECT * FROM purge_financial_staging('0 seconds')")
    assert status_counts(conn)["parked"] == 3

    ids = [r["staging_id"] for r in shown(conn, "parked")][:2]
    back = conn.execute("SELECT unpark_dead_letters(p_staging_ids => %s) AS n", (ids,)).fetchone()["n"]
    assert back == 2
    assert status_counts(conn)["parked"] == 1
    assert [a["result"] for a in audits(conn, "park_dead_letters")] == [{"parked": 3}, {"parked": 0}]
    assert audits(conn, "park_dead_letters")[0]["reason"] == "vendor"
    assert [a["result"] for a in audits(conn, "unpark_dead_letters")] == [{"unparked": 2}]
    roll = conn.execute("SELECT sum(dead_letter_count) AS dl FROM financial_processing_rollup").fetchone()
    assert roll["dl"] == status_counts(conn).get("dead_letter", 0)


def test_park_and_unpark_need_a_selector(conn):
    for fn in ("park_dead_letters", "unpark_dead_letters"):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute(f"SELECT {fn}()")


def test_the_mover_behind_park_is_no_side_door(conn, login_as):
    """An operator may park, but not call the mover directly: it runs with the caller's rights, so it
    could neither move rows nor write an audit row without the action around it."""
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    before = status_counts(conn)
    op = login_as("opsconsole_operator")
    for to_status in ("parked", "dead_letter"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            op.execute("SELECT backlog_move(%s, NULL, 'unknown_type', 'forged')", (to_status,))
    assert status_counts(conn) == before
    assert audits(conn, "park_dead_letters") == [] and audits(conn, "unpark_dead_letters") == []
    with pytest.raises(psycopg.errors.InvalidParameterValue):  # only the two moves exist
        conn.execute("SELECT backlog_move('pending', NULL, 'unknown_type', NULL)")
    assert op.execute("SELECT park_dead_letters(p_filter => 'unknown_type') AS n").fetchone()["n"] == 3
    assert [a["result"] for a in audits(conn, "park_dead_letters")] == [{"parked": 3}]


def test_what_if_runs_the_chunks_validators_and_changes_nothing(conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    conn.execute("SELECT park_dead_letters(p_filter => 'missing_field')")

    def what_if(**kw) -> dict:
        rows = conn.execute(
            "SELECT error_code, rows FROM backlog_what_if(%(ids)s, %(filter)s)",
            {"ids": kw.get("ids"), "filter": kw.get("filter")},
        ).fetchall()
        return {r["error_code"]: r["rows"] for r in rows}

    assert what_if(filter="unknown_type") == {"unknown_type": 3}
    # the cause goes away: the type becomes known; the same rows would now pass
    conn.execute("INSERT INTO financial_transaction_types (transaction_type) VALUES ('bogus')")
    assert what_if(filter="unknown_type") == {None: 3}
    assert what_if(filter="parked") == {"missing_field": 2}  # parked rows can be asked about too
    everything = what_if(filter="b-03")
    assert everything == {None: 3, "order_not_found": 6, "missing_field": 2}
    one = shown(conn, "order_not_found")[0]["staging_id"]
    assert what_if(ids=[one]) == {"order_not_found": 1}
    assert what_if() == {}  # no selector: nothing

    before = conn.execute(
        "SELECT staging_id, processing_status, error_code, retry_count FROM financial_transactions_staging"
        " ORDER BY 1"
    ).fetchall()
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        assert what_if(filter="b-03") == everything
    after = conn.execute(
        "SELECT staging_id, processing_status, error_code, retry_count FROM financial_transactions_staging"
        " ORDER BY 1"
    ).fetchall()
    assert after == before


def test_pause_and_resume_are_the_operators_and_audited(conn, login_as):
    for group in GROUPS_REFUSED:
        c = login_as(group)
        for fn in ("pause_processing", "resume_processing", "park_dead_letters", "unpark_dead_letters"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(f"SELECT {fn}(NULL)")
        # nor by the helpers behind them, nor by writing the switch
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT fleet_set_paused(true, 'sneaky')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE pipeline_fleet_control SET paused = true")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT backlog_move('parked', NULL, 'x', 'sneaky')")
        # every group may read the switch (every console shows it)
        assert c.execute("SELECT paused FROM pipeline_fleet_control").fetchone()["paused"] is False
    assert audits(conn, "pause_processing") == []

    op = login_as("opsconsole_operator")
    assert op.execute("SELECT pause_processing('deploy') AS was").fetchone()["was"] is False
    state = conn.execute("SELECT paused, changed_by, reason FROM pipeline_fleet_control").fetchone()
    assert state["paused"] is True and state["changed_by"] == op.info.user and state["reason"] == "deploy"
    assert op.execute("SELECT resume_processing() AS was").fetchone()["was"] is True
    assert conn.execute("SELECT paused FROM pipeline_fleet_control").fetchone()["paused"] is False
    pause_rows = audits(conn, "pause_processing")
    assert [a["reason"] for a in pause_rows] == ["deploy"]
    assert [a["result"] for a in audits(conn, "resume_processing")] == [{"paused": False, "was_paused": True}]

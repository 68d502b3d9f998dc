"""A retry's blast radius and the retry itself come from one definition (retry_scope in
sql/definitions/30_pipeline.sql): for every selector, retry_scope_count() is what retry_failed() then
re-queues."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from tools import sample

SELECTORS = [
    {"p_all": True},
    {"p_all": True, "p_include_dead_letter": True},
    {"p_error_code": "order_not_found"},
    {"p_error_code": "unknown_type", "p_include_dead_letter": True},
    {"p_batch_id": "b-0316"},
    {"p_batch_id": "b-0316", "p_error_code": "order_not_found"},
    {"p_staging_ids": [10_101, 10_102, 10_201, 99_999]},
    {"p_staging_ids": [10_101, 10_102, 10_201], "p_include_dead_letter": True},
    {"p_batch_id": "no-such-batch"},
]


def call(conn: psycopg.Connection, fn: str, args: dict) -> int:
    named = ", ".join(f"{k} => %({k})s" for k in args)
    return conn.execute(f"SELECT {fn}({named}) AS n", args).fetchone()["n"]


@pytest.mark.parametrize("selector", SELECTORS, ids=lambda s: ",".join(f"{k}" for k in s))
def test_the_count_shown_is_what_the_retry_requeues(conn, selector):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    expected = conn.execute(
        "SELECT count(*) AS n FROM financial_transactions_staging WHERE processing_status = ANY(%s)"
        " AND (%s::bigint[] IS NULL OR staging_id = ANY(%s))"
        " AND (%s::text IS NULL OR batch_id = %s) AND (%s::text IS NULL OR error_code = %s)",
        (
            ["failed", "dead_letter"] if selector.get("p_include_dead_letter") else ["failed"],
            selector.get("p_staging_ids"),
            selector.get("p_staging_ids"),
            selector.get("p_batch_id"),
            selector.get("p_batch_id"),
            selector.get("p_error_code"),
            selector.get("p_error_code"),
        ),
    ).fetchone()["n"]
    counted = call(conn, "retry_scope_count", selector)
    assert counted == expected
    assert call(conn, "retry_failed", selector) == counted
    assert call(conn, "retry_scope_count", selector) == 0  # nothing left in that scope


def test_no_selector_counts_nothing_and_the_retry_refuses(conn):
    sample.seed_staging(conn, dt.datetime.now(dt.UTC))
    assert call(conn, "retry_scope_count", {}) == 0
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        call(conn, "retry_failed", {})


def test_the_operator_may_count_and_run_dq(conn):
    """dq_run is the operator's; counting a retry's scope is a read every group may run."""
    expected = {
        "retry_scope_count(bigint[], text, text, boolean, boolean, text)": (True, True),
        "dq_run(text, text, integer)": (True, False),
    }
    for fn, may in expected.items():
        row = conn.execute(
            "SELECT has_function_privilege('opsconsole_operator', %s, 'EXECUTE') AS op,"
            " has_function_privilege('opsconsole_viewer', %s, 'EXECUTE') AS viewer",
            (fn, fn),
        ).fetchone()
        assert (row["op"], row["viewer"]) == may, fn

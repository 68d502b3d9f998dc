"""`opsconsole pause | resume | park | unpark | what-if | retry --filter` and the worker obeying the
fleet's pause switch, against a real database."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import psycopg
from click.testing import CliRunner
from psycopg import conninfo, sql

from opsconsole.cli.main import main
from opsconsole.pipeline.worker import Worker
from tools import sample


def cli(dsn: str, *args: str):
    return CliRunner().invoke(main, ["--dsn", dsn, *args])


def statuses(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT processing_status, count(*) FROM financial_transactions_staging GROUP BY 1"
        ).fetchall()
    return dict(rows)


def seeded(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        sample.seed_staging(c, dt.datetime.now(dt.UTC))


def test_park_what_if_unpark_and_retry_by_filter_from_the_shell(db_dsn: str) -> None:
    seeded(db_dsn)
    r = cli(db_dsn, "park", "--filter", "unknown_type", "--reason", "vendor bug", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"parked": 3}
    assert statuses(db_dsn)["parked"] == 3

    r = cli(db_dsn, "what-if", "--filter", "b-03", "--json")
    assert r.exit_code == 0, r.output
    assert {x["outcome"]: x["rows"] for x in json.loads(r.output)} == {
        "unknown_type": 3,
        "order_not_found": 6,
        "missing_field": 2,
    }
    r = cli(db_dsn, "what-if", "--filter", "b-03")
    assert "what if: 0 of 11 would" in r.output

    r = cli(db_dsn, "unpark", "--filter", "parked")
    assert r.exit_code == 0 and "Brought back 3 parked row(s)" in r.output
    r = cli(db_dsn, "retry", "--dead-letter", "--filter", "unknown_type", "--json")
    assert json.loads(r.output) == {"requeued": 3}

    r = cli(db_dsn, "park")
    assert r.exit_code == 1
    assert "Say which rows to park: --ids or --filter." in r.output


def test_pause_resume_and_a_viewer_is_refused_in_one_sentence(db_dsn: str, admin_dsn: str) -> None:
    r = cli(db_dsn, "pause", "--reason", "db failover")
    assert r.exit_code == 0 and "paused for every worker" in r.output
    r = cli(db_dsn, "pause")
    assert "already paused" in r.output
    r = cli(db_dsn, "resume", "--json")
    assert json.loads(r.output) == {"paused": False, "was_paused": True}

    name = f"oc_test_viewer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        a.execute(sql.SQL("GRANT opsconsole_viewer TO {}").format(sql.Identifier(name)))
    try:
        viewer = conninfo.make_conninfo(db_dsn, user=name)
        r = cli(viewer, "pause")
        assert r.exit_code == 3
        assert "Traceback" not in r.output, r.output
        assert " ".join(r.output.split()).startswith("error: Your database role may not do this"), r.output
        with psycopg.connect(db_dsn) as c:
            assert c.execute("SELECT paused FROM pipeline_fleet_control").fetchone()[0] is False
            actions = [x[0] for x in c.execute("SELECT action FROM ops_audit_log ORDER BY audit_id")]
        assert actions.count("pause_processing") == 2 and actions.count("resume_processing") == 1
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as a:
            a.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            a.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_workers_claim_nothing_while_paused_and_resume_at_once(db_dsn: str) -> None:
    seeded(db_dsn)
    assert cli(db_dsn, "pause").exit_code == 0
    w = Worker(db_dsn, concurrency=2, batch_size=100, poll_s=30.0, maintenance_check_s=None)
    w.start()
    try:
        time.sleep(2.0)  # two loops, each free to claim the 5 due pending rows if it ignored the flag
        assert statuses(db_dsn)["pending"] == 5
        assert w.stats.chunks == 0
        started = time.monotonic()
        assert cli(db_dsn, "resume").exit_code == 0
        while statuses(db_dsn).get("pending", 0) and time.monotonic() - started < 10:
            time.sleep(0.1)
        # woken by resume's NOTIFY, well before the 30 s poll
        assert statuses(db_dsn).get("pending", 0) == 0
        assert time.monotonic() - started < 10
    finally:
        w.stop()
        assert w.join(timeout=10)


def test_a_worker_pauses_between_chunks(db_dsn: str) -> None:
    """Paused while running: the loop finishes what it holds and then stops claiming."""
    w = Worker(db_dsn, concurrency=1, batch_size=100, poll_s=0.2, maintenance_check_s=None)
    w.start()
    try:
        time.sleep(0.5)
        assert cli(db_dsn, "pause").exit_code == 0
        time.sleep(0.5)  # any chunk in flight has committed, the loop has seen the flag
        seeded(db_dsn)
        time.sleep(1.5)
        assert statuses(db_dsn)["pending"] == 5
    finally:
        w.stop()
        assert w.join(timeout=10)

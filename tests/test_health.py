"""The health snapshot and rules (ops/health.py) and `opsconsole check`, on a real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from opsconsole.cli import main
from opsconsole.db.queries import query
from opsconsole.ops import health
from opsconsole.ops import pipeline as ops
from opsconsole.pipeline.worker import Worker
from tests.health_helpers import fail_critical_dq_rule, stage

HEALTH_QUERIES = (
    "health/pipeline",
    "health/latency",
    "health/dq_latest",
    "health/dq_last_run",
    "health/workers",
)


def state_counts(conn) -> dict[str, int]:
    counts = dict.fromkeys(health.STAGING_STATES, 0)
    for status, n in conn.execute(
        "SELECT processing_status, count(*) FROM financial_transactions_staging GROUP BY 1"
    ).fetchall():
        counts[status] = n
    return counts


@pytest.fixture
def plain(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as c:
        yield c


def plan_relations(plan: dict) -> set[str]:
    found = {plan["Relation Name"]} if "Relation Name" in plan else set()
    for child in plan.get("Plans", ()):
        found |= plan_relations(child)
    return found


def test_snapshot_agrees_with_staging_and_never_reads_it(plain):
    stage(plain, 1, 300)
    stage(plain, 1001, 12, type_="no-such-type")  # not retryable: dead letters at once
    result = ops.process_batch(plain, 10_000)
    assert (result.processed, result.dead_letter) == (300, 12)
    stage(plain, 2001, 25, ago="20 minutes")  # still pending, waiting 20 minutes
    plain.execute("ANALYZE")

    snap = health.snapshot(plain)

    assert snap.staging_rows == state_counts(plain)
    assert snap.processed_total == 300 and snap.dead_letters == 12
    assert snap.latency_count == 300  # the histogram's +Inf bucket: every processed row
    assert [n for _, n in snap.latency_buckets] == sorted(n for _, n in snap.latency_buckets)
    assert 20 * 60 <= snap.oldest_pending_age_s < 21 * 60 + 5  # minute resolution, from the minute's start
    assert snap.sla_target_s == 1.0
    assert 0 <= snap.sla_breach_ratio <= 1
    # none of the snapshot's statements touches staging (or any partition of it), at any size
    with plain.transaction():
        for name in HEALTH_QUERIES:
            params = {"window_minutes": health.SLA_WINDOW_MINUTES} if name == "health/pipeline" else None
            (plan,) = plain.execute(f"EXPLAIN (FORMAT JSON) {query(name)}", params).fetchone()[0]
            relations = plan_relations(plan["Plan"])
            assert not [r for r in relations if r.startswith("financial_transactions_staging")], (
                name,
                relations,
            )


def test_sla_breach_ratio_is_the_monitors_definition(plain):
    stage(plain, 1, 40, ago="30 seconds")  # processed now: 30 s after ingestion, far over the 1 s SLA
    stage(plain, 101, 60)
    ops.process_batch(plain, 10_000)
    snap = health.snapshot(plain)
    breaches, done = plain.execute(
        "SELECT sum(sla_breaches), sum(total_transactions - pending_count) FROM financial_processing_rollup"
    ).fetchone()
    assert breaches >= 40 and snap.sla_breach_ratio == pytest.approx(float(breaches) / float(done))
    assert health.RULES_BY_NAME["sla_breach"].state_of(snap.sla_breach_ratio) == health.CRITICAL


def test_rule_states_follow_their_thresholds():
    age = health.RULES_BY_NAME["backlog_age"]
    assert [age.state_of(v) for v in (0, 300, 301, 900, 901)] == [
        "ok",
        "ok",
        "warning",
        "warning",
        "critical",
    ]
    workers = health.RULES_BY_NAME["no_worker"]
    assert [workers.state_of(v) for v in (0, 1, 3)] == ["critical", "ok", "ok"]
    assert health.RULES_BY_NAME["dq_critical"].state_of(None) == "ok"  # no critical rule has run
    assert health.worst(["ok", "warning", "unknown"]) == "unknown"
    assert health.worst(["unknown", "critical"]) == "critical"


# -- opsconsole check -------------------------------------------------------------------------------


def run_check(dsn: str, *args: str):
    return CliRunner().invoke(main, ["--dsn", dsn, "check", *args], catch_exceptions=False)


def test_check_is_ok_on_a_healthy_platform_and_critical_when_things_break(db_dsn, plain):
    stage(plain, 1, 200)
    worker = Worker(db_dsn, concurrency=1, batch_size=500, poll_s=0.2, name="health")
    worker.start()
    try:
        assert ops.wait_until_idle(plain, timeout_s=60)
        result = run_check(db_dsn)
        assert result.exit_code == 0, result.output
        assert result.output.startswith("OPSCONSOLE OK - 0 pending") and "1 worker(s)" in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert "backlog_age=0s;300;900" in result.output and "no_worker=1;;1:" in result.output

        # a critical DQ rule fails: critical, and the JSON says which rule
        fail_critical_dq_rule(plain)
        result = run_check(db_dsn)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("OPSCONSOLE CRITICAL - dq_critical 0 < 1")
        data = json.loads(run_check(db_dsn, "--json").output)
        assert data["state"] == "critical" and data["exit_code"] == 2
        assert {f["rule"]: f["state"] for f in data["findings"]}["dq_critical"] == "critical"
    finally:
        worker.stop()
        assert worker.join(10)


def test_check_warns_on_dead_letters_and_backlog_age(db_dsn, plain):
    plain.execute("UPDATE dq_rule_definitions SET is_active = false")
    with psycopg.connect(db_dsn, application_name="opsconsole:worker-idle"):  # a connected, idle worker
        stage(plain, 1, 3, type_="no-such-type")
        ops.process_batch(plain, 100)
        stage(plain, 11, 5, ago="6 minutes")
        result = run_check(db_dsn)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("OPSCONSOLE WARNING - ")
    assert "dead_letters 3 > 0" in result.output and "backlog_age " in result.output


def test_check_says_critical_when_the_database_is_unreachable_and_unknown_when_it_cannot_tell(empty_db_dsn):
    down = "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2"
    result = CliRunner().invoke(main, ["--dsn", down, "check"])
    assert result.exit_code == 2 and result.output.startswith("OPSCONSOLE CRITICAL - Cannot connect to")
    assert "Traceback" not in result.output

    result = CliRunner().invoke(main, ["--dsn", "host=x port", "check"])
    assert result.exit_code == 3 and result.output.startswith("OPSCONSOLE UNKNOWN - ")

    result = CliRunner().invoke(main, ["--dsn", empty_db_dsn, "check"])  # not migrated
    assert result.exit_code == 3, result.output
    assert "run `opsconsole db migrate` first" in result.output


def test_a_viewer_role_can_read_the_snapshot(db_dsn, admin_dsn, plain):
    """The exporter and `check` need no more than opsconsole_viewer (least privilege)."""
    name = f"oc_health_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as a:
        a.execute(f'CREATE ROLE "{name}" LOGIN')
    try:
        plain.execute(f'GRANT opsconsole_viewer TO "{name}"')
        fail_critical_dq_rule(plain)
        result = run_check(conninfo.make_conninfo(db_dsn, user=name))
        assert result.exit_code == 2, result.output  # no worker, the critical rule fails: read, not refused
        assert result.output.startswith("OPSCONSOLE CRITICAL - ") and "dq_critical 0 < 1" in result.output
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as a:
            a.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_a_maintenance_loop_alone_is_not_a_worker(db_dsn, plain):
    """A worker whose claim loops are gone but whose maintenance loop is still connected processes
    nothing: the no-worker alert must still fire (it counted every opsconsole:worker* session)."""
    with (
        psycopg.connect(db_dsn, application_name="opsconsole:worker-maintenance"),
        psycopg.connect(db_dsn, application_name="opsconsole:workers-report"),  # not a worker's loop
    ):
        snap = health.snapshot(plain)
        assert snap.workers == 0
        with psycopg.connect(db_dsn, application_name="opsconsole:worker-3"):
            assert health.snapshot(plain).workers == 1

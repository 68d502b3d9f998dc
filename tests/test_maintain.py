"""`opsconsole maintain` and the purge: partitions ahead, DEFAULT emptied in bounded batches, short
lock waits with retries, serialised runs, idempotence. All against the real database."""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest
from click.testing import CliRunner

from opsconsole.cli import main
from opsconsole.db.locks import LockBusy
from opsconsole.ops import maintenance
from opsconsole.ops import pipeline as ops
from opsconsole.pipeline.arrival import insert_counted
from tests.orders import add_orders


@pytest.fixture
def plain(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as c:
        yield c


def _partitions(conn, parent: str) -> set[str]:
    return {r[0] for r in conn.execute("SELECT partition_name::text FROM partition_bounds(%s)", (parent,))}


def _month(conn, months: int) -> str:
    return conn.execute(
        "SELECT to_char(date_trunc('month', now() AT TIME ZONE 'UTC') + %s * interval '1 month', 'YYYY_MM')",
        (months,),
    ).fetchone()[0]


def test_maintain_moves_default_rows_in_batches_creates_partitions_ahead_and_is_idempotent(plain):
    # A platform nobody maintained: next month's partitions never made, its orders and processed
    # transactions landed in DEFAULT; and nothing beyond next month exists either.
    nxt = _month(plain, 1)
    for parent in ("erp_orders", "financial_transactions_processed"):
        for p in sorted(_partitions(plain, parent)):
            if p.endswith("_default"):
                continue
            if p.rsplit("_", 2)[-2] + "_" + p.rsplit("_", 1)[-1] >= nxt:
                plain.execute(f"DROP TABLE {p}")
    first = plain.execute(
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date + 3"
    ).fetchone()[0]
    add_orders(plain, *({"order_id": g, "customer_id": 1, "order_date": first} for g in range(1, 25001)))
    keys_before = plain.execute("SELECT count(*) FROM erp_order_keys").fetchone()[0]
    assert plain.execute("SELECT count(*) FROM erp_orders_default").fetchone()[0] == 25000

    last_ddl = plain.execute("SELECT coalesce(max(evolution_id), 0) FROM schema_evolution_log").fetchone()[0]
    report = maintenance.maintain(plain, batch_rows=10_000)

    # the schema-evolution log sees partition maintenance, not new tables and constraints
    kinds = plain.execute(
        "SELECT DISTINCT evolution_type FROM schema_evolution_log WHERE evolution_id > %s", (last_ddl,)
    ).fetchall()
    assert kinds == [("PARTITION_MAINTENANCE",)], kinds
    assert f"erp_orders_{nxt}" in report["partitions_attached"]
    assert report["rows_moved_from_default"] == 25000
    assert report["steps"] >= 3  # 10k + 10k + 5k: no transaction moved more than a batch
    assert report["default_rows"]["erp_orders"] == 0
    # three months ahead for the monthly tables, a week of days for staging
    for parent in ("erp_orders", "financial_transactions_processed"):
        for k in (1, 2, 3):
            assert f"{parent}_{_month(plain, k)}" in _partitions(plain, parent), (parent, k)
    week = plain.execute(
        "SELECT 'financial_transactions_staging_' "
        "|| to_char((now() AT TIME ZONE 'UTC')::date + 7, 'YYYY_MM_DD')"
    ).fetchone()[0]
    assert week in _partitions(plain, "financial_transactions_staging")
    # the rows are where they belong, still visible, and nothing fired on the move
    assert (
        plain.execute(
            f"SELECT count(*) FROM erp_orders_{nxt} WHERE partition_date = %s", (first,)
        ).fetchone()[0]
        == 25000
    )
    assert plain.execute("SELECT count(*) FROM erp_order_keys").fetchone()[0] == keys_before
    assert "erp_orders" in report["analyzed"]
    audit = plain.execute(
        "SELECT status, result->>'rows_moved_from_default' FROM ops_audit_log WHERE action = 'maintain'"
    ).fetchall()
    assert audit == [("ok", "25000")]

    again = maintenance.maintain(plain)
    assert again["partitions_created"] == [] and again["partitions_attached"] == []
    assert again["rows_moved_from_default"] == 0 and again["steps"] == 0


def test_an_interrupted_move_is_resumed(plain):
    nxt = _month(plain, 1)
    plain.execute(f"DROP TABLE erp_orders_{nxt}")
    day = plain.execute(
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date + 1"
    ).fetchone()[0]
    add_orders(plain, *({"order_id": g, "customer_id": 1, "order_date": day} for g in range(1, 301)))
    # one step moves a batch, then the run "dies": the partition-to-be exists, not attached
    assert plain.execute("SELECT action FROM ensure_partitions_step('erp_orders', 100)").fetchone() == (
        "moved",
    )
    assert plain.execute(
        f"SELECT relispartition FROM pg_class WHERE relname = 'erp_orders_{nxt}'"
    ).fetchone() == (False,)
    report = maintenance.maintain(plain, batch_rows=100)
    assert f"erp_orders_{nxt}" in report["partitions_attached"]
    assert plain.execute(f"SELECT count(*) FROM erp_orders_{nxt}").fetchone()[0] == 300
    assert (
        plain.execute("SELECT count(*) FROM erp_orders WHERE partition_date = %s", (day,)).fetchone()[0]
        == 300
    )


def test_two_maintains_at_once_are_serialised(db_dsn, plain):
    nxt = _month(plain, 1)
    plain.execute(f"DROP TABLE erp_orders_{nxt}")
    day = plain.execute(
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date"
    ).fetchone()[0]
    add_orders(plain, *({"order_id": g, "customer_id": 1, "order_date": day} for g in range(1, 20001)))
    results, errors = [], []

    def run() -> None:
        try:
            with psycopg.connect(db_dsn, autocommit=True) as c:
                results.append(maintenance.maintain(c, batch_rows=2000))
        except Exception as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(r["rows_moved_from_default"] for r in results) == [0, 20000]
    assert sum(f"erp_orders_{nxt}" in r["partitions_attached"] for r in results) == 1
    assert (
        plain.execute("SELECT count(*) FROM erp_orders WHERE partition_date = %s", (day,)).fetchone()[0]
        == 20000
    )


def test_a_held_open_reader_does_not_make_inserts_wait_behind_purge(db_dsn, plain):
    plain.execute("SELECT ensure_staging_partitions(p_back => interval '10 days')")
    before = _partitions(plain, "financial_transactions_staging")
    insert = (
        "INSERT INTO financial_transactions_staging (transaction_id, account_id, transaction_timestamp,"
        " amount, transaction_type) VALUES (%s, 1, now(), 1, 'payment')"
    )
    with psycopg.connect(db_dsn) as reader:  # a reconcile, an idle console, pg_dump...
        reader.execute("SELECT count(*) FROM financial_transactions_staging").fetchone()
        outcome: list = []

        def purge() -> None:
            with psycopg.connect(db_dsn, autocommit=True) as c:
                try:
                    outcome.append(ops.purge(c, "2 days", attempts=4))
                except LockBusy as exc:
                    outcome.append(exc)

        t = threading.Thread(target=purge)
        t.start()
        waits, n = [], 0
        while t.is_alive():
            n += 1
            t0 = time.monotonic()
            insert_counted(plain, insert, (n,))
            waits.append(time.monotonic() - t0)
            time.sleep(0.05)
        t.join()
        reader.rollback()
    assert n > 10 and max(waits) < 2.0, max(waits)
    # gave up with one sentence, and changed nothing
    assert isinstance(outcome[0], LockBusy) and "changed nothing" in outcome[0].message
    assert _partitions(plain, "financial_transactions_staging") == before
    # with the reader gone it goes through
    done = ops.purge(plain, "2 days")
    assert len(done["partitions_dropped"]) >= 7


def test_two_purges_at_once_do_not_collide(db_dsn, plain):
    plain.execute("SELECT ensure_staging_partitions(p_back => interval '10 days')")
    outcomes, errors = [], []

    def purge() -> None:
        try:
            with psycopg.connect(db_dsn, autocommit=True) as c:
                outcomes.append(ops.purge(c, "2 days"))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=purge) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    dropped = [d for o in outcomes for d in o["partitions_dropped"]]
    assert len(dropped) == len(set(dropped)) >= 7  # each day dropped once, by one of them


def test_maintain_cli_json_and_permissions(db_dsn, plain):
    r = CliRunner().invoke(main, ["--dsn", db_dsn, "maintain", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert set(out["default_rows"]) == {
        "erp_orders",
        "financial_transactions_processed",
        "financial_transactions_staging",
    }
    r = CliRunner().invoke(main, ["--dsn", db_dsn, "maintain"])
    assert r.exit_code == 0 and "Rows left in DEFAULT" in r.output, r.output
    plain.execute("CREATE ROLE maint_op LOGIN IN ROLE opsconsole_operator")
    try:
        from psycopg import conninfo

        op = conninfo.make_conninfo(db_dsn, user="maint_op")
        r = CliRunner().invoke(main, ["--dsn", op, "maintain"])
        assert r.exit_code != 0 and "Traceback" not in r.output
        assert "may not run maintenance" in r.output, r.output
    finally:
        plain.execute("DROP ROLE maint_op")


def test_of_three_workers_exactly_one_runs_the_daily_maintenance(db_dsn, plain):
    from opsconsole.pipeline.worker import Worker

    workers = [Worker(db_dsn, poll_s=0.2, maintenance_check_s=0.3, name=f"w{i}") for i in range(3)]
    for w in workers:
        w.start()
    try:
        deadline = time.monotonic() + 90
        while not plain.execute("SELECT count(*) FROM ops_audit_log WHERE action = 'maintain'").fetchone()[0]:
            assert time.monotonic() < deadline, "no worker ran maintenance"
            time.sleep(0.2)
        time.sleep(3)  # every worker has checked again meanwhile: the run was not repeated
    finally:
        for w in workers:
            w.stop()
        assert all(w.join(30) for w in workers)
    runs = plain.execute("SELECT actor, status FROM ops_audit_log WHERE action = 'maintain'").fetchall()
    assert len(runs) == 1 and runs[0][1] == "ok", runs

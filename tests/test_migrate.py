"""The migration runner: ordered, once, checksummed, idempotent, and honest about edits."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

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
    with psycopg.connect(empty_db_dsn, autocommit=True) as conn:
        first = migrate.migrate(conn, tmp_path / "m")
        assert len(first) == len(migrate.discover(tmp_path / "m"))
        assert conn.execute("SELECT to_regclass('crm_customers') IS NOT NULL").fetchone()[0]
        migrate.reset(conn)
        assert conn.execute("SELECT to_regclass('crm_customers') IS NULL").fetchone()[0]
        again = migrate.migrate(conn, tmp_path / "m")
        assert len(again) == len(first)

"""Versioned migrations: sql/migrations/NNNN_name.sql, each applied once in its own transaction.

The ledger (opsconsole_migrations) records each file's sha256 so that `db status` can flag an applied
file that was edited afterwards. An advisory lock keeps two migrators from interleaving.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from opsconsole.db import citus
from opsconsole.errors import MigrationProblem

LOCK_KEY = 7_291_004_117  # pg_advisory_lock key for migrations
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def sql_dir() -> Path:
    """sql/ inside the installed package, or at the repository root in a checkout."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[1] / "sql", here.parents[3] / "sql"):
        if (candidate / "migrations").is_dir():
            return candidate
    raise MigrationProblem("The sql/migrations directory is missing from this installation.")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationState:
    migration: Migration
    applied_at: str | None
    edited: bool

    @property
    def state(self) -> str:
        if self.applied_at is None:
            return "pending"
        return "edited" if self.edited else "applied"


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir() / "migrations"
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = FILE_RE.match(path.name)
        if not match:
            raise MigrationProblem(f"{path.name} is not named NNNN_name.sql; rename it.")
        found.append(Migration(match.group(1), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationProblem("Two migration files share a version number; renumber one.")
    return found


LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS public.opsconsole_migrations (
    version     text PRIMARY KEY,
    name        text NOT NULL,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_by  text NOT NULL DEFAULT session_user,
    duration_ms numeric NOT NULL
)
"""


def _applied(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    exists = conn.execute("SELECT to_regclass('public.opsconsole_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        "SELECT version, checksum, applied_at::text FROM public.opsconsole_migrations"
    ).fetchall()
    return {v: (c, at) for v, c, at in rows}


def status(conn: psycopg.Connection, directory: Path | None = None) -> list[MigrationState]:
    applied = _applied(conn)
    states = []
    for m in discover(directory):
        if m.version in applied:
            checksum, at = applied[m.version]
            states.append(MigrationState(m, at, checksum != m.checksum))
        else:
            states.append(MigrationState(m, None, False))
    return states


def migrate(conn: psycopg.Connection, directory: Path | None = None) -> list[tuple[Migration, float]]:
    """Apply every pending migration in order; return what was applied with its duration in ms."""
    if not conn.autocommit:
        raise MigrationProblem("migrate() needs an autocommit connection; it manages transactions.")
    done: list[tuple[Migration, float]] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        conn.execute(LEDGER_DDL)
        applied = _applied(conn)
        for m in discover(directory):
            if m.version in applied:
                continue
            started = time.perf_counter()
            try:
                with conn.transaction():
                    conn.execute(m.text.encode())
                    elapsed = (time.perf_counter() - started) * 1000
                    conn.execute(
                        "INSERT INTO public.opsconsole_migrations (version, name, checksum, duration_ms)"
                        " VALUES (%s, %s, %s, %s)",
                        (m.version, m.name, m.checksum, round(elapsed, 1)),
                    )
            except psycopg.errors.InsufficientPrivilege as exc:
                raise MigrationProblem(
                    f"Migration {m.path.name} needs a privilege this role lacks "
                    f"({exc.diag.message_primary}); run migrations as the database owner or an admin."
                ) from None
            except psycopg.Error as exc:
                diag = exc.diag
                where = f" at {diag.context.splitlines()[0]}" if diag.context else ""
                raise MigrationProblem(
                    f"Migration {m.path.name} failed and was rolled back: "
                    f"{diag.message_primary or exc}{where}."
                ) from None
            done.append((m, elapsed))
        # With Citus: distribute what sql/citus/distribute.sql lists (a no-op elsewhere, and when done).
        citus.distribute(conn, sql_dir())
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return done


def reset(conn: psycopg.Connection) -> None:
    """Drop everything the migrations created in this database (schema public and event triggers)."""
    with conn.transaction():
        for (name,) in conn.execute(
            "SELECT evtname FROM pg_event_trigger WHERE evtname LIKE 'opsconsole%'"
        ).fetchall():
            conn.execute(f'DROP EVENT TRIGGER IF EXISTS "{name}"')
        if citus.installed(conn):
            citus.reset_platform(conn)  # Citus keeps views of its own in public
            return
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")
        conn.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")

"""Test fixtures: a real PostgreSQL for every test.

The server is OPSCONSOLE_TEST_DSN when set (a role that may CREATE DATABASE), else an embedded
cluster in a temp directory started once per session. All migrations and definitions are applied once to a
template database named after their checksum and the UTC day; each test gets a fresh clone (CREATE
DATABASE ... TEMPLATE).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import conninfo

from opsconsole.db import migrate
from opsconsole.db.embedded import EmbeddedServer

TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "128MB",
    "max_connections": "200",
}


def _migrations_digest() -> str:
    return migrate.digest()[:12]


@pytest.fixture(scope="session")
def admin_dsn() -> Iterator[str]:
    """A DSN to a maintenance database on the test server."""
    external = os.environ.get("OPSCONSOLE_TEST_DSN")
    if external:
        yield external
        return
    # one server per checkout: two checkouts testing at once must not stop or drop each other's
    checkout = hashlib.sha256(str(Path(__file__).resolve().parent).encode()).hexdigest()[:8]
    root = Path(
        os.environ.get("OPSCONSOLE_TEST_ROOT")
        or Path(tempfile.gettempdir()) / f"opsconsole-test-{os.getuid()}-{checkout}"
    )
    root.mkdir(exist_ok=True)
    server = EmbeddedServer(root / "pg", settings=TEST_SETTINGS)
    status = server.ensure_running()
    yield conninfo.make_conninfo(status.dsn, dbname="postgres")
    if not os.environ.get("OPSCONSOLE_TEST_KEEP_SERVER"):
        server.stop()


@pytest.fixture(scope="session")
def template_db(admin_dsn: str) -> str:
    """A database with every migration applied, made once per migrations digest and UTC day: the
    migrations create partitions relative to today, so a template kept by the test server from an
    earlier day (OPSCONSOLE_TEST_KEEP_SERVER, a reused temp directory) would lack today's days ahead
    and fail the partition tests."""
    day = dt.datetime.now(dt.UTC).strftime("%Y%m%d")
    name = f"opsconsole_tpl_{_migrations_digest()}_{day}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(4242)")
        try:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                for (old,) in conn.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'opsconsole_tpl_%%'"
                ).fetchall():
                    conn.execute(f'DROP DATABASE "{old}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{name}"')
                dsn = conninfo.make_conninfo(admin_dsn, dbname=name)
                try:
                    with psycopg.connect(dsn, autocommit=True) as tconn:
                        migrate.migrate(tconn)
                except BaseException:
                    # never leave a half-migrated template to be reused by the next run
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    raise
        finally:
            conn.execute("SELECT pg_advisory_unlock(4242)")
    return name


@pytest.fixture
def db_dsn(admin_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, fully migrated database for one test."""
    name = f"opsconsole_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}" STRATEGY FILE_COPY')
    yield conninfo.make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_db_dsn(admin_dsn: str) -> Iterator[str]:
    """A fresh database with no migrations applied (for the migration runner's own tests)."""
    name = f"opsconsole_e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield conninfo.make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def conn(db_dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the per-test database, rows as dicts."""
    from psycopg.rows import dict_row

    with psycopg.connect(db_dsn, autocommit=True, row_factory=dict_row) as c:
        yield c


@pytest.fixture
def own_server(tmp_path_factory) -> Iterator[Callable[[str], EmbeddedServer]]:
    """Start private embedded servers (for tests that restart, crash or restore into a server):
    `own_server("name")` returns a running EmbeddedServer in a temp directory, stopped afterwards."""
    if os.environ.get("OPSCONSOLE_TEST_DSN"):
        pytest.skip("starts its own embedded server")
    started: list[EmbeddedServer] = []

    def start(name: str) -> EmbeddedServer:
        root = Path(tempfile.mkdtemp(prefix=f"oc-{name}-", dir="/tmp"))
        server = EmbeddedServer(root / "pg", settings={**TEST_SETTINGS, "max_connections": "50"})
        started.append(server)
        server.ensure_running()
        return server

    yield start
    for server in started:
        server.destroy()
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)

"""The embedded server: starts on demand, is reused while up, stops, and tells how to reach it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import psycopg
import pytest

from opsconsole.db.embedded import DATABASE, EmbeddedServer

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("OPSCONSOLE_TEST_DSN")), reason="uses the embedded server's own binaries"
)


def test_lifecycle_and_reuse() -> None:
    with tempfile.TemporaryDirectory(prefix="oc-emb-", dir="/tmp") as tmp:
        server = EmbeddedServer(Path(tmp) / "pg", settings={"fsync": "off"})
        try:
            assert not server.status().initialized
            first = server.ensure_running()
            assert first.running and first.initialized and first.version
            with psycopg.connect(first.dsn) as conn:
                assert conn.execute("SELECT current_database()").fetchone()[0] == DATABASE
                conn.execute("CREATE TABLE marker (id int)")
                conn.commit()
            again = EmbeddedServer(Path(tmp) / "pg").ensure_running()
            assert again.pid == first.pid  # reused, not restarted
            assert first.dsn in first.psql_command and first.psql_command.split()[0].endswith("psql")
            assert server.stop() is True
            assert not server.status().running
            assert server.stop() is False
            restarted = server.ensure_running()
            with psycopg.connect(restarted.dsn) as conn:  # data survived the restart
                assert conn.execute("SELECT to_regclass('marker') IS NOT NULL").fetchone()[0]
        finally:
            server.stop()

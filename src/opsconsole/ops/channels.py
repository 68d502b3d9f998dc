"""The NOTIFY channels the platform's SQL sends on, named once for Python (the SQL spells the same
names in its pg_notify calls; tests/ops/test_channels.py checks that the two agree)."""

from __future__ import annotations

import psycopg
from psycopg import sql

PIPELINE = "opsconsole_pipeline"  # a batch committed
STAGING = "opsconsole_staging"  # new staging rows are waiting
DQ = "opsconsole_dq"  # a DQ run finished or a severe rule failed (JSON payload)
CATALOG = "opsconsole_catalog"  # the data catalog was refreshed
C360 = "opsconsole_c360"  # customer 360 rows were refreshed

ALL = (PIPELINE, STAGING, DQ, CATALOG, C360)


def listen(conn: psycopg.Connection, *names: str) -> None:
    """LISTEN on these channels (default: all of them) on an autocommit connection."""
    for name in names or ALL:
        if name not in ALL:
            raise ValueError(f"unknown channel {name!r}")
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))

"""Fixtures of the Citus tests: a real coordinator (OPSCONSOLE_CITUS_DSN), else every test is skipped.

.ci/run builds Citus with ../shared/citus/build.sh and starts a coordinator with two workers with
cluster.sh; by hand:

    sudo ../shared/citus/build.sh && sudo ../shared/citus/cluster.sh start /tmp/citus-cluster
    OPSCONSOLE_CITUS_DSN=postgresql://postgres@127.0.0.1:9700/postgres \\
    OPSCONSOLE_CITUS_CLUSTER_DIR=/tmp/citus-cluster make test-citus

The platform lives in the coordinator's database named by the DSN (cluster.sh creates the citus
extension in `postgres` on every node); each test starts from `db reset` there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from opsconsole.db import citus, migrate

CITUS_DSN = os.environ.get("OPSCONSOLE_CITUS_DSN", "")


def pytest_collection_modifyitems(config, items):
    if CITUS_DSN:
        return
    skip = pytest.mark.skip(
        reason="OPSCONSOLE_CITUS_DSN is not set: these tests need a Citus coordinator "
        "(.ci/run starts one with ../shared/citus/cluster.sh when Citus can be built)"
    )
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


@pytest.fixture
def citus_dsn() -> Iterator[str]:
    """The coordinator's database, reset and migrated (so distributed) for this test."""
    try:
        with psycopg.connect(CITUS_DSN, autocommit=True, connect_timeout=10) as conn:
            if not citus.installed(conn):
                pytest.fail(f"OPSCONSOLE_CITUS_DSN ({CITUS_DSN}) has no citus extension")
            migrate.reset(conn)
            migrate.migrate(conn)
    except psycopg.OperationalError as exc:
        pytest.fail(f"the Citus coordinator at OPSCONSOLE_CITUS_DSN does not answer: {exc}")
    yield CITUS_DSN

"""P10: the pipeline's throughput on a Citus coordinator against one server, in the same run.

Runs only when OPSCONSOLE_CITUS_DSN names the coordinator of a Citus cluster (.ci/run and
docs/scaling.md say how to start the local 3-node one); without it P10 is not collected. The same
staged rows are drained by one worker loop, median of 3, in three places: the platform in the
coordinator's database (reset and migrated, so distributed as sql/citus/distribute.sql says), the
platform in a plain database on the same PostgreSQL 15 server (no citus extension: one server, same
binaries), and the harness's own server (for scale). The ratio is Citus against the plain database.

Every drain runs with jit = off: with PostgreSQL's default (on, where the server has LLVM, as
Debian's 15 has) the chunk's statements cross jit_above_cost and are compiled on every call, which
made both PostgreSQL 15 databases about 12x slower than with it off (docs/scaling.md).

Read the ratio for what it is: the three nodes share two cores with everything else, and each chunk
is a distributed transaction (staging on the coordinator; the ledger and processed rows on the
workers, two-phase commit), so it measures what Citus costs the pipeline on one machine, not
scale-out.
"""

from __future__ import annotations

import os
import uuid

import psycopg
from psycopg import conninfo

from bench.harness import BenchDB, Result, median_of, timed
from bench.p_pipeline import _drain, _load_staging, staging_rows
from opsconsole.db import migrate

CITUS_DSN = os.environ.get("OPSCONSOLE_CITUS_DSN", "")


class Platform:
    """The platform in one database: `create` makes a plain database on the coordinator's server;
    otherwise the coordinator's own database is reset and migrated. Dropped (or reset) afterwards."""

    def __init__(self, dsn: str, create: bool):
        self.create = create
        self.name = f"opsconsole_bench_{uuid.uuid4().hex[:8]}" if create else None
        self.admin = dsn
        self.dsn = conninfo.make_conninfo(dsn, dbname=self.name) if create else dsn

    def __enter__(self) -> Platform:
        if self.create:
            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            if not self.create:
                migrate.reset(conn)
            migrate.migrate(conn)
        return self

    def __exit__(self, *exc) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            if self.create:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            else:
                migrate.reset(conn)

    def connect(self, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn, autocommit=True, **kwargs)


def p10_citus_pipeline(db: BenchDB, quick: bool) -> Result:
    n = 10_000 if quick else 100_000
    chunk = 5_000 if quick else 10_000
    rows = staging_rows(n)

    def drain_rate(target) -> float:
        _load_staging(target, rows)
        no_jit = conninfo.make_conninfo(target.dsn, options="-c jit=off")
        return n / timed(lambda: _drain(no_jit, chunk))

    harness_server = median_of(lambda: drain_rate(db))
    with Platform(CITUS_DSN, create=True) as plain:
        one_server = median_of(lambda: drain_rate(plain))
    with Platform(CITUS_DSN, create=False) as cluster:
        with cluster.connect() as conn:
            nodes = conn.execute("SELECT count(*) FROM pg_dist_node WHERE isactive").fetchone()[0]
            version = conn.execute("SHOW server_version_num").fetchone()[0]
        on_citus = median_of(lambda: drain_rate(cluster))
    return Result(
        id="P10",
        what=f"pipeline, one worker, {n:,} rows: a Citus coordinator ({nodes} nodes) vs a plain database "
        "on the same PostgreSQL server",
        value=on_citus,
        baseline=one_server,
        ratio=on_citus / one_server,
        target="measured: Citus's overhead on 2 shared cores, not scale-out",
        ok=True,
        unit="rows/s",
        details={
            "rows": n,
            "chunk": chunk,
            "nodes": nodes,
            "server_version_num": version,
            "harness_server_rows_per_s": round(harness_server),
        },
    )


BENCHMARKS = [p10_citus_pipeline] if CITUS_DSN else []

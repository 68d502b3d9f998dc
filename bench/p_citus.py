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

On the same cluster, P10's details also hold `order_keys`: where erp_order_keys should live, measured
rather than argued (docs/scaling.md, "Order keys"). The platform's reference table against a scratch
copy distributed by order_id: claiming keys (the writers of orders, 1,000 per call and one per call)
and the pipeline's order check of a chunk's references (validate's per-row probe, and one `= ANY`
lookup, the only form a table distributed by order_id allows from the coordinator).
"""

from __future__ import annotations

import datetime as dt
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
        with cluster.connect() as conn:
            order_keys = _order_keys(conn, quick)
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
            "order_keys": order_keys,
        },
    )


# The pipeline's order check, as financial_validate runs it: a per-row primary-key probe.
PROBE = (
    "SELECT count(k.order_id) FROM unnest(%s::bigint[]) o(order_id) "
    "LEFT JOIN LATERAL (SELECT k.order_id FROM {keys} k WHERE k.order_id = o.order_id OFFSET 0) k ON true"
)
TODAY = dt.date(2025, 1, 6)
LOOKUP = "SELECT count(*) FROM {keys} WHERE order_id = ANY(%s::bigint[])"


def _ms(conn: psycopg.Connection, query: str, ids: list[int]) -> float:
    return round(median_of(lambda: timed(lambda: conn.execute(query, (ids,)))) * 1000, 2)


def _order_keys(conn: psycopg.Connection, quick: bool) -> dict:
    """erp_order_keys as the reference table it is against a copy distributed by order_id (ms, median
    of 3 each): claiming keys and checking a chunk's order references (a third of 10,000 rows)."""
    batches, singles, refs = (5, 50, 3_000) if quick else (20, 200, 3_000)
    conn.execute("DROP TABLE IF EXISTS bench_order_keys_by_id")
    conn.execute(
        "CREATE TABLE bench_order_keys_by_id (order_id bigint PRIMARY KEY, partition_date date NOT NULL)"
    )
    conn.execute("SELECT create_distributed_table('bench_order_keys_by_id', 'order_id')")
    next_id = [50_000_000]

    def ids(n: int) -> list[int]:
        next_id[0] += n
        return list(range(next_id[0] - n, next_id[0]))

    claim = {  # the same rows either way: ids and their partition dates
        "reference": "SELECT erp_order_keys_add(%s::bigint[], %s::date[])",
        "by_order_id": "INSERT INTO bench_order_keys_by_id SELECT * FROM unnest(%s::bigint[], %s::date[])",
    }
    keys = {"reference": "erp_order_keys", "by_order_id": "bench_order_keys_by_id"}
    out: dict = {}
    try:
        for kind in ("reference", "by_order_id"):
            first = next_id[0]

            def claim_batches(kind=kind) -> float:
                return timed(
                    lambda: [
                        conn.execute(claim[kind], (b, [TODAY] * len(b)))
                        for b in (ids(1000) for _ in range(batches))
                    ]
                )

            def claim_singles(kind=kind) -> float:
                return timed(
                    lambda: [
                        conn.execute(claim[kind], (b, [TODAY] * len(b)))
                        for b in (ids(1) for _ in range(singles))
                    ]
                )

            out[kind] = {
                "claim_1000_per_call_ms": round(median_of(claim_batches) * 1000 / batches, 2),
                "claim_1_per_call_ms": round(median_of(claim_singles) * 1000 / singles, 2),
            }
            # the references of one chunk: two in three name an order of this table, as late data does
            known = list(range(first, next_id[0], 7))[: refs * 2 // 3]
            chunk_refs = known + list(range(90_000_000, 90_000_000 + refs - len(known)))
            q_probe, q_lookup = PROBE.format(keys=keys[kind]), LOOKUP.format(keys=keys[kind])
            try:
                found = conn.execute(q_probe, (chunk_refs,)).fetchone()[0]
                out[kind]["check_probe_ms"] = _ms(conn, q_probe, chunk_refs)
                assert found == len(known), (kind, found)
            except psycopg.Error as exc:
                out[kind]["check_probe_ms"] = None
                out[kind]["check_probe_error"] = (exc.diag.message_primary or str(exc)).strip()
            assert conn.execute(q_lookup, (chunk_refs,)).fetchone()[0] == len(known), kind
            out[kind]["check_lookup_ms"] = _ms(conn, q_lookup, chunk_refs)
        out["chunk_references"] = len(chunk_refs)
    finally:
        conn.execute("DROP TABLE IF EXISTS bench_order_keys_by_id")
    return out


BENCHMARKS = [p10_citus_pipeline] if CITUS_DSN else []

"""Citus: distribute the platform when the database has the extension, and say where shards live.

On plain PostgreSQL both functions do nothing: `distribute` returns an empty list and `layout` an
empty one, so callers print nothing. Which table goes where, and why, is sql/citus/distribute.sql
and docs/scaling.md.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from opsconsole.errors import MigrationProblem

DISTRIBUTE_FILE = Path("citus") / "distribute.sql"

# One row per table in Citus's metadata: how it is distributed and on which nodes its shards are.
LAYOUT_QUERY = """
WITH placed AS (
    SELECT s.logicalrelid, n.nodename || ':' || n.nodeport AS node, count(*) AS shards
    FROM pg_catalog.pg_dist_shard s
    JOIN pg_catalog.pg_dist_placement pl ON pl.shardid = s.shardid
    JOIN pg_catalog.pg_dist_node n ON n.groupid = pl.groupid
    GROUP BY 1, 2
)
SELECT p.logicalrelid::regclass::text AS table_name,
       CASE p.partmethod WHEN 'h' THEN 'distributed' WHEN 'n' THEN 'reference' ELSE p.partmethod::text END
           AS kind,
       CASE WHEN p.partmethod = 'h' THEN pg_catalog.column_to_column_name(p.logicalrelid, p.partkey) END
           AS distributed_by,
       p.colocationid AS colocation_id,
       (SELECT count(*) FROM pg_catalog.pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid) AS shards,
       (SELECT string_agg(format('%s (%s)', pc.node, pc.shards), ', ' ORDER BY pc.node)
        FROM placed pc WHERE pc.logicalrelid = p.logicalrelid) AS placements
FROM pg_catalog.pg_dist_partition p
WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = p.logicalrelid)
ORDER BY p.partmethod, p.colocationid, p.logicalrelid::regclass::text
"""


def installed(conn: psycopg.Connection) -> bool:
    """True when the citus extension is installed in this database."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus')"
    ).fetchone()
    return bool(row and row[0])


# The platform's group roles (created by the baseline migration when missing). Roles are cluster-wide
# objects: Citus copies a role to the workers when it is created in a database that has the extension,
# or when a node is added. A role that already existed on the coordinator's server (made by a plain
# database there, or by a DBA before the nodes were added) never reached the workers, and the first
# GRANT to it that Citus propagates fails there ("role ... does not exist ... on 127.0.0.1:9702").
PLATFORM_ROLES = ("opsconsole_viewer", "opsconsole_support", "opsconsole_operator", "opsconsole_admin")

# Run on each worker: create the role when missing (not propagated further: the worker only makes
# its own copy), then the memberships among platform roles the coordinator has.
_WORKER_ROLE = """DO $role$
BEGIN
    PERFORM pg_catalog.set_config('citus.enable_create_role_propagation', 'off', true);
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {name}) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', {name});
    END IF;
END;
$role$"""
_WORKER_MEMBER = """DO $member$
BEGIN
    PERFORM pg_catalog.set_config('citus.enable_create_role_propagation', 'off', true);
    IF NOT pg_catalog.pg_has_role({member}, {group}, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', {group}, {member});
    END IF;
END;
$member$"""


def sync_platform_roles(conn: psycopg.Connection) -> None:
    """Give every worker the platform roles (and their memberships) the coordinator has, before the
    migrations, whose GRANTs Citus propagates. Idempotent; nothing to do without Citus or roles."""
    if not installed(conn):
        return
    have = [
        r[0]
        for r in conn.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY (%s) ORDER BY rolname",
            (list(PLATFORM_ROLES),),
        )
    ]
    members = conn.execute(
        "SELECT g.rolname, m.rolname FROM pg_catalog.pg_auth_members a"
        " JOIN pg_catalog.pg_roles g ON g.oid = a.roleid JOIN pg_catalog.pg_roles m ON m.oid = a.member"
        " WHERE g.rolname = ANY (%(r)s) AND m.rolname = ANY (%(r)s) ORDER BY 1, 2",
        {"r": have},
    ).fetchall()
    commands = [_WORKER_ROLE.format(name=_literal(n)) for n in have] + [
        _WORKER_MEMBER.format(group=_literal(g), member=_literal(m)) for g, m in members
    ]
    for command in commands:
        failed = conn.execute(
            "SELECT nodename || ':' || nodeport, result FROM pg_catalog.run_command_on_workers(%s)"
            " WHERE NOT success",
            (command,),
        ).fetchall()
        if failed:
            node, result = failed[0]
            raise MigrationProblem(f"Could not create the platform roles on Citus worker {node}: {result}")


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def distribute(conn: psycopg.Connection, sql_root: Path) -> list[str]:
    """Apply sql/citus/distribute.sql (one transaction); return the tables it added to Citus."""
    if not installed(conn):
        return []
    before = _in_metadata(conn)
    with conn.transaction():
        conn.execute((sql_root / DISTRIBUTE_FILE).read_bytes())
    return sorted(_in_metadata(conn) - before)


def allow_shard_triggers(conn: psycopg.Connection) -> None:
    """On Citus, let this transaction (re)create the triggers of distributed tables; Citus runs them
    per shard, and the platform's write only co-located shards (docs/scaling.md, "Triggers")."""
    if installed(conn):
        conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")


def layout(conn: psycopg.Connection) -> list[dict]:
    """Each table in Citus's metadata (partitions folded into their parent), or [] without citus."""
    if not installed(conn):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(LAYOUT_QUERY).fetchall()


def _in_metadata(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT logicalrelid::regclass::text FROM pg_catalog.pg_dist_partition").fetchall()
    return {r[0] for r in rows}


# `db reset` on a Citus coordinator: the extension keeps views of its own in schema public
# (citus_tables, citus_schemas), so DROP SCHEMA public CASCADE is refused. Drop what the platform
# created instead: every relation, routine and type in public that no extension owns (distributed
# tables take their shards with them), and the extensions the migrations installed there.
RESET_PLATFORM = """
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT c.oid, c.relkind FROM pg_catalog.pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND NOT c.relispartition
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                            AND (d.deptype = 'e' OR (d.deptype IN ('a', 'i') AND d.refobjid <> c.oid)))
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class WHERE oid = r.oid);  -- gone by CASCADE
        EXECUTE format('DROP %s %s CASCADE',
                       CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                       r.oid::regclass);
    END LOOP;
    FOR r IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE oid = r.oid);
        EXECUTE format('DROP ROUTINE %s CASCADE', r.oid::regprocedure);
    END LOOP;
    FOR r IN
        SELECT t.oid FROM pg_catalog.pg_type t
        WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('c', 'd', 'e')
          AND (t.typrelid = 0 OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                                         WHERE c.oid = t.typrelid AND c.relkind = 'c'))
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                          WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
    LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type WHERE oid = r.oid);
        EXECUTE format('DROP TYPE %s CASCADE', r.oid::regtype);
    END LOOP;
    FOR r IN
        SELECT e.extname FROM pg_catalog.pg_extension e
        WHERE e.extnamespace = 'public'::regnamespace AND e.extname <> 'citus'
    LOOP
        EXECUTE format('DROP EXTENSION %I CASCADE', r.extname);
    END LOOP;
END;
$$
"""


def reset_platform(conn: psycopg.Connection) -> None:
    """Drop the platform's objects from public, keeping Citus's own (the caller holds the transaction)."""
    conn.execute(RESET_PLATFORM)
